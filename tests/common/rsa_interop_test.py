"""Interop: src/common/rsa + b64 (via bin/fixtures/rsa_tool) against
pycryptodome (Debian python3-pycryptodome, package `Cryptodome`), which is what
the Vast PyWorker verifies with (pkcs1_15 + SHA256 + base64.b64decode).

The expected outcome of every verification is computed by Python itself
(py_verify below), not assumed: valid signatures, tampered message/signature,
wrong length, another key's signature, signatures without the NULL
AlgorithmIdentifier parameter (made with raw RSA, pow(m, d, n)), wrong digest
OIDs, and base64 text with junk/whitespace/bad padding.  Keys are given to the
C side as PEM SPKI, PEM PKCS#1, DER SPKI and DER PKCS#1.  C-generated keys and
signatures are checked with pycryptodome, and signatures over the same key
must be byte-identical (PKCS#1 v1.5 is deterministic).
"""
import base64
import binascii
import os
import random
import subprocess
import tempfile
import unittest

from Cryptodome.Hash import SHA256
from Cryptodome.IO import PEM
from Cryptodome.PublicKey import RSA
from Cryptodome.Signature import pkcs1_15
from Cryptodome.Util.asn1 import DerSequence
from Cryptodome.Util.number import bytes_to_long, long_to_bytes

BIN = os.environ.get("SGPU_BIN") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "bin")
TOOL = os.path.join(BIN, "fixtures", "rsa_tool")
SEED = int(os.environ.get("SGPU_INTEROP_SEED", "20261127"))

DI_NULL = bytes.fromhex("3031300d060960864801650304020105000420")
DI_NONULL = bytes.fromhex("302f300b0609608648016503040201" "0420")
DI_SHA1 = bytes.fromhex("3021300906052b0e03021a05000414")


def py_verify(pub, msg, sig_text):
    """What the PyWorker does: b64decode (non-strict) + pkcs1_15 verify."""
    try:
        sig = base64.b64decode(sig_text)
        pkcs1_15.new(pub).verify(SHA256.new(msg), sig)
        return True
    except (ValueError, TypeError):
        return False


def raw_sign(key, t):
    """Type-1 padded RSA signature over arbitrary bytes t (e.g. a DigestInfo)."""
    k = (key.n.bit_length() + 7) // 8
    em = bytes_to_long(b"\x00\x01" + b"\xff" * (k - 3 - len(t)) + b"\x00" + t)
    # pow(em, d, n), computed with the CRT (4x faster; checked below).
    p, q = int(key.p), int(key.q)
    m1, m2 = pow(em, int(key.d) % (p - 1), p), pow(em, int(key.d) % (q - 1), q)
    s = m2 + q * ((pow(q, -1, p) * (m1 - m2)) % p)
    assert pow(s, int(key.e), int(key.n)) == em
    return long_to_bytes(s, k)


def pkcs1_pub_der(key):
    return DerSequence([key.n, key.e]).encode()


class RsaInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(TOOL, os.X_OK):
            raise unittest.SkipTest("missing " + TOOL + " (run make)")
        cls.tmp = tempfile.TemporaryDirectory(prefix="sgpu-rsa-interop-")
        cls.keys = [RSA.generate(2048), RSA.generate(2048), RSA.generate(1024),
                    RSA.generate(3072)]

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name, data):
        p = os.path.join(self.tmp.name, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def key_files(self, i, key):
        pub = key.publickey()
        der1 = pkcs1_pub_der(key)
        return {
            "pem-spki": self.path("k%d-spki.pem" % i, pub.export_key("PEM")),
            "pem-pkcs1": self.path("k%d-pkcs1.pem" % i,
                                   PEM.encode(der1, "RSA PUBLIC KEY").encode()),
            "der-spki": self.path("k%d-spki.der" % i, pub.export_key("DER")),
            "der-pkcs1": self.path("k%d-pkcs1.der" % i, der1),
        }

    def verify_batch(self, keyfile, cases):
        inp = "".join("%s\t%s\n" % (m.hex(), s.encode().hex()) for m, s in cases).encode()
        p = subprocess.run([TOOL, "verify-batch", keyfile], input=inp, stdout=subprocess.PIPE,
                           check=True, timeout=120)
        got = p.stdout.decode().split()
        self.assertEqual(len(got), len(cases))
        return [g == "1" for g in got]

    def b64(self, sig):
        return base64.b64encode(sig).decode()

    def cases_for(self, r, key, other):
        """(msg, sig_text) pairs with every kind of tampering."""
        k = (key.n.bit_length() + 7) // 8
        out = []
        for _ in range(25):
            msg = bytes(r.getrandbits(8) for _ in range(r.choice([0, 1, 42, 112, 138, 300])))
            sig = pkcs1_15.new(key).sign(SHA256.new(msg))
            h = SHA256.new(msg).digest()
            flip = bytearray(sig)
            flip[r.randrange(k)] ^= 1 << r.randrange(8)
            tmsg = bytearray(msg or b"\x00")
            tmsg[r.randrange(len(tmsg))] ^= 1
            text = self.b64(sig)
            junk = list(text)
            for _ in range(4):
                junk.insert(r.randint(0, len(junk)), r.choice(" \n\t-_!*.\r"))
            out += [
                (msg, text),                                   # valid
                (bytes(tmsg), text),                           # tampered message
                (msg, self.b64(bytes(flip))),                  # tampered signature
                (msg, self.b64(sig[1:])),                      # too short
                (msg, self.b64(b"\x00" + sig)),                # too long (same value)
                (msg, self.b64(sig + b"\x00")),
                (msg, self.b64(pkcs1_15.new(other).sign(SHA256.new(msg)))),  # other key
                (msg, self.b64(raw_sign(key, DI_NONULL + h))),  # no NULL param: valid
                (msg, self.b64(raw_sign(key, DI_NULL + h))),    # explicit, valid
                (msg, self.b64(raw_sign(key, DI_SHA1 + h[:20]))),  # wrong OID
                (msg, self.b64(raw_sign(key, h))),              # bare hash
                (msg, self.b64(raw_sign(key, DI_NULL + h + b"\x00"))),
                (msg, "".join(junk)),                           # junk chars: b64decode drops them
                (msg, text.rstrip("=")),                        # padding removed
                (msg, text + "=="),                             # surplus padding
                (msg, text[:-4]),                               # cut
                (msg, self.b64(long_to_bytes(key.n, k))),       # sig == n
                (msg, self.b64(b"\xff" * k)),                   # sig > n
                (msg, ""),
            ]
        return out

    def test_verify_matches_pycryptodome(self):
        r = random.Random(SEED)
        total = valid = 0
        for i, key in enumerate(self.keys):
            other = self.keys[(i + 1) % len(self.keys)]
            cases = self.cases_for(r, key, other)
            want = [py_verify(key.publickey(), m, s) for m, s in cases]
            for fmt, kf in self.key_files(i, key).items():
                got = self.verify_batch(kf, cases)
                for j, (g, w) in enumerate(zip(got, want)):
                    self.assertEqual(g, w, "key %d (%d bits) %s case %d: msg=%s sig=%r"
                                     % (i, key.n.bit_length(), fmt, j, cases[j][0].hex()[:40],
                                        cases[j][1][:60]))
                total += len(cases)
                valid += sum(want)
        # Both outcomes are exercised in bulk (valid, no-NULL, explicit NULL, junk...).
        self.assertGreater(valid, total // 5)
        self.assertLess(valid, total // 2)

    def test_no_null_digestinfo_is_accepted_by_both(self):
        key = self.keys[0]
        msg = b'{\n    "url": "https://203.0.113.7:41234"\n}'
        sig = raw_sign(key, DI_NONULL + SHA256.new(msg).digest())
        self.assertTrue(py_verify(key.publickey(), msg, self.b64(sig)))
        kf = self.key_files(0, key)["pem-spki"]
        mf = self.path("g3.txt", msg)
        rc = subprocess.run([TOOL, "verify", kf, mf, self.b64(sig)]).returncode
        self.assertEqual(rc, 0)
        rc = subprocess.run([TOOL, "verify", kf, mf, self.b64(sig[:-1] + b"\x00")]).returncode
        self.assertEqual(rc, 1)

    def test_c_keys_and_signatures_verify_in_pycryptodome(self):
        r = random.Random(SEED + 1)
        priv = os.path.join(self.tmp.name, "c-key.pem")
        p = subprocess.run([TOOL, "genkey", priv], stdout=subprocess.PIPE, check=True)
        self.assertEqual(os.stat(priv).st_mode & 0o777, 0o600)
        pub = RSA.import_key(p.stdout)
        self.assertEqual(pub.n.bit_length(), 2048)
        with open(priv, "rb") as f:
            pem = f.read()
        self.assertTrue(pem.startswith(b"-----BEGIN PRIVATE KEY-----"))
        full = RSA.import_key(pem)
        self.assertEqual(full.n, pub.n)
        for _ in range(20):
            msg = bytes(r.getrandbits(8) for _ in range(r.randint(0, 200)))
            s = subprocess.run([TOOL, "sign", priv], input=msg, stdout=subprocess.PIPE,
                               check=True).stdout.decode().strip()
            sig = base64.b64decode(s, validate=True)
            pkcs1_15.new(pub).verify(SHA256.new(msg), sig)  # raises if invalid
            # Deterministic scheme: identical bytes to pycryptodome's signature.
            self.assertEqual(sig, pkcs1_15.new(full).sign(SHA256.new(msg)))
            with self.assertRaises(ValueError):
                pkcs1_15.new(pub).verify(SHA256.new(msg + b"x"), sig)

    def test_pycryptodome_private_keys_load_in_c(self):
        key = self.keys[0]
        for name, pem in [("pkcs1", key.export_key("PEM", pkcs=1)),
                          ("pkcs8", key.export_key("PEM", pkcs=8))]:
            kp = self.path("py-%s.pem" % name, pem)
            pub = subprocess.run([TOOL, "pubpem", kp], stdout=subprocess.PIPE,
                                 check=True).stdout
            self.assertEqual(RSA.import_key(pub).n, key.n)
            msg = b"hello " + name.encode()
            s = subprocess.run([TOOL, "sign", kp], input=msg, stdout=subprocess.PIPE,
                               check=True).stdout.decode().strip()
            self.assertEqual(base64.b64decode(s), pkcs1_15.new(key).sign(SHA256.new(msg)))

    def test_fingerprint_and_bad_keys(self):
        key = self.keys[1]
        files = self.key_files(1, key)
        want = SHA256.new(key.publickey().export_key("DER")).hexdigest()
        for kf in files.values():
            fp = subprocess.run([TOOL, "fingerprint", kf], stdout=subprocess.PIPE,
                                check=True).stdout.decode().strip()
            self.assertEqual(fp, want)
        bad = self.path("bad.pem", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        mf = self.path("m.txt", b"m")
        self.assertEqual(subprocess.run([TOOL, "verify", bad, mf, "AAAA"]).returncode, 2)
        ecpem = self.path("ec.pem", binascii.a2b_hex(
            "3059301306072a8648ce3d020106082a8648ce3d030107034200"
            "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
            "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5"))
        self.assertEqual(subprocess.run([TOOL, "verify", ecpem, mf, "AAAA"]).returncode, 2)


if __name__ == "__main__":
    unittest.main()
