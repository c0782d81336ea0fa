"""G3 sessions (/session/create|end|get|health), requests carrying session_id,
expiry with the on_close_route call, max_sessions, the WORKER_HTTP_PORT listener,
and POST /pyworker/update.  The model server is a recording Python sink (generic
backend), so the on_close POST can be inspected."""
import itertools
import json
import os
import re
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import (Cryptodome_RSA, Sink, WorkerTestCase, envelope, grant,  # noqa: E402
                        raw_request, wait_for)

URL = "http://203.0.113.7:41234"
ENV = {"BACKEND": "generic", "PUBLIC_IPADDR": "203.0.113.7", "VAST_TCP_PORT_0": "41234",
       "SGPU_SESSION_GC": "0.1", "SGPU_REPORT_INTERVAL": "1"}
JSON_CT = "application/json; charset=utf-8"
_IDX = itertools.count(501)


_OTHER_KEY = []


def forged_grant(**kw):
    """A grant for this worker's url signed with a key the worker does not trust."""
    if not _OTHER_KEY:
        _OTHER_KEY.append(Cryptodome_RSA.generate(2048))
    return grant("url", URL, key=_OTHER_KEY[0], **kw)


class SessionBase(WorkerTestCase):
    def start_worker(self, env=None):
        self.model = Sink()
        e = dict(ENV, MODEL_SERVER_URL=self.model.url)
        e.update(env or {})
        return self.start(e, stub=False)

    def tearDown(self):
        super().tearDown()
        if getattr(self, "model", None):
            self.model.stop()

    def create(self, auth=None, **payload):
        # one /route/ answer per session, as the SDK does (a grant holds one open session)
        auth = auth or grant("url", URL, request_idx=next(_IDX), cost=42.0)
        return self.worker.post("/session/create", {"auth_data": auth, "payload": payload}), auth

    def sget(self, route, sid, auth):
        return self.worker.post(route, {"session_id": sid, "session_auth": auth})

    def model_posts(self, path):
        return [p for p in self.model.posts if p["path"] == path]


class Sessions(SessionBase, unittest.TestCase):
    def setUp(self):
        self.start_worker()

    def test_create_requires_a_valid_grant(self):
        """B16: /session/create verifies the grant."""
        r, _ = self.create(forged_grant())
        self.assertEqual((r.status, r.body), (401, b""))
        r = self.worker.request("POST", "/session/create", b"{nope")
        self.assertEqual((r.status, r.body), (422, b'{"error": "invalid JSON"}'))
        self.assertEqual(r.header("Content-Type"), JSON_CT)
        r = self.worker.post("/session/create", {"payload": {}})
        self.assertEqual(r.status, 422)
        r, _ = self.create(lifetime="long")
        self.assertEqual(r.status, 422)
        r, _ = self.create(on_close_route="http://169.254.169.254/x")  # model-server paths only
        self.assertEqual(r.status, 422)
        self.assertEqual(self.worker.status()["requests"]["accepted"], 0)
        t0 = time.time()
        r, _ = self.create(lifetime=30)
        self.assertEqual(r.status, 201, r.body)
        self.assertEqual(r.header("Content-Type"), JSON_CT)
        d = r.json()
        self.assertEqual(list(d), ["session_id", "expiration"])
        self.assertRegex(d["session_id"], r"^[A-Za-z0-9]{13}$")
        self.assertIsInstance(d["expiration"], float)
        self.assertGreaterEqual(d["expiration"], t0 + 30 - 0.01)
        self.assertLessEqual(d["expiration"], time.time() + 30 + 0.01)
        self.assertEqual(self.worker.request("GET", "/session/create").status, 405)

    def test_unauthenticated_requests_cannot_probe_or_extend(self):
        """B15: the session is looked up (and extended) only after the grant verified."""
        r, auth = self.create(lifetime=100)
        sid = r.json()["session_id"]
        exp0 = self.sget("/session/get", sid, auth).json()["expiration"]
        forged = forged_grant()
        for s in (sid, "AAAAAAAAAAAAA", "x"):
            r = self.worker.post("/any", envelope(forged, {"q": 1}, session_id=s))
            self.assertEqual((r.status, r.body), (401, b""), s)  # same answer, known or not
        self.assertEqual(self.sget("/session/get", sid, auth).json()["expiration"], exp0)
        self.assertEqual(len(self.model_posts("/any")), 0)
        # a verified grant with an unknown id: 410
        r = self.worker.post("/any", envelope(grant("url", URL), {"q": 1}, session_id="AAAAAAAAAAAAA"))
        self.assertEqual((r.status, r.body), (410, b'{"error": "invalid session"}'))
        # a verified grant with the live id: forwarded, session extended by its lifetime
        r = self.worker.post("/any", envelope(grant("url", URL), {"q": 2}, session_id=sid))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(self.model_posts("/any")[-1]["json"], {"q": 2})
        exp1 = self.sget("/session/get", sid, auth).json()["expiration"]
        self.assertAlmostEqual(exp1, exp0 + 100, delta=0.01)
        # ... but never beyond now + SGPU_SESSION_MAX_TTL (3600 s)
        for _ in range(40):
            self.worker.post("/any", envelope(grant("url", URL), {"q": 3}, session_id=sid))
        exp2 = self.sget("/session/get", sid, auth).json()["expiration"]
        self.assertLessEqual(exp2, time.time() + 3600 + 0.01)
        self.assertGreater(exp2, time.time() + 3500)

    def test_end_get_health_bodies(self):
        r, auth = self.create(lifetime=50, on_close_route="/closed", on_close_payload={"a": [1]})
        sid = r.json()["session_id"]
        exp = r.json()["expiration"]
        r = self.sget("/session/get", sid, auth)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Type"), JSON_CT)
        d = r.json()
        self.assertEqual(list(d), ["session_id", "auth_data", "lifetime", "expiration", "created_at",
                                   "on_close_route", "on_close_payload"])
        self.assertEqual(d["session_id"], sid)
        self.assertEqual(d["auth_data"], auth)
        self.assertEqual((d["lifetime"], d["expiration"]), (50.0, exp))
        self.assertAlmostEqual(d["created_at"], exp - 50, delta=0.01)
        self.assertEqual((d["on_close_route"], d["on_close_payload"]), ("/closed", {"a": [1]}))
        self.assertEqual(self.sget("/session/health", sid, auth).body, b'{"ok": true}')
        self.assertEqual(self.sget("/session/health", "nosuchsession", auth).body, b'{"ok": false}')
        bad = dict(auth, cost=1.0)
        for route in ("/session/get", "/session/health", "/session/end"):
            r = self.sget(route, sid, bad)
            self.assertEqual((r.status, r.body), (401, b'{"error": "session_auth is not valid"}'), route)
            r = self.worker.post(route, {"session_auth": auth})
            self.assertEqual((r.status, r.body), (422, b'{"error": "missing session_id"}'), route)
        r = self.sget("/session/get", "nosuchsession", auth)
        self.assertEqual((r.status, r.body), (400, b'{"error": "session does not exist"}'))
        r = self.sget("/session/end", "nosuchsession", auth)
        self.assertEqual((r.status, r.body), (400, b'{"error": "session with id nosuchsession not found"}'))
        # session_auth equality is Python dict equality (key order does not matter)
        r = self.sget("/session/end", sid, dict(reversed(list(auth.items()))))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.body, ('{"ended": true, "removed_session": "%s"}' % sid).encode())
        r = self.sget("/session/end", sid, auth)
        self.assertEqual((r.status, r.body), (410, b'{"error": "session already closed"}'))
        self.assertEqual(self.sget("/session/health", sid, auth).body, b'{"ok": false}')
        p = wait_for(lambda: self.model_posts("/closed"), 10, what="on_close call")[0]
        self.assertEqual(p["json"], {"a": [1], "session_id": sid})

    def test_expiry_on_close_and_reports(self):
        auth = grant("url", URL, request_idx=777, cost=3000.0)
        r, _ = self.create(auth, lifetime=1.5, on_close_route="/bye", on_close_payload=[1, 2])
        sid = r.json()["session_id"]

        def open_report():
            for p in self.sink.reports(ok_only=True):
                if p["json"]["num_requests_working"] == 1:
                    return p["json"]
        d = wait_for(open_report, 10, what="report with the open session")
        self.assertEqual(d["working_request_idxs"], [777])
        self.assertEqual(d["cur_load"], 3000.0)
        # the session's cost is load, not queue: 3000 is the whole 30 s window at max_perf
        # 100, yet a plain request is admitted (sessions are not in the 429 estimate)
        r = self.worker.post("/any", envelope(grant("url", URL), {"q": 1}))
        self.assertEqual(r.status, 200, r.body)
        p = wait_for(lambda: self.model_posts("/bye"), 10, what="on_close after expiry")[0]
        t_closed = time.monotonic()
        self.assertEqual(p["json"], {"payload": [1, 2], "session_id": sid})
        self.assertEqual(self.sget("/session/health", sid, auth).body, b'{"ok": false}')
        dels = wait_for(lambda: [r for p in self.sink.reports("/delete_requests/")
                                 for r in p["json"]["requests"] if r["request_idx"] == 777], 10,
                        what="delete_requests")
        self.assertEqual([(r["success"], r["status"]) for r in dels], [(True, "Success")])
        last = wait_for(lambda: [p["json"] for p in self.sink.reports(ok_only=True)
                                 if p["t"] > t_closed], 10, what="report after close")[0]
        self.assertEqual(last["working_request_idxs"], [])
        self.assertEqual(last["num_requests_working"], 0)
        self.assertEqual(last["cur_load"], 0.0)

    def test_on_close_failure_is_harmless(self):
        self.model.fail["/broken"] = 500
        r, auth = self.create(on_close_route="/broken")
        sid = r.json()["session_id"]
        self.assertEqual(self.sget("/session/end", sid, auth).status, 200)
        wait_for(lambda: self.model_posts("/broken"), 10, what="on_close call")
        self.assertEqual(self.worker.request("GET", "/ping").body, b"pong")


class InFlight(WorkerTestCase, unittest.TestCase):
    def test_end_aborts_the_sessions_requests(self):
        """Closing a session aborts its in-flight requests (the stub sees the cancel); other
        requests are untouched."""
        import threading
        self.start(dict(ENV), stub_log=False)
        auth = grant("url", URL, request_idx=9)
        r = self.worker.post("/session/create", {"auth_data": auth, "payload": {}})
        sid = r.json()["session_id"]
        res = {}
        t = threading.Thread(target=lambda: res.update(r=self.worker.post(
            "/slow", envelope(grant("url", URL), {"sleep_ms": 20000}, session_id=sid))))
        t.start()
        wait_for(lambda: self.stub.stats()["in_flight"] == 1, 10, what="session request upstream")
        r = self.worker.post("/session/end", {"session_id": sid, "session_auth": auth})
        self.assertEqual(r.status, 200, r.body)
        t.join(15)
        self.assertEqual((res["r"].status, res["r"].body), (410, b'{"error": "session closed"}'))
        wait_for(lambda: self.stub.stats()["cancelled"] == 1, 10, what="upstream aborted")
        r = self.worker.post("/echo", envelope(grant("url", URL), {"x": 1}))
        self.assertEqual((r.status, r.json()), (200, {"x": 1}))


class MaxSessions(SessionBase, unittest.TestCase):
    def test_limit_then_room_again(self):
        self.start_worker({"SGPU_MAX_SESSIONS": "2"})
        made = [self.create() for _ in range(2)]
        self.assertEqual([r.status for r, _ in made], [201, 201])
        r, _ = self.create()
        self.assertEqual((r.status, r.body), (429, b""))
        r0, a0 = made[0]
        self.assertEqual(self.sget("/session/end", r0.json()["session_id"], a0).status, 200)
        self.assertEqual(self.create()[0].status, 201)

    def test_minus_one_is_unlimited(self):
        """B20: -1 means unlimited, not 'always 429'."""
        self.start_worker({"SGPU_MAX_SESSIONS": "-1"})
        self.assertEqual({self.create()[0].status for _ in range(12)}, {201})

    def test_default_is_10(self):
        self.start_worker()
        self.assertEqual([self.create()[0].status for _ in range(11)], [201] * 10 + [429])


class PlainListener(SessionBase, unittest.TestCase):
    def test_worker_http_port_serves_only_session_end(self):
        self.start_worker({"WORKER_HTTP_PORT": "0"})
        port = int(wait_for(lambda: re.search(r"event=listening_http port=(\d+)", self.worker.log()),
                            10, what="second listener").group(1))
        self.assertNotEqual(port, self.worker.port)
        r, auth = self.create()
        sid = r.json()["session_id"]

        def post(path, obj):
            body = json.dumps(obj).encode()
            raw = raw_request(port, b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                              % (path.encode(), len(body)) + body)
            return raw.split(b"\r\n", 1)[0], raw.split(b"\r\n\r\n", 1)[1]
        st, body = post("/session/create", {"auth_data": auth, "payload": {}})
        self.assertIn(b" 404 ", st)
        st, body = post("/session/end", {"session_id": sid, "session_auth": auth})
        self.assertIn(b" 200 ", st)
        self.assertEqual(json.loads(body), {"ended": True, "removed_session": sid})

    def test_off_without_tls(self):
        self.start_worker()
        self.assertNotIn("listening_http", self.worker.log())


class Update(SessionBase, unittest.TestCase):
    def test_token_required(self):
        flag = os.path.join(self._tmp_dir(), "force_update")  # per test, never /
        self.start_worker({"MASTER_TOKEN": "s3cret", "SGPU_UPDATE_FLAG_FILE": flag})
        for hdr in ({}, {"Authorization": ""}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer s3cre"}, {"Authorization": "Bearer s3cretX"},
                    {"Authorization": "s3cret2"}):
            r = self.worker.request("POST", "/pyworker/update", b"", headers=hdr)
            self.assertEqual((r.status, r.body), (401, b'{"error": "unauthorized"}'), hdr)
            self.assertFalse(os.path.exists(flag))
        r = self.worker.request("POST", "/pyworker/update", b"", headers={"Authorization": "Bearer s3cret"})
        self.assertEqual((r.status, r.body), (200, b'{"ok": true}'))
        self.assertEqual(r.header("Content-Type"), JSON_CT)
        self.assertTrue(os.path.exists(flag))
        os.unlink(flag)
        r = self.worker.request("POST", "/pyworker/update", b"", headers={"Authorization": "s3cret"})
        self.assertEqual(r.status, 200)
        self.assertEqual(os.path.getsize(flag), 0)
        self.assertEqual(self.worker.request("GET", "/pyworker/update").status, 405)

    def test_write_failure_is_500(self):
        flag = os.path.join(self._tmp_dir(), "no", "such", "dir", "flag")
        self.start_worker({"MASTER_TOKEN": "t", "SGPU_UPDATE_FLAG_FILE": flag})
        r = self.worker.request("POST", "/pyworker/update", b"", headers={"Authorization": "Bearer t"})
        self.assertEqual(r.status, 500)
        self.assertTrue(r.json()["error"].startswith("failed to write file: "), r.body)

    def test_empty_master_token_disables_the_route(self):
        """B19: with MASTER_TOKEN unset or empty nothing matches, not even an empty header."""
        for env in ({}, {"MASTER_TOKEN": ""}):
            flag = os.path.join(self._tmp_dir(), "flag")
            self.start_worker(dict(env, SGPU_UPDATE_FLAG_FILE=flag))
            for hdr in ({}, {"Authorization": ""}, {"Authorization": "Bearer "},
                        {"Authorization": "Bearer"}):
                r = self.worker.request("POST", "/pyworker/update", b"", headers=hdr)
                self.assertEqual((r.status, r.body), (401, b'{"error": "unauthorized"}'), (env, hdr))
            self.assertFalse(os.path.exists(flag))
            self.tearDown()
            self.worker = self.model = self.stub = self.sink = self._tmp = None

    def _tmp_dir(self):
        d = tempfile.TemporaryDirectory(prefix="sgpu-upd-")
        self.addCleanup(d.cleanup)
        return d.name


if __name__ == "__main__":
    unittest.main()
