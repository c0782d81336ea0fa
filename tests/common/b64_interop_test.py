"""Interop: src/common/b64 (via bin/fixtures/b64_tool) against Python 3.11's
base64.b64encode / base64.b64decode(str) (non-strict), which the PyWorker uses
on the signature.  Accept/reject and the decoded bytes must agree exactly.

Inputs: random byte strings (encode and decode), valid encodings with random
junk inserted/deleted/padding changed, short random strings over a tiny
alphabet (dense coverage of the padding state machine), non-ASCII text.
"""
import base64
import binascii
import itertools
import os
import random
import subprocess
import unittest

BIN = os.environ.get("SGPU_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "bin")
TOOL = os.path.join(BIN, "fixtures", "b64_tool")
SEED = int(os.environ.get("SGPU_INTEROP_SEED", "20261127"))


def batch(mode, items):
    inp = b"".join(b"%d\n" % len(x) + x for x in items)
    out = subprocess.run([TOOL, mode], input=inp, stdout=subprocess.PIPE, check=True,
                         timeout=120).stdout
    res, i = [], 0
    while i < len(out):
        nl = out.index(b"\n", i)
        tag, n = out[i:nl].split(b" ")
        n = int(n)
        res.append(out[nl + 1:nl + 1 + n] if tag == b"ok" else None)
        i = nl + 1 + n
    assert len(res) == len(items)
    return res


def py_decode(text):
    """None if Python rejects the str, else the bytes."""
    try:
        return base64.b64decode(text)
    except (binascii.Error, ValueError):
        return None


class B64Interop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(TOOL, os.X_OK):
            raise unittest.SkipTest("missing " + TOOL + " (run make)")

    def check(self, texts):
        got = batch("--batch", [t.encode("utf-8") for t in texts])
        ok = 0
        for t, g in zip(texts, got):
            want = py_decode(t)
            self.assertEqual(g, want, "input %r" % t)
            ok += want is not None
        return ok

    def test_encode_random_bytes(self):
        r = random.Random(SEED)
        data = [bytes(r.getrandbits(8) for _ in range(n)) for n in list(range(40)) * 20]
        data += [bytes(r.getrandbits(8) for _ in range(r.randint(200, 600))) for _ in range(50)]
        got = batch("--encode-batch", data)
        for d, g in zip(data, got):
            self.assertEqual(g, base64.b64encode(d), d)
        self.assertEqual(self.check([g.decode() for g in got]), len(data))

    def test_junk_insertion(self):
        r = random.Random(SEED + 1)
        junk = " \n\r\t-_!.*~=@$%&()[]{}\\\"'#,;:?<>|^`\x00\x7f"
        texts = []
        for _ in range(4000):
            t = list(base64.b64encode(bytes(r.getrandbits(8) for _ in range(r.randint(0, 40))))
                     .decode())
            for _ in range(r.randint(1, 4)):
                k = r.random()
                pos = r.randint(0, len(t))
                if k < 0.5:
                    t.insert(pos, r.choice(junk))
                elif k < 0.65 and t:
                    del t[min(pos, len(t) - 1)]
                elif k < 0.8:
                    t.insert(pos, "=" * r.randint(1, 3))
                elif k < 0.9:
                    t.append(r.choice(["=", "==", "A", "AB", "ABC=", "YQ=="]))
                else:
                    t.insert(pos, r.choice("ABCxyz019+/"))
            texts.append("".join(t))
        ok = self.check(texts)
        self.assertGreater(ok, 800)
        self.assertLess(ok, 3800)

    def test_all_short_strings(self):
        # Every string of length <= 6 over a 5-symbol alphabet: 5^0 + ... + 5^6.
        texts = ["".join(p) for n in range(7) for p in itertools.product("AQ=.w", repeat=n)]
        self.check(texts)

    def test_non_ascii(self):
        texts = ["YQ==\u00e9", "\u00e9YQ==", "YWJj\u20ac", "YQ==\U0001f600", "\u00a0YQ=="]
        for t in texts:
            self.assertIsNone(py_decode(t))
        self.check(texts)


if __name__ == "__main__":
    unittest.main()
