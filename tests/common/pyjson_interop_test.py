"""Interop: src/common/pyjson (via bin/fixtures/pyjson_tool) against Debian
Python's json module, the reference the Vast protocol signs with.

Random documents (seeded, so failures reproduce) are generated in Python,
rendered as input text in several styles, then both sides do
json.dumps(json.loads(text), ...) and the bytes must be identical.  Invalid
documents (random mutations and a fixed list) must be rejected exactly where
Python rejects them.  Deliberate differences, skipped here and tested in
tests/common/test_pyjson.c: nesting deeper than PYJ_MAX_DEPTH (64) is
rejected (Python allows ~1000); integers over 4300 digits are rejected as by
Python 3.11's int_max_str_digits (a ValueError there, not a JSON error).

Environment: SGPU_BIN (dir holding fixtures/pyjson_tool), SGPU_INTEROP_SEED.
"""
import json
import math
import os
import random
import struct
import subprocess
import sys
import unittest

BIN = os.environ.get("SGPU_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "bin")
TOOL = os.path.join(BIN, "fixtures", "pyjson_tool")
SEED = int(os.environ.get("SGPU_INTEROP_SEED", "20261127"))
MAX_DEPTH = 64
REJECTED = object()  # reference outcome: Python rejects the document
SKIP = object()      # reference outcome: a deliberate difference, not compared


def run_batch(docs, *args):
    """Feed byte strings to pyjson_tool --batch; return list of (ok, bytes)."""
    inp = b"".join(b"%d\n" % len(d) + d for d in docs)
    p = subprocess.run([TOOL, "--batch", *args], input=inp, stdout=subprocess.PIPE,
                       check=True, timeout=120)
    out, res, i = p.stdout, [], 0
    while i < len(out):
        nl = out.index(b"\n", i)
        tag, n = out[i:nl].split(b" ")
        n = int(n)
        res.append((tag == b"ok", out[nl + 1:nl + 1 + n]))
        i = nl + 1 + n
    assert len(res) == len(docs), (len(res), len(docs))
    return res


def py_loads(data):
    """Reference parse of raw request bytes, like aiohttp request.json()."""
    return json.loads(data.decode("utf-8"))


def depth(v):
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 0


class Gen:
    def __init__(self, rnd):
        self.r = rnd

    def char(self):
        r = self.r
        k = r.random()
        if k < 0.55:
            return chr(r.randint(0x20, 0x7E))
        if k < 0.65:
            return chr(r.randint(0, 0x1F))
        if k < 0.70:
            return r.choice('"\\/\x7f')
        if k < 0.82:
            return chr(r.randint(0x80, 0xD7FF))
        if k < 0.87:
            return chr(r.randint(0xE000, 0xFFFF))
        if k < 0.95:
            return chr(r.randint(0x10000, 0x10FFFF))
        return chr(r.randint(0xD800, 0xDFFF))  # lone surrogate (only via \u escapes)

    def string(self):
        return "".join(self.char() for _ in range(self.r.choice([0, 1, 2, 5, 12, 30])))

    def float_(self):
        r = self.r
        k = r.random()
        if k < 0.5:
            f = struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0]
        elif k < 0.6:
            f = r.choice([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, 1e16, 1e-5,
                          1e-4, 0.1, 256.0, 1e15, 9999999999999998.0, 1.7976931348623157e308])
        elif k < 0.8:
            f = round(r.uniform(-1e6, 1e6), r.randint(0, 8))
        else:
            f = float("%de%d" % (r.randint(-99999, 99999), r.randint(-330, 310)))
        return f

    def int_(self):
        r = self.r
        k = r.random()
        if k < 0.6:
            return r.randint(-1000, 1000)
        if k < 0.9:
            return r.randint(-2**64, 2**64)
        return int("".join(r.choice("0123456789") for _ in range(r.randint(20, 200)))) * \
            r.choice([1, -1])

    def value(self, d=0):
        r = self.r
        k = r.random()
        if d < 6 and k < 0.25:
            return [self.value(d + 1) for _ in range(r.randint(0, 6))]
        if d < 6 and k < 0.5:
            return {self.string(): self.value(d + 1) for _ in range(r.randint(0, 6))}
        k = r.random()
        if k < 0.25:
            return self.string()
        if k < 0.5:
            return self.float_()
        if k < 0.75:
            return self.int_()
        return r.choice([None, True, False])

    def render(self, v):
        """Input text for v, in a random but valid style, as UTF-8 bytes."""
        r = self.r
        kw = dict(ensure_ascii=r.random() < 0.5,
                  indent=r.choice([None, None, 0, 2, 4, "\t"]),
                  sort_keys=r.random() < 0.3)
        if kw["indent"] is None and r.random() < 0.5:
            kw["separators"] = (",", ":")
        try:
            return json.dumps(v, **kw).encode("utf-8")
        except UnicodeEncodeError:  # lone surrogate with ensure_ascii=False
            kw["ensure_ascii"] = True
            return json.dumps(v, **kw).encode("utf-8")


MUT_TOKENS = [b'"', b"\\", b",", b":", b"[", b"]", b"{", b"}", b"0", b"-", b".", b"e", b"E",
              b"+", b"N", b"I", b" ", b"\x00", b"\x1f", b"\x7f", b"\xff", b"\xc3", b"\xed\xa0\x80",
              b"u", b"'", b"\n", b"\t", b"\x0b", b"\\u", b"\\ud800", b"\\udc00", b"1", b"00",
              b"NaN", b"true", b"null", b"\xef\xbb\xbf", b"\\x", b"/"]


def mutate(r, data):
    data = bytearray(data)
    for _ in range(r.randint(1, 3)):
        k = r.random()
        pos = r.randint(0, len(data))
        if k < 0.4 and data:
            del data[min(pos, len(data) - 1)]
        elif k < 0.8:
            data[pos:pos] = r.choice(MUT_TOKENS)
        elif data:
            data[min(pos, len(data) - 1)] = r.randint(0, 255)
    return bytes(data)


class PyjsonInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(TOOL, os.X_OK):
            raise unittest.SkipTest("missing " + TOOL + " (run make)")

    def compare(self, docs, label, n_expect_valid=None):
        """Both sides parse+dump every doc in 4 styles; returns #valid."""
        styles = [(dict(indent=4), ["--indent", "4"]),
                  (dict(indent=4, sort_keys=True), ["--indent", "4", "--sort-keys"]),
                  (dict(), []),
                  (dict(sort_keys=True, separators=(",", ":")), ["--sort-keys", "--compact"])]
        refs = []
        for d in docs:
            try:
                v = py_loads(d)
                refs.append(SKIP if depth(v) > MAX_DEPTH else v)
            except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
                refs.append(REJECTED)
        valid = 0
        for kw, args in styles:
            got = run_batch(docs, *args)
            for i, (d, ref, (ok, out)) in enumerate(zip(docs, refs, got)):
                if ref is SKIP:
                    continue
                if ref is REJECTED:
                    self.assertFalse(ok, "%s #%d: C accepted what Python rejects: %r -> %r"
                                     % (label, i, d[:200], out[:200]))
                    continue
                self.assertTrue(ok, "%s #%d: C rejected what Python accepts: %r: %s"
                                % (label, i, d[:300], out))
                want = json.dumps(ref, **kw).encode("ascii")
                self.assertEqual(out, want, "%s #%d %r: input %r" % (label, i, kw, d[:300]))
                if not kw:
                    valid += 1
        return valid

    def test_random_documents(self):
        r = random.Random(SEED)
        g = Gen(r)
        docs = [g.render(g.value()) for _ in range(3000)]
        valid = self.compare(docs, "random")
        self.assertEqual(valid, len(docs))

    def test_random_mutations(self):
        r = random.Random(SEED + 1)
        g = Gen(r)
        docs = [mutate(r, g.render(g.value())) for _ in range(4000)]
        valid = self.compare(docs, "mutation")
        # Sanity: the mutations produce both outcomes in bulk.
        self.assertGreater(valid, 200)
        self.assertLess(valid, 3800)

    def test_fixed_cases(self):
        docs = [
            b'{"a": 1, "b": 2, "a": 3}', b'{"b": 1, "a": 2, "b": 3}', b'[1.0, 1e16, 1E+16]',
            b'[-0, -0.0, 0e0, 0.0e-0, 1e-7, 123e-2]', b'"\\ud800"', b'"\\udc00\\ud800"',
            b'"\\ud800\\u0041"', b'"\\ud83d\\ude00"', b'"\\uD83D\\uDE00"', b'"\\ud800\\udbff"',
            b'"\\ud800\\"', b'"\\ud800\\uzzzz"', b'"\\u00e9\xc3\xa9"', b'[NaN, Infinity, -Infinity]',
            b'-NaN', b'nan', b'Infinity1', b'[1,]', b'01', b'-01', b'1.', b'.1', b'1e', b'1e+',
            b'"\t"', b'"\x7f"', b"'a'", b'{"a":1,}', b'{,}', b'[,1]', b'\xef\xbb\xbf[]',
            b'[] ', b' []', b'[]x', b'', b' ', b'\x0c[]', b'[\x0b]', b'{"a" :1 , "b":[ ] }',
            b'"\xed\xa0\x80"', b'"\xc0\xaf"', b'"\xf4\x90\x80\x80"', b'"\xf0\x9f\x98"',
            b'12345678901234567890123456789', b'-12345678901234567890123456789.5',
            b'1' * 4300, b'1' * 4301, b'-' + b'1' * 4300, b'1' * 4400 + b'.5',
            b'[' * 64 + b']' * 64, b'{"\\u0000": "\\u0000", "": ""}', b'"\\/"', b'true ',
            b'tru', b'nulll', b'[true, false, null]', b'1e400', b'-1e400', b'1e-400',
            b'2.2250738585072011e-308', b'4.9406564584124654e-324', b'2.4703282292062328e-324',
            b'2.4703282292062327e-324', b'9007199254740993', b'9007199254740993.0',
            b'0.1000000000000000055511151231257827021181583404541015625',
        ]
        self.compare(docs, "fixed")

    def test_depth_limit_is_deliberate(self):
        ok = run_batch([b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
                        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1)])
        self.assertTrue(ok[0][0])
        self.assertFalse(ok[1][0])
        json.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))  # Python accepts it

    def test_float_repr_bit_patterns(self):
        r = random.Random(SEED + 2)
        vals = [r.getrandbits(64) for _ in range(60000)]
        # Every power of two and its neighbours (lopsided rounding intervals),
        # subnormals, and decimal-looking values.
        for e in range(-1074, 1024):
            b = struct.unpack("<Q", struct.pack("<d", math.ldexp(1.0, e)))[0]
            vals += [b, b + 1, b - 1 if b else 0]
        vals += [r.getrandbits(52) for _ in range(3000)]  # subnormals
        for _ in range(20000):
            f = float("%.*f" % (r.randint(0, 16), r.uniform(1, 10)) + "e%d" % r.randint(-320, 308))
            vals.append(struct.unpack("<Q", struct.pack("<d", f))[0])
        inp = "".join("%016x\n" % (v & (2**64 - 1)) for v in vals).encode()
        p = subprocess.run([TOOL, "--float-batch"], input=inp, stdout=subprocess.PIPE,
                           check=True, timeout=120)
        got = p.stdout.decode().split("\n")[:-1]
        self.assertEqual(len(got), len(vals))
        bad = []
        for v, s in zip(vals, got):
            f = struct.unpack("<d", struct.pack("<Q", v & (2**64 - 1)))[0]
            want = json.dumps(f)
            if s != want:
                bad.append((hex(v), s, want))
        self.assertEqual(bad[:10], [], "%d of %d differ" % (len(bad), len(vals)))

    def test_equality(self):
        r = random.Random(SEED + 3)
        g = Gen(r)
        pairs = []
        for _ in range(1500):
            a = g.value()
            k = r.random()
            if k < 0.3:
                b = a
            elif k < 0.6:
                b = self.perturb(r, a)
            else:
                b = g.value()
            pairs.append((a, b))
        pairs += [(1, 1.0), (True, 1), (True, 1.0), (False, 0), (False, -0.0), (None, 0),
                  (2**53 + 1, float(2**53)), (2**53, float(2**53)), (10**20, 1e20),
                  ({"a": [1, 2]}, {"a": [1.0, True + 1]}), ([math.nan], [math.nan]),
                  ({"a": 1, "b": 2}, {"b": 2, "a": 1}), ("1", 1), ([], {})]
        inp = b""
        for a, b in pairs:
            for v in (a, b):
                d = json.dumps(v).encode()
                inp += b"%d\n" % len(d) + d
        p = subprocess.run([TOOL, "--equal"], input=inp, stdout=subprocess.PIPE, check=True,
                           timeout=120)
        got = p.stdout.decode().split()
        self.assertEqual(len(got), len(pairs))
        for (a, b), gv in zip(pairs, got):
            # Compare the *parsed* values as Python does (fresh objects, no identity).
            want = json.loads(json.dumps(a)) == json.loads(json.dumps(b))
            self.assertEqual(gv, "1" if want else "0", "%r == %r" % (a, b))

    def perturb(self, r, v):
        if isinstance(v, bool):
            return int(v) if r.random() < 0.5 else float(v)
        if isinstance(v, int):
            return float(v) if abs(v) < 2**60 and r.random() < 0.7 else v + 1
        if isinstance(v, float):
            return v if math.isnan(v) else (int(v) if v.is_integer() else v * 2 + 1)
        if isinstance(v, str):
            return v + "x" if r.random() < 0.5 else v
        if isinstance(v, list):
            return [self.perturb(r, x) if r.random() < 0.3 else x for x in v]
        if isinstance(v, dict):
            items = list(v.items())
            r.shuffle(items)
            return {k: (self.perturb(r, x) if r.random() < 0.3 else x) for k, x in items}
        return v


if __name__ == "__main__":
    unittest.main()
