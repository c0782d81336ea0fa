"""Grant interop: Debian python3 + pycryptodome sign grants exactly like the reference
engine for all three schemes; the worker accepts exactly the valid ones."""
import json
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import (Cryptodome_RSA, WorkerTestCase, envelope, grant, message, pubkey_pem,  # noqa
                        sign, sign_no_null_digestinfo, test_key, tgi_payload, wait_for)

from worker_lib import GRANT_URL as URL  # noqa: E402  (the url the test worker reports)


class AuthUrlScheme(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"SGPU_AUTH_SCHEME": "url"})

    def call(self, auth, payload=None):
        return self.worker.post("/generate", envelope(auth, payload or tgi_payload()))

    def test_valid_grant_accepted_and_reusable(self):
        g = grant("url", URL, reqnum=5)
        for _ in range(3):  # G3 grants are reusable (retries, sessions)
            r = self.call(g)
            self.assertEqual(r.status, 200, r.body)
            self.assertIn(b"generated_text", r.body)

    def test_unsigned_fields_may_change(self):
        g = grant("url", URL)
        g["cost"] = 999999
        g["reqnum"] = 42
        self.assertEqual(self.call(g).status, 200)

    def test_forged_and_tampered_rejected(self):
        other = Cryptodome_RSA.generate(2048)
        forged = grant("url", URL, key=other)
        r = self.call(forged)
        self.assertEqual(r.status, 401)
        self.assertEqual(r.body, b"")
        self.assertEqual(r.header("Content-Type"), "application/octet-stream")
        g = grant("url", URL)
        g["url"] = URL + "/"
        self.assertEqual(self.call(g).status, 401)
        # a cached url grant must not make another signature pass
        ok = grant("url", URL)
        self.assertEqual(self.call(ok).status, 200)
        bad = dict(ok)
        bad["signature"] = forged["signature"]
        self.assertEqual(self.call(bad).status, 401)

    def test_session_checked_after_signature(self):
        """B15: an unauthenticated caller cannot probe sessions (401, not 410)."""
        from worker_lib import Cryptodome_RSA as R  # noqa: F401
        forged = grant("url", URL, key=Cryptodome_RSA.generate(2048))
        r = self.worker.post("/generate", envelope(forged, tgi_payload(), session_id="abc"))
        self.assertEqual(r.status, 401)
        r = self.worker.post("/generate", envelope(grant("url", URL), tgi_payload(), session_id="abc"))
        self.assertEqual(r.status, 410)

    def test_malformed_signatures(self):
        g = grant("url", URL)
        for sig in [123, None, ["x"], {"a": 1}, "", "abc", "!!!!", g["signature"][:-4],
                    g["signature"][:-2], "A" + g["signature"]]:
            b = dict(g)
            b["signature"] = sig
            self.assertEqual(self.call(b).status, 401, repr(sig))

    def test_lenient_base64(self):
        g = grant("url", URL)
        s = g["signature"]
        for variant in [s[:10] + "\n" + s[10:40] + " \t" + s[40:], s + "==", "-_" + s + "_", s + "A",
                        s[:20] + "*" + s[20:]]:
            b = dict(g)
            b["signature"] = variant
            self.assertEqual(self.call(b).status, 200, variant)

    def test_digestinfo_without_null(self):
        g = grant("url", URL)
        g["signature"] = sign_no_null_digestinfo(message("url", g))
        self.assertEqual(self.call(g).status, 200)

    def test_missing_fields_422_exact(self):
        g = grant("url", URL)
        del g["request_idx"]
        del g["signature"]
        r = self.call(g)
        self.assertEqual(r.status, 422)
        self.assertEqual(r.body, b'{"auth_data": {"request_idx": "missing parameter", '
                                 b'"signature": "missing parameter"}}')
        self.assertEqual(r.header("Content-Type"), "application/json; charset=utf-8")

    def test_wrong_types_in_auth_data(self):
        for bad in ["string", 5, None, [1, 2]]:
            r = self.worker.post("/generate", {"auth_data": bad, "payload": tgi_payload()})
            self.assertEqual(r.status, 422, bad)
            self.assertIn(b"auth_data", r.body)
        g = grant("url", URL)
        g["url"] = 12345  # message still renders; signature cannot match
        self.assertEqual(self.call(g).status, 401)
        self.assertEqual(self.worker.request("GET", "/ping").body, b"pong")


class AuthFieldsV1(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"SGPU_AUTH_SCHEME": "fields-v1"})

    def call(self, auth):
        return self.worker.post("/generate", envelope(auth, tgi_payload()))

    def test_valid_then_replay_rejected(self):
        g = grant("fields-v1", URL, reqnum=10)
        self.assertEqual(self.call(g).status, 200)
        self.assertEqual(self.call(g).status, 401)  # single use

    def test_int_float_distinction_and_tamper(self):
        g = grant("fields-v1", URL, reqnum=11, cost=256.0)
        t = dict(g)
        t["cost"] = 256  # json.dumps writes 256, not 256.0: different message
        self.assertEqual(self.call(t).status, 401)
        t = dict(g)
        t["endpoint"] = "other"
        self.assertEqual(self.call(t).status, 401)
        self.assertEqual(self.call(g).status, 200)
        g2 = grant("fields-v1", URL, reqnum=12, cost=256)
        self.assertEqual(self.call(g2).status, 200)

    def test_python_rendering_edge_cases(self):
        cases = [
            dict(cost=1e16, endpoint="tab\tnl\n", reqnum=-3),
            dict(cost=0.1 + 0.2, endpoint="", reqnum=0),
            dict(cost=123456789.125, endpoint="x" * 300, reqnum=7),
            dict(cost=1e-05, endpoint="caf\u00e9 \U0001F600 \x7f \"q\" \\ /", reqnum=2 ** 70),
        ]
        for i, c in enumerate(cases):
            g = grant("fields-v1", URL, **c)
            self.assertEqual(self.call(g).status, 200, message("fields-v1", g))

    def test_reqnum_window(self):
        self.assertEqual(self.call(grant("fields-v1", URL, reqnum=1000)).status, 200)
        self.assertEqual(self.call(grant("fields-v1", URL, reqnum=950)).status, 200)  # late but in window
        self.assertEqual(self.call(grant("fields-v1", URL, reqnum=899)).status, 401)  # too old
        g = grant("fields-v1", URL, reqnum="12")  # non-numeric reqnum
        self.assertEqual(self.call(g).status, 401)

    def test_v1_required_keys(self):
        g = grant("fields-v1", URL, reqnum=3)
        del g["request_idx"]  # not required by G1
        self.assertEqual(self.call(g).status, 200)
        del g["reqnum"]
        r = self.call(g)
        self.assertEqual(r.status, 422)
        self.assertEqual(r.body, b'{"auth_data": {"reqnum": "missing parameter"}}')


class AuthFieldsV2(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"SGPU_AUTH_SCHEME": "fields-v2"})

    def test_v2(self):
        g = grant("fields-v2", URL, reqnum=1, request_idx=77)
        r = self.worker.post("/generate", envelope(g, tgi_payload()))
        self.assertEqual(r.status, 200)
        g = grant("fields-v2", URL, reqnum=2, request_idx=78)
        g["request_idx"] = 79
        self.assertEqual(self.worker.post("/generate", envelope(g, tgi_payload())).status, 401)
        # a v1-signed message is not a v2 message
        g = grant("fields-v1", URL, reqnum=3)
        self.assertEqual(self.worker.post("/generate", envelope(g, tgi_payload())).status, 401)


class PubkeySources(WorkerTestCase, unittest.TestCase):
    def test_no_key_means_401_and_not_ready(self):
        self.start({"SGPU_AUTH_SCHEME": "url"}, wait_ready=False, pubkey=b"")
        self.sink.pubkey_status = 500
        wait_for(lambda: self.sink.pubkey_hits >= 1, 10, what="pubkey fetch")
        st = self.worker.status()
        self.assertEqual(st["auth"]["pubkey"], False)
        self.assertNotEqual(st["phase"], "ready")
        # the model is up but no key is held: a request that would otherwise be admitted gets
        # 401 (503 only while the model itself is not ready); reports keep max_perf 0
        r = wait_for(lambda: (lambda r: r if r.status != 503 else None)(
            self.worker.post("/generate", envelope(grant("url", URL), tgi_payload()))), 15,
            what="model ready, key missing")
        self.assertEqual(r.status, 401)
        self.assertEqual(r.body, b"")
        self.assertNotEqual(self.worker.status()["phase"], "ready")
        self.assertEqual(self.worker.status()["auth"]["pubkey"], False)
        self.assertTrue(all(p["json"]["max_perf"] == 0 for p in self.sink.reports()))
        # the key shows up: retried with back-off, then ready
        self.sink.pubkey = pubkey_pem()
        self.sink.pubkey_status = 200
        self.worker.wait_phase("ready", 15)
        r = self.worker.post("/generate", envelope(grant("url", URL), tgi_payload()))
        self.assertEqual(r.status, 200)

    def test_key_from_file_and_comma_report_addr(self):
        d = tempfile.mkdtemp()
        kf = os.path.join(d, "pub.pem")
        with open(kf, "wb") as f:
            f.write(pubkey_pem())
        self.start({"PUBKEY_FILE": kf})
        self.assertEqual(self.worker.post("/generate", envelope(grant("url", URL), tgi_payload())).status, 200)
        os.unlink(kf)
        os.rmdir(d)

    def test_rotation(self):
        self.start({"SGPU_PUBKEY_REFRESH": "0.3"})
        self.assertEqual(self.worker.post("/generate", envelope(grant("url", URL), tgi_payload())).status, 200)
        new = Cryptodome_RSA.generate(2048)
        self.sink.pubkey = new.publickey().export_key("PEM")
        wait_for(lambda: self.worker.post("/generate", envelope(grant("url", URL, key=new), tgi_payload())).status == 200,
                 10, what="rotated key")
        self.assertEqual(self.worker.post("/generate", envelope(grant("url", URL), tgi_payload())).status, 401)

    def test_unsecured(self):
        self.start({"UNSECURED": "yes"}, pubkey=b"")
        self.sink.pubkey_status = 404
        g = {"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 1, "signature": "junk", "url": "u"}
        r = self.worker.post("/generate", envelope(g, tgi_payload()))
        self.assertEqual(r.status, 200)
        self.assertEqual(self.worker.status()["last_error"], "")  # B14: no error for a missing key


if __name__ == "__main__":
    unittest.main()
