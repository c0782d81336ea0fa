"""sgpu-engine under hostile callers (issue 8): keys compared whole (a NUL does not end them),
unsafe endpoint names refused, grants closed only by the worker they were issued to, reports
with runaway numbers clamped (never refused), and management writes that the store cannot make
durable answered 503 and undone (a full disk, simulated with RLIMIT_FSIZE), while acknowledged
ones survive kill -9."""
import json
import os
import resource
import signal
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402


def skip_unless_built():
    if not os.access(el.binpath("sgpu-engine"), os.X_OK):
        raise unittest.SkipTest("sgpu-engine not built")


class Hostile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        skip_unless_built()
        cls.eng = el.Engine("--unavailable-after-s", "600")

    @classmethod
    def tearDownClass(cls):
        cls.eng.close()

    def assert_json_error(self, st, r, status, error=None):
        self.assertEqual(st, status, r)
        self.assertIsInstance(r, dict, r)
        self.assertIs(r["success"], False)
        self.assertTrue(r["msg"])
        if error:
            self.assertEqual(r["error"], error, r)

    def test_key_with_nul_is_not_the_key(self):
        e = self.eng
        st, r = e.call("POST", "/api/v0/endptjobs/", {"endpoint_name": "nulkey"})
        self.assertEqual(st, 200, r)
        epkey = r["api_key"]
        ok = e.route("nulkey", key=epkey)
        self.assertEqual(ok[0], 200, ok)
        for tail in ("\u0000x", "\u0000", "\u0000" + epkey):
            st, r = e.route("nulkey", key=epkey + tail)
            self.assert_json_error(st, r, 401, "auth_error")
            st, r = e.call("GET", "/api/v0/endptjobs/", {"api_key": e.key + tail}, key=False)
            self.assert_json_error(st, r, 401, "auth_error")
        # in a query string a %00 could cut any value short: refused as such
        for q in ("?api_key=%s%%00x" % e.key, "?endpoint=nulkey%00x&api_key=" + e.key):
            st, data, _ = e.raw("GET", "/api/v0/workers/" + q)
            self.assert_json_error(st, json.loads(data), 400, "bad_request")
        st, data, _ = e.raw("GET", "/api/v0/workers/?api_key=" + e.key)
        self.assertEqual(st, 200, data)

    def test_unsafe_endpoint_names(self):
        e = self.eng
        bad = [".", "..", "...", ".hidden", "-rf", "_x", "a/b", "../x", "a b", "a\tb", "a\nb",
               "a\u0000b", "", "x" * 65, "caf\u00e9", "a\\b", "a%2fb"]
        for name in bad:
            with self.subTest(name=name):
                st, r = e.call("POST", "/api/v0/endptjobs/", {"endpoint_name": name})
                self.assert_json_error(st, r, 400, "bad_request")
        st, r = e.call("GET", "/api/v0/endptjobs/")
        names = [x["endpoint_name"] for x in r["results"]]
        for name in bad:
            self.assertNotIn(name, names)
        eid = e.create_endpoint("good.name-1_x")
        for name in (".", "..", "a/b"):
            st, r = e.call("PUT", "/api/v0/endptjobs/%d/" % eid, {"endpoint_name": name})
            self.assert_json_error(st, r, 400, "bad_request")
        st, r = e.call("GET", "/api/v0/endptjobs/%d/" % eid)
        self.assertEqual(r["result"]["endpoint_name"], "good.name-1_x")
        self.assertEqual(e.create_endpoint("x" * 64) > 0, True)


class Workers(unittest.TestCase):
    """Two `command` workers whose reports the test sends itself (no background reporter), so
    the router's estimate only moves when the test says so."""

    @classmethod
    def setUpClass(cls):
        skip_unless_built()
        cls.eng = el.Engine("--unavailable-after-s", "600")
        cls.dir = tempfile.mkdtemp(prefix="sgpu-sec-")
        cls.ctl = os.path.join(cls.dir, "ctl")
        open(cls.ctl, "w").close()
        e = cls.eng
        e.create_endpoint("two", min_load=150, min_workers=0, max_workers=2, target_util=1.0,
                          cold_mult=1, inactivity_timeout=-1)
        e.create_group("two", "command", {
            "create": "echo $SGPU_WORKER_ID $SGPU_MASTER_TOKEN >> %s; echo inst-$SGPU_WORKER_ID"
                      % cls.ctl,
            "destroy": "true"})

        cls.tokens = {}

        def two_idle():
            # the first worker is created before any perf is known; once it reports ready the
            # scaler sizes the endpoint (150 / 100 -> 2 workers)
            with open(cls.ctl) as f:
                for ln in f:
                    if ln.strip():
                        wid, tok = ln.split()
                        cls.tokens[int(wid)] = tok
            for wid in cls.tokens:
                st, r = cls.report(wid, max_perf=100.0, cur_load=0.0)
                assert st == 200, (st, r)
            return len([w for w in e.workers("two") if w["status"] == "idle"]) == 2

        el.wait_for(two_idle, timeout=120, interval=0.2, what="two idle workers")

    @classmethod
    def tearDownClass(cls):
        cls.eng.close()

    @classmethod
    def report(cls, wid, **fields):
        body = {"id": wid, "mtoken": cls.tokens[wid], "version": "1.1.0", "loadtime": 0.1,
                "url": "http://127.0.0.1:%d" % (21000 + wid), "error_msg": "",
                "num_requests_working": 0, "working_request_idxs": []}
        body.update(fields)
        return cls.eng.call("POST", "/worker_status/", body, key=False)

    def worker(self, wid):
        return [w for w in self.eng.workers("two") if w["id"] == wid][0]

    def test_delete_requests_only_from_the_granted_worker(self):
        e = self.eng
        for wid in self.tokens:  # both empty: the grant goes to the lower id
            self.report(wid, max_perf=100.0, cur_load=0.0)
        st, g = e.route("two", cost=100)
        self.assertEqual(st, 200, g)
        self.assertIn("url", g)
        owner = [wid for wid in self.tokens if g["url"].endswith(":%d" % (21000 + wid))][0]
        other = [wid for wid in self.tokens if wid != owner][0]
        self.assertAlmostEqual(self.worker(owner)["queue_time"], 1.0)
        # the other worker, with its own valid mtoken, cannot close the owner's grant
        for body in ({"request_idxs": [g["request_idx"]], "success": True},
                     {"requests": [{"request_idx": g["request_idx"], "success": True}]}):
            body.update({"worker_id": other, "mtoken": self.tokens[other]})
            st, r = e.call("POST", "/delete_requests/", body, key=False)
            self.assertEqual(st, 200, r)
            self.assertAlmostEqual(self.worker(owner)["queue_time"], 1.0)
        # nor anyone with the owner's id and a wrong token
        st, r = e.call("POST", "/delete_requests/",
                       {"worker_id": owner, "mtoken": self.tokens[other],
                        "request_idxs": [g["request_idx"]]}, key=False)
        self.assertEqual(st, 403, r)
        self.assertAlmostEqual(self.worker(owner)["queue_time"], 1.0)
        st, metrics, _ = e.raw("GET", "/metrics")
        self.assertIn(b"sgpu_engine_delete_requests_foreign_total 2", metrics)
        # the owner can
        st, r = e.call("POST", "/delete_requests/",
                       {"worker_id": owner, "mtoken": self.tokens[owner],
                        "request_idxs": [g["request_idx"]]}, key=False)
        self.assertEqual(st, 200, r)
        self.assertAlmostEqual(self.worker(owner)["queue_time"], 0.0)

    def test_runaway_report_numbers_are_clamped_not_refused(self):
        e = self.eng
        wid = max(self.tokens)
        try:
            # a hostile request's workload (max_new_tokens 1e16) in rej_load/new_load, a
            # runaway cur_load: the report is accepted, the values capped at 1e15
            st, r = self.report(wid, max_perf=100.0, cur_load=1e300, rej_load=1e16,
                                new_load=1e16, num_requests_working=1e20)
            self.assertEqual((st, r), (200, {"success": True}))
            w = self.worker(wid)
            self.assertEqual(w["cur_load"], 1e15)
            self.assertEqual(w["new_load"], 1e15)
            self.assertEqual(w["status"], "idle")
            st, r = self.report(wid, max_perf=100.0, cur_load=-5.0, rej_load=1e16)
            self.assertEqual(st, 200, r)
            self.assertEqual(self.worker(wid)["cur_load"], 0.0)
            self.assertEqual(e.logtext().count("report_clamped"), 1)  # logged once
            # what is truly invalid is still refused: not a number, a bad id
            for bad in ({"cur_load": "1"}, {"max_perf": [1]}, {"id": 1e300}, {"id": -1}):
                body = {"id": wid, "mtoken": self.tokens[wid]}
                body.update(bad)
                st, r = e.call("POST", "/worker_status/", body, key=False)
                self.assertEqual(st, 400, (bad, r))
            # Python's json writes NaN and Infinity: NaN is "unknown" (the last value stays),
            # Infinity is clamped like any other runaway value
            tok = self.tokens[wid].encode()
            st, data, _ = e.raw("POST", "/worker_status/",
                                b'{"id": %d, "mtoken": "%s", "cur_load": 7, "max_perf": 100}'
                                % (wid, tok))
            self.assertEqual(st, 200, data)
            st, data, _ = e.raw("POST", "/worker_status/",
                                b'{"id": %d, "mtoken": "%s", "cur_load": NaN, "new_load": '
                                b'Infinity, "max_perf": 100}' % (wid, tok))
            self.assertEqual(st, 200, data)
            w = self.worker(wid)
            self.assertEqual((w["cur_load"], w["new_load"]), (7.0, 1e15))
        finally:
            self.report(wid, max_perf=100.0, cur_load=0.0)


class DiskFull(unittest.TestCase):
    """The data directory's disk is full: simulated by lowering the engine's RLIMIT_FSIZE to 1
    byte (every write past offset 0 fails with EFBIG, as a full file system fails with ENOSPC;
    the engine ignores SIGXFSZ), which needs no root and no mount."""

    def setUp(self):
        skip_unless_built()
        # the workergroup's creates always fail ("false"): no breaker, so /route/ keeps
        # answering "waiting" (200) rather than the failing workergroup's 503
        self.eng = el.Engine("--error-breaker", "0")

    def tearDown(self):
        self.eng.close()

    def fsize(self, limit):
        _, hard = resource.prlimit(self.eng.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(self.eng.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))

    def names(self):
        st, r = self.eng.call("GET", "/api/v0/endptjobs/")
        self.assertEqual(st, 200, r)
        return {x["endpoint_name"]: x for x in r["results"]}

    def test_writes_not_stored_are_not_acknowledged_and_acked_ones_survive_kill9(self):
        e = self.eng
        kept = e.create_endpoint("kept", target_util=0.9)
        gid = e.create_group("kept", "command", {"create": "false", "destroy": "true"})
        self.fsize(1)
        try:
            attempts = [
                ("POST", "/api/v0/endptjobs/", {"endpoint_name": "lost"}),
                ("PUT", "/api/v0/endptjobs/%d/" % kept, {"target_util": 0.5}),
                ("PUT", "/api/v0/endptjobs/%d/" % kept, {"endpoint_name": "renamed"}),
                ("POST", "/api/v0/workergroups/", {"endpoint_name": "kept", "provider": "command",
                                                   "launch": {"create": "false", "destroy": "true"}}),
                ("PUT", "/api/v0/workergroups/%d/" % gid, {"test_workers": 7}),
                ("DELETE", "/api/v0/workergroups/%d/" % gid, None),
                ("DELETE", "/api/v0/endptjobs/%d/" % kept, None),
            ]
            for method, path, body in attempts:
                with self.subTest(method=method, path=path):
                    st, r = e.call(method, path, body)
                    self.assertEqual(st, 503, r)
                    self.assertEqual((r["success"], r["error"]), (False, "store_failed"), r)
                    self.assertNotIn("api_key", r)
            # nothing changed in memory either
            n = self.names()
            self.assertEqual(sorted(n), ["kept"])
            self.assertEqual(n["kept"]["target_util"], 0.9)
            self.assertEqual(n["kept"]["endpoint_state"], "active")
            st, r = e.call("GET", "/api/v0/workergroups/")
            self.assertEqual([(g["id"], g["test_workers"]) for g in r["results"]], [(gid, 3)])
            # reads still work; routing does not need the disk
            st, r = e.call("GET", "/api/v0/events/?endpoint=kept")
            self.assertEqual(st, 200, r)
            self.assertIn("endpoint_created", [x["kind"] for x in r["results"]])
            self.assertEqual(e.route("kept")[0], 200)
        finally:
            self.fsize(resource.RLIM_INFINITY)
        # space again: writes work, and what was acknowledged survives kill -9 right after
        st, r = e.call("POST", "/api/v0/endptjobs/", {"endpoint_name": "after"})
        self.assertEqual(st, 200, r)
        key_after = r["api_key"]
        st, r = e.call("PUT", "/api/v0/endptjobs/%d/" % kept, {"target_util": 0.7})
        self.assertEqual(st, 200, r)
        e.proc.send_signal(signal.SIGKILL)
        e.proc.wait()
        e.log.close()
        e.proc = None
        e.start()
        n = self.names()
        self.assertEqual(sorted(n), ["after", "kept"])
        self.assertEqual(n["after"]["api_key"], key_after)
        self.assertEqual(n["kept"]["target_util"], 0.7)
        self.assertEqual(e.route("after", key=key_after)[0], 200)


if __name__ == "__main__":
    unittest.main()
