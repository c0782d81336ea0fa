"""Signing interop: pycryptodome verifies the engine's /route/ grants for every scheme, with the
message rebuilt from the parsed auth_data exactly as PyWorker does (docs/protocol.md §3.4):
  url        json.dumps({"url": url}, indent=4, sort_keys=True)                      (G3)
  fields-v2  json.dumps({cost, endpoint, reqnum, request_idx, url}, indent=4, sort_keys=True)
  fields-v1  json.dumps({cost, endpoint, reqnum, url}, indent=4)  (AuthData field order)
Workers are fake (command provider) so that odd URLs can be reported."""
import base64
import json
import os
import sys
import unittest

from Cryptodome.Hash import SHA256
from Cryptodome.PublicKey import RSA
from Cryptodome.Signature import pkcs1_15

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402


def pyworker_message(scheme, auth):
    if scheme == "url":
        return json.dumps({"url": auth["url"]}, indent=4, sort_keys=True)
    if scheme == "fields-v2":
        keys = ("cost", "endpoint", "reqnum", "request_idx", "url")
        return json.dumps({k: auth[k] for k in keys}, indent=4, sort_keys=True)
    keys = ("cost", "endpoint", "reqnum", "url")
    return json.dumps({k: auth[k] for k in keys}, indent=4)


def verify(pub, msg, sig):
    try:
        pkcs1_15.new(pub).verify(SHA256.new(msg.encode()), base64.b64decode(sig))
        return True
    except (ValueError, TypeError):
        return False


class Signing(unittest.TestCase):
    ARGS = ()

    @classmethod
    def setUpClass(cls):
        if not os.access(el.binpath("sgpu-engine"), os.X_OK):
            raise unittest.SkipTest("sgpu-engine not built")
        cls.eng = el.Engine(*cls.ARGS)
        cls.fleet = el.Fleet(cls.eng, perf=1e6)
        st, pem, _ = cls.eng.raw("GET", "/pubkey/")
        assert st == 200
        cls.pub = RSA.import_key(pem)
        for scheme in ("url", "fields-v2", "fields-v1"):
            cls.eng.create_endpoint("sig-" + scheme, min_load=1, min_workers=0, max_workers=1,
                                    sig_scheme=scheme, cold_mult=1, max_queue_time=1e6)
            cls.eng.create_group("sig-" + scheme, "command", cls.fleet.launch)
        el.wait_for(lambda: all(any(w["status"] == "idle" for w in cls.eng.workers("sig-" + s))
                                for s in ("url", "fields-v2", "fields-v1")),
                    what="one idle worker per endpoint")

    @classmethod
    def tearDownClass(cls):
        cls.eng.close()
        cls.fleet.close()

    def grant(self, name, cost):
        st, r = self.eng.route(name, cost=cost)
        self.assertEqual(st, 200, r)
        self.assertIn("url", r, r)
        return r

    def test_pubkey_is_pem_spki(self):
        st, pem, resp = self.eng.raw("GET", "/pubkey/")
        self.assertTrue(pem.startswith(b"-----BEGIN PUBLIC KEY-----"))
        self.assertEqual(self.pub.size_in_bits(), 2048)

    def test_answer_shape(self):
        st, data, _ = self.eng.raw("POST", "/route/", {"endpoint": "sig-url", "api_key": self.eng.key,
                                                      "cost": 256})
        self.assertEqual(st, 200)
        r = json.loads(data)
        self.assertEqual(list(r.keys()), ["endpoint", "url", "cost", "reqnum", "signature",
                                          "request_idx", "__request_id"])
        self.assertEqual(r["cost"], 256.0)
        self.assertIsInstance(r["cost"], float)
        self.assertIn(b'"cost": 256.0', data)
        self.assertEqual(len(r["__request_id"]), 36)

    def test_every_scheme_verifies(self):
        for scheme in ("url", "fields-v2", "fields-v1"):
            for cost in (256, 10.0, 1e-05, 0, 12345678.9, 1e11):
                with self.subTest(scheme=scheme, cost=cost):
                    r = self.grant("sig-" + scheme, cost)
                    auth = json.loads(json.dumps(r))  # what the client forwards
                    msg = pyworker_message(scheme, auth)
                    self.assertTrue(verify(self.pub, msg, r["signature"]), (scheme, msg))
                    # and a tampered message does not
                    bad = dict(auth, url=auth["url"] + "x")
                    self.assertFalse(verify(self.pub, pyworker_message(scheme, bad),
                                            r["signature"]))

    def test_reqnum_increases_and_url_signature_cached(self):
        a = self.grant("sig-url", 1)
        b = self.grant("sig-url", 1)
        self.assertGreater(b["reqnum"], a["reqnum"])
        self.assertEqual(a["signature"], b["signature"])  # one signature per worker URL
        self.assertNotEqual(a["request_idx"], b["request_idx"])
        c = self.grant("sig-fields-v2", 1)
        d = self.grant("sig-fields-v2", 1)
        self.assertEqual(d["reqnum"], c["reqnum"] + 1)
        self.assertNotEqual(c["signature"], d["signature"])
        # fields-v2 covers cost, reqnum and request_idx
        forged = dict(d, request_idx=d["request_idx"] + 1)
        self.assertFalse(verify(self.pub, pyworker_message("fields-v2", forged), d["signature"]))
        forged = dict(d, cost=2.0)
        self.assertFalse(verify(self.pub, pyworker_message("fields-v2", forged), d["signature"]))

    def test_odd_url_escaping(self):
        # A worker reporting a URL with quotes, backslash, control and non-ASCII characters:
        # the signed bytes must still equal Python's ensure_ascii rendering.
        ws = self.eng.workers("sig-fields-v1")
        w = self.fleet.workers[ws[0]["id"]]
        odd = 'http://127.0.0.1:1/p"q\\r\x01\x7f\u00e9\U0001F600'
        self.fleet.by_url[odd] = w
        old = w.url
        w.url = odd
        try:
            el.wait_for(lambda: self.eng.workers("sig-fields-v1")[0]["url"] == odd,
                        what="new url reported")
            for scheme in ("fields-v1",):
                r = self.grant("sig-" + scheme, 3.5)
                self.assertEqual(r["url"], odd)
                self.assertTrue(verify(self.pub, pyworker_message(scheme, r), r["signature"]))
        finally:
            w.url = old

    def test_endpoint_key_can_route(self):
        st, r = self.eng.call("GET", "/api/v0/endptjobs/")
        ep = [x for x in r["results"] if x["endpoint_name"] == "sig-url"][0]
        st, g = self.eng.route("sig-url", cost=1, key=ep["api_key"])
        self.assertEqual(st, 200)
        self.assertIn("url", g)
        other = [x for x in r["results"] if x["endpoint_name"] == "sig-fields-v1"][0]
        st, g = self.eng.route("sig-url", cost=1, key=other["api_key"])
        self.assertEqual(st, 403)
        st, g = self.eng.route("sig-url", cost=1, key="nope")
        self.assertEqual(st, 401)
        self.assertEqual(g["error"], "auth_error")

    def test_reports_need_the_worker_token(self):
        w = self.fleet.live()[0]
        body = w.report()
        for bad in ({k: v for k, v in body.items() if k != "mtoken"}, dict(body, mtoken="x" * 32),
                    dict(body, mtoken=w.mtoken[:-1]), dict(body, mtoken=w.mtoken + "0")):
            st, r = self.eng.call("POST", "/worker_status/", bad, key=False)
            self.assertEqual((st, r["error"]), (403, "forbidden"), bad.get("mtoken"))
            st, r = self.eng.call("POST", "/delete_requests/", {
                "worker_id": w.id, "mtoken": bad.get("mtoken"), "request_idxs": [1]}, key=False)
            self.assertEqual(st, 403)
        st, r = self.eng.call("POST", "/worker_status/", body, key=False)
        self.assertEqual((st, r), (200, {"success": True}))
        st, r = self.eng.call("POST", "/delete_requests/", {
            "worker_id": w.id, "mtoken": w.mtoken,
            "requests": [{"request_idx": 1, "success": True, "status": "Success"}]}, key=False)
        self.assertEqual((st, r), (200, {"success": True}))

    def test_scheme_change_replaces_workers(self):
        eid = self.eng.create_endpoint("sig-switch", min_load=1, min_workers=0, max_workers=2,
                                       sig_scheme="url", cold_mult=1, max_queue_time=1e6)
        self.eng.create_group("sig-switch", "command", self.fleet.launch)
        old = el.wait_for(lambda: [w for w in self.eng.workers("sig-switch")
                                   if w["status"] == "idle"], what="idle")[0]
        st, r = self.eng.call("PUT", "/api/v0/endptjobs/%d/" % eid, {"sig_scheme": "fields-v1"})
        self.assertEqual(st, 200)
        new = el.wait_for(lambda: [w for w in self.eng.workers("sig-switch")
                                   if w["status"] == "idle" and w["id"] != old["id"]],
                          what="replacement")[0]
        el.wait_for(lambda: old["id"] not in [w["id"] for w in self.eng.workers("sig-switch")],
                    what="old worker destroyed")
        r = self.grant("sig-switch", 2)
        self.assertEqual(r["url"], new["url"])
        self.assertTrue(verify(self.pub, pyworker_message("fields-v1", r), r["signature"]))

    def test_signature_counter_in_metrics(self):
        self.grant("sig-fields-v2", 1)
        st, text, _ = self.eng.raw("GET", "/metrics")
        self.assertEqual(st, 200)
        self.assertIn(b'sgpu_engine_signatures_total{scheme="fields-v2"}', text)
        self.assertIn(b'sgpu_engine_routes_total{result="granted"}', text)


class SigningThreaded(Signing):
    """The same checks with the per-request schemes signed on two signing threads."""
    ARGS = ("--sign-threads", "2")

    def test_concurrent_grants(self):
        import threading
        out, errs = [], []

        def go():
            try:
                for _ in range(25):
                    out.append(self.grant("sig-fields-v2", 1))
            except Exception as ex:  # noqa: BLE001 - reported below
                errs.append(ex)
        ts = [threading.Thread(target=go) for _ in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errs, [])
        self.assertEqual(len(out), 150)
        self.assertEqual(len({r["reqnum"] for r in out}), 150)  # unique per worker
        for r in out:
            self.assertTrue(verify(self.pub, pyworker_message("fields-v2", r), r["signature"]))


if __name__ == "__main__":
    unittest.main()
