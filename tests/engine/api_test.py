"""sgpu-engine API: management CRUD, auth, precise 4xx errors for hostile input on every route
(never a crash), persistence across a restart with re-adoption of still-reporting workers, and
first-start files (0600 keys)."""
import json
import os
import socket
import stat
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402

ROUTES_POST = ["/route/", "/worker_status/", "/delete_requests/", "/get_endpoint_workers/",
               "/get_endpoint_logs/", "/get_autogroup_workers/", "/api/v0/endptjobs/",
               "/api/v0/workergroups/", "/api/v0/autojobs/"]
ROUTES_GET = ["/health", "/metrics", "/pubkey/", "/api/v0/endptjobs/", "/api/v0/workergroups/",
              "/api/v0/workers/", "/api/v0/events/"]
HOSTILE = [b"", b"{", b"[]", b"null", b"1", b'"x"', b"{}", b'{"a": NaN}', b"{'a': 1}",
           b'{"a": 1} x', b"\xff\xfe", b'{"a": "\xff"}', b"[" * 5000 + b"]" * 5000,
           b'{"endpoint": 1}', b'{"endpoint": ["x"]}', b'{"cost": "1"}', b'{"id": "1"}',
           b'{"id": -1}', b'{"id": 1e400}', b'{"id": 99999999999999999999999}',
           b'{"endpoint_name": "a b"}', b'{"endpoint_name": ""}', b'{"endpoint_name": "' +
           b"x" * 100 + b'"}', b'{"min_load": -1, "endpoint_name": "z"}',
           b'{"target_util": 0, "endpoint_name": "z"}', b'{"max_workers": 1.5, "endpoint_name": "z"}',
           b'{"sig_scheme": "rsa", "endpoint_name": "z"}', b'{"provider": "k8s", "endpoint_name": "h"}',
           b'{"endpoint_name": "h", "provider": "command", "launch": {"create": 1}}',
           b'{"endpoint_name": "h", "provider": "command", "launch": []}',
           b'{"endpoint_name": "h", "provider": "local", "launch": {"env": {"A": 1}}}',
           b'{"worker_id": 1, "request_idxs": "x"}', b'{"worker_id": 1, "requests": [1]}',
           b'{"endpoint": "h", "cost": -5}', b'{"endpoint": "h", "cost": 1e300}',
           b'{"endpoint": "h", "request_idx": -3}', b'{"endpoint": "h", "request_idx": 1.5}',
           b'{"id": 1, "max_perf": -1}', b'{"id": 1, "url": "ftp://x"}', b'{"id": 1, "cur_load": "a"}',
           b'{"id": 1, "error_msg": 5}', b'{"id": 1, "working_request_idxs": 5}',
           b'{"api_key": 5}', b'{"tail": "x", "endpoint": "h"}', b'{"endpoint": "a\\u0000b"}']


class Api(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(el.binpath("sgpu-engine"), os.X_OK):
            raise unittest.SkipTest("sgpu-engine not built")
        cls.eng = el.Engine("--unavailable-after-s", "3")

    @classmethod
    def tearDownClass(cls):
        cls.eng.close()

    def test_first_start_files(self):
        d = self.eng.dir
        for f in ("api_key", "signing_key.pem", "engine.db"):
            mode = stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode)
            self.assertEqual(mode & 0o077, 0, "%s is mode %o" % (f, mode))
        log = self.eng.logtext()
        self.assertIn("signing_key.pem", log)
        self.assertIn("api_key", log)
        self.assertNotIn(self.eng.key, log)  # the admin key is never logged
        self.assertNotIn("PRIVATE KEY", log)

    def test_crud_endpoint_and_group(self):
        e = self.eng
        eid = e.create_endpoint("crud", min_load=5, cold_workers=0, max_workers=3,
                                sig_scheme="fields-v1", inactivity_timeout=-1)
        st, r = e.call("POST", "/api/v0/endptjobs/", {"endpoint_name": "crud"})
        self.assertEqual(st, 409)
        self.assertEqual(r["error"], "conflict")
        st, r = e.call("GET", "/api/v0/endptjobs/%d/" % eid)
        self.assertEqual(st, 200)
        row = r["result"]
        self.assertEqual(row["min_load"], 5.0)
        self.assertEqual(row["min_workers"], 0)
        self.assertEqual(row["sig_scheme"], "fields-v1")
        self.assertEqual(row["endpoint_state"], "active")
        st, r = e.call("PUT", "/api/v0/endptjobs/%d/" % eid, {"target_util": 0.5, "min_workers": 1})
        self.assertEqual((st, r), (200, {"success": True}))
        st, r = e.call("GET", "/api/v0/endptjobs/")
        row = [x for x in r["results"] if x["id"] == eid][0]
        self.assertEqual(row["target_util"], 0.5)
        self.assertEqual(row["cold_workers"], 1)
        self.assertEqual(row["min_load"], 5.0)
        gid = e.create_group("crud", "command", {"create": "false", "destroy": "true"})
        st, r = e.call("GET", "/api/v0/workergroups/%d/" % gid)
        self.assertEqual(r["result"]["provider"], "command")
        self.assertEqual(r["result"]["launch"], {"create": "false", "destroy": "true"})
        st, r = e.call("PUT", "/api/v0/workergroups/%d/" % gid, {"gpu_ram": 48, "test_workers": 1})
        self.assertEqual(st, 200)
        st, r = e.call("GET", "/api/v0/autojobs/")
        self.assertEqual([g["gpu_ram"] for g in r["results"] if g["id"] == gid], [48.0])
        # failing creates are retried with back-off and logged
        el.wait_for(lambda: [x for x in e.events("crud") if x["kind"] == "op_failed"],
                    what="create failure event")
        st, r = e.call("DELETE", "/api/v0/workergroups/%d/" % gid)
        self.assertEqual(st, 200)
        st, r = e.call("DELETE", "/api/v0/endptjobs/%d/" % eid)
        self.assertEqual(st, 200)
        st, r = e.call("GET", "/api/v0/endptjobs/%d/" % eid)
        self.assertEqual(st, 404)
        el.wait_for(lambda: not [x for x in e.call("GET", "/api/v0/endptjobs/")[1]["results"]
                                 if x["id"] == eid], what="endpoint gone")

    def test_auth(self):
        e = self.eng
        for path in ("/api/v0/endptjobs/", "/api/v0/workers/", "/api/v0/events/",
                     "/api/v0/workergroups/"):
            st, r = e.call("GET", path, key=False)
            self.assertEqual(st, 401, path)
            self.assertEqual(r, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
            st, r = e.call("GET", path, key="wrong")
            self.assertEqual(st, 401)
        # key in the query string and in the body also work
        st, r = e.call("GET", "/api/v0/endptjobs/?api_key=" + e.key, key=False)
        self.assertEqual(st, 200)
        st, r = e.call("POST", "/api/v0/endptjobs/", {"endpoint_name": "viabody", "api_key": e.key},
                       key=False)
        self.assertEqual(st, 200)
        # endpoint keys cannot manage
        st, r = e.call("GET", "/api/v0/endptjobs/%d/" % r["result"])
        ek = r["result"]["api_key"]
        st, r = e.call("GET", "/api/v0/endptjobs/", key=ek)
        self.assertEqual(st, 403)
        st, r = e.call("POST", "/get_endpoint_workers/", {"endpoint": "viabody"}, key=ek)
        self.assertEqual((st, r), (200, []))

    def test_hostile_inputs_every_route(self):
        e = self.eng
        for path in ROUTES_POST:
            for body in HOSTILE:
                for method in ("POST", "PUT"):
                    with self.subTest(path=path, body=body[:40], method=method):
                        st, data, resp = e.raw(method, path, body,
                                               {"Authorization": "Bearer " + e.key})
                        self.assertLess(st, 500, data)
                        if st >= 400:
                            r = json.loads(data)
                            self.assertEqual(r["success"], False)
                            self.assertTrue(r["error"] and r["msg"])
        for path in ROUTES_GET:
            for q in ("", "?limit=-1", "?limit=abc", "?endpoint=nope", "?endpoint=%ff%00",
                      "?api_key=" + "x" * 5000, "?%%%"):
                with self.subTest(path=path, q=q):
                    st, data, _ = e.raw("GET", path + q, None, {"Authorization": "Bearer " + e.key})
                    self.assertLess(st, 500)
        for path in ("/", "/nope", "/api/v0/endptjobs/abc/", "/api/v0/endptjobs/1/2/",
                     "/api/v0/endptjobs/99999999999999999999/", "//route/", "/route/x"):
            st, data, _ = e.raw("GET", path, None, {"Authorization": "Bearer " + e.key})
            self.assertEqual(st, 404, path)
            self.assertEqual(json.loads(data)["error"], "not_found")
        st, data, _ = e.raw("DELETE", "/route/", b"{}")
        self.assertEqual(st, 405)
        self.assertEqual(json.loads(data)["error"], "method_not_allowed")
        # past libevent's hard limit (4 MiB) a body is refused from its Content-Length (413)
        # before it is read, by libevent itself (docs/engine.md, Errors)
        s = socket.create_connection((e.host, e.port), timeout=5)
        try:
            s.sendall(b"POST /route/ HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (5 << 20))
            self.assertIn(b" 413 ", s.recv(4096).split(b"\r\n")[0] + b" ")
        finally:
            s.close()
        # raw garbage on the socket
        for junk in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 3000 + b"\r\n",
                     b"\x00\x01\x02\r\n\r\n", b"POST /route/ HTTP/1.1\r\nContent-Length: -5\r\n\r\n"):
            s = socket.create_connection((e.host, e.port), timeout=5)
            try:
                s.sendall(junk)
                s.recv(1024)
            except OSError:
                pass
            finally:
                s.close()
        st, data, _ = e.raw("GET", "/health")
        self.assertEqual(st, 200)
        self.assertIsNone(e.proc.poll())


    def test_oversized_body_json_413(self):
        """A body over the 1 MiB API limit (up to libevent's 4 MiB) answers the JSON error shape
        on every route, also when the body is only whitespace."""
        e = self.eng
        for path, body in (("/route/", b'{"endpoint": "x", "pad": "' + b"a" * (1 << 20) + b'"}'),
                           ("/api/v0/endptjobs/", b" " * ((1 << 20) + 10)),
                           ("/health", b"{" * ((3 << 20) // 2))):
            with self.subTest(path=path):
                st, data, r = e.raw("POST", path, body, {"Authorization": "Bearer " + e.key},
                                    timeout=30)
                self.assertEqual(st, 413)
                self.assertTrue(r.getheader("Content-Type", "").startswith("application/json"))
                j = json.loads(data)
                self.assertEqual((j["success"], j["error"]), (False, "too_large"))
                self.assertIn("msg", j)
        st, _ = e.call("GET", "/health")
        self.assertEqual(st, 200)
    def test_random_bodies_every_route(self):
        """Seeded random JSON built from the keys each route reads, with values of every type."""
        import random
        rnd = random.Random(1127)
        keys = ["endpoint", "api_key", "cost", "request_idx", "replay_timeout", "id", "mtoken",
                "max_perf", "cur_load", "url", "error_msg", "num_requests_working", "loadtime",
                "working_request_idxs", "worker_id", "request_idxs", "requests", "success",
                "endpoint_name", "min_load", "max_workers", "target_util", "sig_scheme",
                "provider", "launch", "endpoint_id", "tail", "cold_workers", "gpu_ram"]

        def val(d=0):
            k = rnd.randrange(11 if d < 3 else 8)
            gens = [lambda: None, lambda: True, lambda: rnd.randint(-2**70, 2**70),
                    lambda: rnd.choice([0, 1, -1, 2**63, 7]),
                    lambda: rnd.uniform(-1e300, 1e300),
                    lambda: rnd.choice([0.0, -0.0, 1e-300, 0.5]),
                    lambda: "".join(chr(rnd.randrange(1, 0x2FFFF)) for _ in range(rnd.randrange(8))),
                    lambda: rnd.choice(["", "url", "local", "command", "http://x", "ep", "1"]),
                    lambda: [val(d + 1) for _ in range(rnd.randrange(4))],
                    lambda: {rnd.choice(keys): val(d + 1) for _ in range(rnd.randrange(4))},
                    lambda: {"create": val(d + 1), "destroy": "true", "env": val(d + 1)}]
            return gens[k]()

        e = self.eng
        for path in ROUTES_POST:
            for _ in range(120):
                body = {rnd.choice(keys): val() for _ in range(rnd.randrange(1, 6))}
                data = json.dumps(body, ensure_ascii=rnd.random() < 0.5).encode("utf-8", "surrogatepass")
                st, out, _ = e.raw("POST", path, data, {"Authorization": "Bearer " + e.key})
                self.assertLess(st, 500, (path, data[:200], out[:200]))
        st, _, _ = e.raw("GET", "/health")
        self.assertEqual(st, 200)

    def test_route_errors_are_precise(self):
        e = self.eng
        st, r = e.call("POST", "/route/", {"api_key": e.key, "cost": 1}, key=False)
        self.assertEqual((st, r["error"]), (400, "bad_request"))
        self.assertIn("endpoint", r["msg"])
        st, r = e.route("does-not-exist")
        self.assertEqual((st, r["error"]), (404, "not_found"))
        st, r = e.call("POST", "/route/", {"endpoint": "x", "api_key": e.key, "cost": True},
                       key=False)
        self.assertEqual(st, 400)
        self.assertIn("cost", r["msg"])

    def test_worker_status_and_delete_requests(self):
        e = self.eng
        st, r = e.call("POST", "/worker_status/", {"id": 424242, "max_perf": 1}, key=False)
        self.assertEqual((st, r["error"]), (404, "not_found"))
        st, r = e.call("POST", "/worker_status/", {"max_perf": 1}, key=False)
        self.assertEqual(st, 400)
        st, r = e.call("POST", "/delete_requests/",
                       {"worker_id": 424242, "mtoken": "", "request_idxs": [1], "success": True},
                       key=False)
        self.assertEqual(st, 404)

    def test_restart_keeps_config_and_readopts(self):
        e = el.Engine("--unavailable-after-s", "5")
        fleet = el.Fleet(e, perf=100.0, load_s=0.1)
        try:
            e.create_endpoint("keep", min_load=150, min_workers=0, max_workers=3,
                              target_util=1.0, cold_mult=1, sig_scheme="fields-v2")
            gone = e.create_endpoint("gone", min_workers=0)  # the highest id, then deleted
            e.call("DELETE", "/api/v0/endptjobs/%d/" % gone)
            el.wait_for(lambda: not [x for x in e.call("GET", "/api/v0/endptjobs/")[1]["results"]
                                     if x["id"] == gone], what="endpoint purged")
            e.create_group("keep", "command", fleet.launch)
            el.wait_for(lambda: len([w for w in e.workers("keep") if w["status"] == "idle"]) == 2,
                        what="two idle workers")
            before = {w["id"]: w for w in e.workers("keep")}
            st, g1 = e.route("keep", cost=1)
            key = e.key
            e.stop()
            e.start()
            self.assertEqual(e.key, key)
            st, r = e.call("GET", "/api/v0/endptjobs/")
            row = [x for x in r["results"] if x["endpoint_name"] == "keep"][0]
            self.assertEqual(row["min_load"], 150.0)
            self.assertEqual(row["sig_scheme"], "fields-v2")
            st, r = e.call("GET", "/api/v0/workergroups/")
            self.assertEqual(len(r["results"]), 1)
            # the fake workers kept reporting: same workers, still idle, nothing recreated
            el.wait_for(lambda: len([w for w in e.workers("keep") if w["status"] == "idle"]) == 2,
                        what="re-adopted")
            after = {w["id"]: w for w in e.workers("keep")}
            self.assertEqual(set(after), set(before))
            st, g2 = e.route("keep", cost=1)
            self.assertEqual(st, 200)
            self.assertIn("url", g2)
            if g2["url"] == g1["url"]:
                self.assertGreater(g2["reqnum"], g1["reqnum"])
            self.assertGreater(g2["request_idx"], g1["request_idx"])
            creates = [a for a in fleet.actions if a[1] == "create"]
            self.assertEqual(len(creates), 2)
            st, pem, _ = e.raw("GET", "/pubkey/")
            self.assertTrue(pem.startswith(b"-----BEGIN PUBLIC KEY-----"))
            # ids are never reused, even those of endpoints deleted before the restart
            self.assertGreater(e.create_endpoint("after", min_workers=0), gone)
        finally:
            fleet.close()
            e.close()


if __name__ == "__main__":
    unittest.main()
