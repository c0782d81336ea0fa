"""The engine against real processes: the `local` provider starts sgpu-launch (sgpu-worker in
front of bin/fixtures/stub_model) with UNSECURED=false and PUBKEY_URL pointing at the engine.
The worker accepts the engine's grants (url and fields-v2 schemes), a tampered grant is 401,
requests beyond max_queue_time wait in the global queue and are served, a parked (suspended)
instance is resumed on demand, and the engine's exit removes its instances."""
import json
import os
import sys
import time
import unittest
import http.client
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402

NEED = ["sgpu-engine", "sgpu-worker", "sgpu-launch", "fixtures/stub_model"]


def post(url, path, obj, timeout=30):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        c.request("POST", path, body=json.dumps(obj), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class RealWorkers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for n in NEED:
            if not os.access(el.binpath(n), os.X_OK):
                raise unittest.SkipTest("missing " + n)
        # --route-hold-ms 0: this class checks the polling path of the global queue (a waiting
        # answer, then polls); held /route/ calls are covered by route_hold_test.py
        cls.eng = el.Engine("--drain-grace-s", "1", "--unavailable-after-s", "30",
                            "--stable-window-s", "3", "--scale-down-delay-s", "1",
                            "--route-hold-ms", "0", tick_ms=100)
        cls.launch = cls.launch_spec()
        for scheme in ("url", "fields-v2"):
            cls.eng.create_endpoint("real-" + scheme, min_load=1, min_workers=0, max_workers=1,
                                    target_util=1.0, cold_mult=1, max_queue_time=30,
                                    target_queue_time=0, inactivity_timeout=0, sig_scheme=scheme)
            cls.eng.create_group("real-" + scheme, "local", cls.launch)
        el.wait_for(lambda: all(any(w["status"] == "idle" for w in cls.eng.workers("real-" + s))
                                for s in ("url", "fields-v2")), timeout=60,
                    what="real workers ready")

    @staticmethod
    def launch_spec():
        stub = el.binpath("fixtures/stub_model")
        return {
            "model_cmd": stub + " --port {model_port} --log \"$MODEL_LOG\"",
            "env": {"BACKEND": "tgi", "SGPU_BENCHMARK_RUNS": "1", "SGPU_REPORT_INTERVAL": "1",
                    "SGPU_LOG_LEVEL": "info", "SGPU_DRAIN_TIMEOUT": "2"},
            "args": ["--stop-timeout", "5"],
        }

    @classmethod
    def tearDownClass(cls):
        pids = [int(w["instance"].split(":")[1]) for w in cls.eng.workers()
                if ":" in w["instance"]]
        cls.eng.stop()
        try:
            for p in pids:  # the engine's exit destroyed its local instances
                assert not pid_alive(p), "instance %d survived the engine" % p
        finally:
            cls.eng.close()

    def call(self, name, payload, grant=None):
        if grant is None:
            st, grant = self.eng.route(name, cost=4)
            self.assertEqual(st, 200)
            self.assertIn("url", grant, grant)
        return post(grant["url"], "/generate", {"auth_data": grant, "payload": payload})

    def test_grants_accepted(self):
        for scheme in ("url", "fields-v2"):
            with self.subTest(scheme=scheme):
                st, body = self.call("real-" + scheme,
                                     {"inputs": "hello", "parameters": {"max_new_tokens": 4}})
                self.assertEqual(st, 200, body)
                self.assertIn(b"generated_text", body)

    def test_tampered_grant_rejected(self):
        st, g = self.eng.route("real-fields-v2", cost=4)
        bad = dict(g, reqnum=g["reqnum"] + 7)
        st, body = self.call("real-fields-v2", {"inputs": "x", "parameters": {"max_new_tokens": 1}},
                             grant=bad)
        self.assertEqual(st, 401)
        st, g = self.eng.route("real-url", cost=4)
        bad = dict(g, signature=g["signature"][:-8] + "AAAAAAA=")
        st, body = self.call("real-url", {"inputs": "x", "parameters": {"max_new_tokens": 1}},
                             grant=bad)
        self.assertEqual(st, 401)

    def test_global_queue_then_park_and_resume(self):
        e = self.eng
        st, r = e.call("GET", "/api/v0/endptjobs/")
        eid = [x["id"] for x in r["results"] if x["endpoint_name"] == "real-url"][0]
        # any outstanding work makes the only worker full
        st, _ = e.call("PUT", "/api/v0/endptjobs/%d/" % eid, {"max_queue_time": 0})
        self.assertEqual(st, 200)
        el.wait_for(lambda: all(w["cur_load"] == 0 for w in e.workers("real-url")),
                    what="worker idle")
        st, g1 = e.route("real-url", cost=4)
        self.assertIn("url", g1)
        import threading
        res = {}
        t = threading.Thread(target=lambda: res.update(
            slow=self.call("real-url", {"inputs": "x", "parameters": {"max_new_tokens": 2},
                                        "sleep_ms": 1500}, grant=g1)))
        t.start()
        st, w2 = e.route("real-url", cost=4)
        self.assertEqual(st, 200)
        self.assertNotIn("url", w2)  # waits in the global queue
        self.assertIn("status", w2)
        idx = w2["request_idx"]
        g2 = el.wait_for(lambda: (lambda r: r[1] if "url" in r[1] else None)(
            e.route("real-url", cost=4, request_idx=idx)), timeout=30, interval=0.1,
            what="queued request granted")
        self.assertEqual(g2["request_idx"], idx)
        t.join(30)
        self.assertEqual(res["slow"][0], 200)
        st, body = self.call("real-url", {"inputs": "y", "parameters": {"max_new_tokens": 2}},
                             grant=g2)
        self.assertEqual(st, 200, body)
        # park: no load floor, one loaded worker kept -> drained and suspended
        st, _ = e.call("PUT", "/api/v0/endptjobs/%d/" % eid,
                       {"min_load": 0, "min_workers": 1, "max_queue_time": 30})
        el.wait_for(lambda: [w["status"] for w in e.workers("real-url")] == ["stopped"],
                    timeout=60, what="worker parked")
        # demand: the parked instance is resumed (not re-created) and serves
        before = [x for x in e.events("real-url") if x["kind"] == "create"]
        st, g3 = e.route("real-url", cost=4)
        g3 = g3 if "url" in g3 else el.wait_for(lambda: (lambda r: r[1] if "url" in r[1] else None)(
            e.route("real-url", cost=4, request_idx=g3["request_idx"])), timeout=30,
            interval=0.1, what="resumed")
        st, body = self.call("real-url", {"inputs": "z", "parameters": {"max_new_tokens": 2}},
                             grant=g3)
        self.assertEqual(st, 200, body)
        after = [x for x in e.events("real-url") if x["kind"] == "create"]
        self.assertEqual(len(before), len(after))
        self.assertTrue([x for x in e.events("real-url") if x["kind"] == "start"])


class ReadoptLocal(unittest.TestCase):
    """--keep-workers: the engine exits, its sgpu-launch instance keeps running; the next engine
    (same data dir and address) re-attaches it by pid and routes to it; then destroys it."""

    def setUp(self):
        for n in NEED:
            if not os.access(el.binpath(n), os.X_OK):
                raise unittest.SkipTest("missing " + n)

    def test_readopt(self):
        e = el.Engine("--keep-workers", tick_ms=100)
        pid = None
        try:
            launch = dict(RealWorkers.launch_spec())
            e.create_endpoint("ra", min_load=1, min_workers=0, max_workers=1, target_util=1.0,
                              cold_mult=1, inactivity_timeout=0)
            e.create_group("ra", "local", launch)
            w = el.wait_for(lambda: [x for x in e.workers("ra") if x["status"] == "idle"],
                            timeout=60, what="idle")[0]
            pid = int(w["instance"].split(":")[1])
            port = e.port
            e.stop()
            self.assertTrue(pid_alive(pid), "instance should survive --keep-workers")
            e.extra = ["--listen", "127.0.0.1:%d" % port]  # same address: reports keep coming
            e.start()
            w2 = el.wait_for(lambda: [x for x in e.workers("ra") if x["status"] == "idle"],
                             timeout=60, what="re-adopted idle")[0]
            self.assertEqual((w2["id"], w2["instance"]), (w["id"], w["instance"]))
            st, g = e.route("ra", cost=4)
            self.assertIn("url", g)
            st, body = post(g["url"], "/generate", {"auth_data": g, "payload": {
                "inputs": "x", "parameters": {"max_new_tokens": 2}}})
            self.assertEqual(st, 200, body)
            self.assertEqual(len([x for x in e.events("ra") if x["kind"] == "create"]), 1)
            e.stop()  # without --keep-workers now: the adopted instance is destroyed
            el.wait_for(lambda: not pid_alive(pid), timeout=30, what="instance gone")
        finally:
            if pid and pid_alive(pid):
                os.kill(pid, 9)
            e.close()


if __name__ == "__main__":
    unittest.main()
