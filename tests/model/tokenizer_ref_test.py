"""BPE pre-tokenizers (tokenizer.ggml.pre = llama-bpe, qwen2, gpt-2, default,
starcoder, falcon)
against an independent reference written here: the published regexes run by
Python's `re`, with \\p{L} and \\p{N} built from Python's own unicodedata
(not from the unicode-data files the C tables are generated from) and \\s the
Unicode White_Space set; BPE merges by rank, and llama.cpp's ignore_merges
for llama-bpe.  Small vocabularies are trained on the corpus in the test and
written as vocabulary-only GGUF files; `sgpu-model tokenize` must give the
reference's ids on every string of a hard corpus.
Run: SGPU_BIN=/abs/bin /usr/bin/python3 tests/model/tokenizer_ref_test.py -v
"""
import collections
import os
import re
import struct
import subprocess
import sys
import tempfile
import unicodedata
import unittest

BIN = os.environ.get("SGPU_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "bin"))
MODEL = os.path.join(BIN, "sgpu-model")

# ---- character classes from Python's unicodedata ----


def _class_body(pred):
    """Regex character-class body (no brackets) of the code points matching pred."""
    out, start = [], None
    for cp in range(0x110001):
        ok = cp < 0x110000 and not (0xD800 <= cp <= 0xDFFF) and pred(chr(cp))
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            a, b = start, cp - 1
            out.append("\\U%08x" % a if a == b else "\\U%08x-\\U%08x" % (a, b))
            start = None
    return "".join(out)


# The Unicode White_Space property (PropList.txt): what \s means in the
# tokenizers' regex engines (Python's own \s would add U+001C..U+001F).
WHITE_SPACE = [0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
               0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
L = _class_body(lambda c: unicodedata.category(c)[0] == "L")
N = _class_body(lambda c: unicodedata.category(c)[0] == "N")
P = _class_body(lambda c: unicodedata.category(c)[0] == "P")
S = "".join("\\U%08x" % c for c in WHITE_SPACE)

CONTRACTIONS_I = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
LLAMA3 = (CONTRACTIONS_I + "|[^\\r\\n{L}{N}]?[{L}]+|[{N}]{{1,3}}| ?[^{S}{L}{N}]+[\\r\\n]*"
          "|[{S}]*[\\r\\n]+|[{S}]+(?![^{S}])|[{S}]+").format(L=L, N=N, S=S)
QWEN2 = (CONTRACTIONS_I + "|[^\\r\\n{L}{N}]?[{L}]+|[{N}]| ?[^{S}{L}{N}]+[\\r\\n]*"
         "|[{S}]*[\\r\\n]+|[{S}]+(?![^{S}])|[{S}]+").format(L=L, N=N, S=S)
GPT2 = ("'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+"
        .format(L=L, N=N, S=S))
# llama.cpp's "default" chain (tokenizer.ggml.pre absent or "default")
DEFAULT_CHAIN = ["[{P}$+<=>^~|]+".format(P=P), GPT2, "[{N}]+".format(N=N), "[0-9][0-9][0-9]"]

PATTERNS = {"llama-bpe": [LLAMA3], "qwen2": [QWEN2], "gpt-2": [GPT2], "default": DEFAULT_CHAIN,
            "starcoder": ["[{N}]".format(N=N), GPT2],
            "falcon": ["[{P}$+<=>^~|`]+".format(P=P), GPT2, "[0-9][0-9][0-9]"]}


def split_regex(rx, pieces):
    """Each piece -> its matches and the unmatched text between them."""
    out = []
    for p in pieces:
        pos = 0
        for m in rx.finditer(p):
            if m.start() > pos:
                out.append(p[pos:m.start()])
            if m.end() > m.start():
                out.append(m.group())
            pos = m.end()
        if pos < len(p):
            out.append(p[pos:])
    return out


_COMPILED = {}


def pretokenize(pre, text):
    if pre not in _COMPILED:
        _COMPILED[pre] = [re.compile(p) for p in PATTERNS[pre]]
    pieces = [text] if text else []
    for rx in _COMPILED[pre]:
        pieces = split_regex(rx, pieces)
    return pieces


# ---- byte-level BPE ----


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


B2U = bytes_to_unicode()


def mapped(piece):
    return "".join(B2U[b] for b in piece.encode("utf-8"))


def apply_merge(parts, pair):
    """Merge every occurrence of pair, left to right."""
    merged, i = [], 0
    while i < len(parts):
        if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
            merged.append(parts[i] + parts[i + 1])
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return merged


def bpe(word, ranks):
    """Merge the lowest-ranked adjacent pair until none is in ranks."""
    parts = list(word)
    while len(parts) > 1:
        best = min(range(len(parts) - 1),
                   key=lambda i: ranks.get((parts[i], parts[i + 1]), 1 << 30))
        pair = (parts[best], parts[best + 1])
        if pair not in ranks:
            break
        parts = apply_merge(parts, pair)
    return parts


class Vocab:
    def __init__(self, pre, corpus, n_merges, ignore_merges, extra_words=0):
        self.pre, self.ignore_merges = pre, ignore_merges
        # merges learnt from every pre-tokenizer's pieces, so that a wrong
        # split (say digits in threes for qwen2) shows in the ids
        words = collections.Counter(mapped(p) for t in corpus for k in PATTERNS
                                    for p in pretokenize(k, t))
        own = {mapped(p) for t in corpus for p in pretokenize(pre, t)}
        self.tokens = [B2U[b] for b in range(256)]
        self.merges = []
        seqs = {w: list(w) for w in words}
        for _ in range(n_merges):
            pairs = collections.Counter()
            for w, c in words.items():
                s = seqs[w]
                for i in range(len(s) - 1):
                    pairs[(s[i], s[i + 1])] += c
            if not pairs:
                break
            pair = max(pairs, key=lambda p: (pairs[p], p))
            self.merges.append(pair)
            if pair[0] + pair[1] not in self.tokens:
                self.tokens.append(pair[0] + pair[1])
            for w in seqs:
                seqs[w] = apply_merge(seqs[w], pair)
        self.ranks = {p: i for i, p in enumerate(self.merges)}
        # whole words merges cannot build in one piece: ignore_merges makes them one token
        self.whole = []
        for w in sorted(own, key=lambda w: (-len(w), w)):
            if len(self.whole) >= extra_words:
                break
            if len(bpe(w, self.ranks)) > 2 and w not in self.tokens:
                self.whole.append(w)
                self.tokens.append(w)
        assert len(set(self.tokens)) == len(self.tokens)
        self.bos = len(self.tokens)
        self.tokens += ["<|begin_of_text|>", "<|end_of_text|>"]
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    def encode(self, text):
        out = []
        for p in pretokenize(self.pre, text):
            w = mapped(p)
            if self.ignore_merges and w in self.ids:
                out.append(self.ids[w])
                continue
            for part in bpe(w, self.ranks):
                out.append(self.ids[part])
        return out

    def gguf(self, pre_value):
        kv = []

        def s(x):
            b = x.encode("utf-8")
            return struct.pack("<Q", len(b)) + b

        def add_str(k, v):
            kv.append(s(k) + struct.pack("<I", 8) + s(v))

        def add_u32(k, v):
            kv.append(s(k) + struct.pack("<II", 4, v))

        def add_bool(k, v):
            kv.append(s(k) + struct.pack("<IB", 7, 1 if v else 0))

        def add_arr_str(k, vs):
            kv.append(s(k) + struct.pack("<IIQ", 9, 8, len(vs)) + b"".join(s(v) for v in vs))

        def add_arr_i32(k, vs):
            kv.append(s(k) + struct.pack("<IIQ", 9, 5, len(vs)) + struct.pack("<%di" % len(vs), *vs))

        add_str("general.architecture", "llama")
        add_str("tokenizer.ggml.model", "gpt2")
        if pre_value is not None:
            add_str("tokenizer.ggml.pre", pre_value)
        add_arr_str("tokenizer.ggml.tokens", self.tokens)
        add_arr_i32("tokenizer.ggml.token_type",
                    [3 if t.startswith("<|") else 1 for t in self.tokens])
        add_arr_str("tokenizer.ggml.merges", [a + " " + b for a, b in self.merges])
        add_u32("tokenizer.ggml.bos_token_id", self.bos)
        add_u32("tokenizer.ggml.eos_token_id", self.bos + 1)
        add_bool("tokenizer.ggml.add_bos_token", False)
        data = b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv)
        return data + b"\0" * (-len(data) % 32)  # the (empty) tensor data section is aligned


CORPUS = [
    "Hello world",
    "I'M here, you'RE there; we'Ve done it. They'LL say 'd' and 's'",
    "don't DON'T Don'T i'd I'D it's IT'S o'clock rock'n'roll",
    "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D 'x ''s",
    "1234567890 12 3 45678 1 12 123 1234 12345 678901 ",
    "ab12cd345ef6789 v1.2.3 3.14159 + 2,718 = 5.86",
    "$100,000.00 (approx.) 50% off! #hashtag @user ~tilde^caret|pipe `tick`",
    "\tindented\ttabs\t\tand\t end",
    "line1\nline2\n\nline3\n\n\n\nline4",
    "  leading spaces",
    "trailing spaces   ",
    "mixed \t \n \r\n  whitespace \u3000 ideographic\u00a0nbsp\u2003em\u2028sep",
    "\r\n\r\nwindows\r\nlines\r\n",
    "a\n\n b \n\nc \n",
    "x!!\n\n\ny ...\n?!?! ok",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e \u092e\u0947\u0902 \u0932\u093f\u0916\u093e",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0967\u0968\u0969",
    "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u8fd8\u6709\u6807\u70b9\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3001\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "emoji \U0001F600\U0001F600 \U0001F44D\U0001F3FD \U0001F1FA\U0001F1F8 "
    "family \U0001F468\u200d\U0001F469\u200d\U0001F467!",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c6r\u00f8 \u00c0\u00c9\u00ce\u00d5\u00dc",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac \u0420\u0443\u0441\u0441\u043a\u0438\u0439, "
    "\u0434\u0430! \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "x\u00b2+y\u00b3=z\u2074 \u00bd \u2153 \u216b \u0663\u0664\u0665 \u0661\u0662\u0663\u0664",
    "<|begin_of_text|> <s> </s> [INST] {{x}}",
    "email@example.com https://x.y/z?q=1&r=2",
    "def f(x):\n    return x**2  # comment\n\n\n    four spaces\n        eight",
    "''' \"\"\" `code` -- --- \u2014 \u2013 \u2026",
    "a\u0301e\u0308 combining \u0915\u093c",
    "tab\t\n\tnewline\t",
    " ",
    "\n",
    "a",
    "'",
    "zero\u200bwidth soft\u00adhyphen Thai \u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22",
    "The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX!",
    "tokenization tokenizer tokens token token token",
]


def run_tokenize(path, text):
    r = subprocess.run([MODEL, "tokenize", "--model", path, "--text", text],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("tokenize failed: " + r.stderr)
    return [int(x) for x in r.stdout.split()], r.stderr


class PreTokenizerRefTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def check(self, pre, pre_value, ignore_merges, extra_words=0):
        v = Vocab(pre, CORPUS, 500, ignore_merges, extra_words)
        path = os.path.join(self.tmp.name, "%s.gguf" % pre)
        with open(path, "wb") as f:
            f.write(v.gguf(pre_value))
        bad = []
        for text in CORPUS:
            want = v.encode(text)
            got, _ = run_tokenize(path, text)
            if got != want:
                bad.append("%r\n  pieces %r\n  want %s\n  got  %s" % (
                    text, pretokenize(pre, text), want, got))
        self.assertEqual(bad, [], "\n".join(bad))
        return v, path

    def test_llama_bpe(self):
        v, path = self.check("llama-bpe", "llama-bpe", True, extra_words=12)
        # ignore_merges matters: whole-word tokens beat what merges build
        self.assertEqual(len(v.whole), 12)
        hits = 0
        u2b = {u: b for b, u in B2U.items()}
        for w in v.whole:
            got, _ = run_tokenize(path, bytes(u2b[ch] for ch in w).decode("utf-8"))
            if got == [v.ids[w]]:
                hits += 1
        self.assertGreater(hits, 0)
        self.assertGreater(hits, len(v.whole) // 2)

    def test_llama_bpe_aliases(self):
        self.check("llama-bpe", "llama3", True, extra_words=4)

    def test_qwen2(self):
        self.check("qwen2", "qwen2", False)

    def test_gpt2(self):
        self.check("gpt-2", "gpt-2", False)

    def test_default_absent(self):
        self.check("default", None, False)
        self.check("default", "default", False)

    def test_starcoder_family(self):
        self.check("starcoder", "starcoder", False)
        self.check("starcoder", "command-r", False)

    def test_falcon(self):
        self.check("falcon", "falcon", False)

    def test_unknown_pre_warns_and_falls_back(self):
        v = Vocab("gpt-2", CORPUS, 200, False)
        path = os.path.join(self.tmp.name, "unknown.gguf")
        with open(path, "wb") as f:
            f.write(v.gguf("no-such-pre"))
        got, err = run_tokenize(path, CORPUS[1])
        self.assertEqual(got, v.encode(CORPUS[1]))
        self.assertIn("event=tokenizer_pre_unknown", err)
        self.assertIn("pre=no-such-pre", err)
        self.assertIn("fallback=gpt-2", err)

    def test_reference_classes(self):
        # the reference itself: marks are not letters, U+3000 is a space, digits group
        self.assertEqual(pretokenize("llama-bpe", "\u0939\u093f"), ["\u0939", "\u093f"])
        self.assertEqual(pretokenize("llama-bpe", "12345"), ["123", "45"])
        self.assertEqual(pretokenize("qwen2", "123"), ["1", "2", "3"])
        self.assertEqual(pretokenize("llama-bpe", "a\u3000b"), ["a", "\u3000b"])
        self.assertEqual(pretokenize("default", "12345"), ["123", "45"])


if __name__ == "__main__":
    unittest.main(verbosity=2 if "-v" in sys.argv else 1)
