"""Issue 8, worker side: grants bind to the worker they were issued for (url, and the endpoint
when SGPU_GRANT_ENDPOINT is set) in all three schemes; numbers from the wire are finite and capped
before they reach any counter or report; a report the engine refuses never jams the worker;
unsigned grant costs, session slots and session bodies are bounded; no big parse happens
before a request is authenticated.  Each case fails on the code before the fix."""
import json
import os
import re
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import (GRANT_URL, Cryptodome_RSA, Sink, WorkerTestCase, envelope, grant,  # noqa: E402
                        tgi_payload, wait_for)

OTHER_URL = "http://198.51.100.1:41234"  # another worker of the fleet (maybe another tenant's)
JSON_CT = "application/json; charset=utf-8"
SCHEMES = ("url", "fields-v2", "fields-v1")


def metric(worker, name):
    text = worker.request("GET", "/metrics").body.decode()
    m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
    return float(m.group(1)) if m else None


def peak_rss_mb(worker):
    with open("/proc/%d/status" % worker.proc.pid) as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) / 1024.0


def report_bodies(sink):
    with sink.lock:
        return [p["raw"] for p in sink.posts if p["path"] == "/worker_status/"]


class GrantBinding(WorkerTestCase, unittest.TestCase):
    """Item 1: a valid grant for another worker (or endpoint) does not open this one."""

    def test_grant_for_another_worker_refused_in_every_scheme(self):
        for i, scheme in enumerate(SCHEMES):
            with self.subTest(scheme=scheme):
                if i:
                    self.tearDown()
                self.start({"SGPU_AUTH_SCHEME": scheme})
                n0 = self.stub_requests()
                wrong = grant(scheme, OTHER_URL, reqnum=10 + i, request_idx=70)
                r = self.worker.post("/generate", envelope(wrong, tgi_payload(4)))
                self.assertEqual(r.status, 401, r.body)
                self.assertEqual(r.header("Content-Type"), JSON_CT)
                self.assertEqual(r.json(), {
                    "error": "grant is for another worker: its url is not this worker's url",
                    "grant_url": OTHER_URL, "worker_url": GRANT_URL})
                self.assertEqual(metric(self.worker,
                                        'sgpu_worker_grants_refused_total{reason="wrong_worker"}'), 1)
                self.assertEqual(self.stub_requests(), n0)  # never forwarded
                # an honest grant for this worker still works (byte-exact Vast behaviour)
                ok = grant(scheme, GRANT_URL, reqnum=20 + i, request_idx=71)
                r = self.worker.post("/generate", envelope(ok, tgi_payload(4)))
                self.assertEqual(r.status, 200, r.body)
                # the refused grant's request_idx never reaches /delete_requests/
                dels = wait_for(lambda: [x["request_idx"] for p in self.sink.reports("/delete_requests/")
                                         for x in p["json"]["requests"]], 15, what="delete_requests")
                self.assertEqual(dels, [71])

    def stub_requests(self):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.stub.port, timeout=10)
        c.request("GET", "/stats")
        d = json.loads(c.getresponse().read())
        c.close()
        return d["requests"]

    def test_session_create_with_another_workers_grant(self):
        self.start({"BACKEND": "generic"})
        r = self.worker.post("/session/create", {"auth_data": grant("url", OTHER_URL), "payload": {}})
        self.assertEqual(r.status, 401)
        self.assertEqual(r.json()["worker_url"], GRANT_URL)
        self.assertEqual(self.worker.status()["requests"]["accepted"], 0)

    def test_endpoint_must_match_when_configured(self):
        for scheme in ("url", "fields-v2"):
            with self.subTest(scheme=scheme):
                if scheme != "url":
                    self.tearDown()
                self.start({"SGPU_AUTH_SCHEME": scheme, "SGPU_GRANT_ENDPOINT": "tenant-a"})
                wrong = grant(scheme, GRANT_URL, reqnum=1, endpoint="tenant-b")
                r = self.worker.post("/generate", envelope(wrong, tgi_payload(2)))
                self.assertEqual(r.status, 401, r.body)
                self.assertEqual(r.json(), {"error": "grant is for another endpoint than this worker's"})
                self.assertEqual(metric(self.worker,
                                        'sgpu_worker_grants_refused_total{reason="wrong_endpoint"}'), 1)
                right = grant(scheme, GRANT_URL, reqnum=2, endpoint="tenant-a")
                self.assertEqual(self.worker.post("/generate", envelope(right, tgi_payload(2))).status,
                                 200)

    def test_tampered_url_is_wrong_worker_not_a_crash(self):
        """Changing the url of an honest grant to this worker's url does not verify either."""
        self.start({})
        g = grant("url", OTHER_URL)
        g["url"] = GRANT_URL
        r = self.worker.post("/generate", envelope(g, tgi_payload(2)))
        self.assertEqual((r.status, r.body), (401, b""))


class WireNumbers(WorkerTestCase, unittest.TestCase):
    """Items 4 and 13: hostile workloads never jam reports or make them non-finite."""

    def test_forged_huge_workload_does_not_jam_reports(self):
        self.start({"SGPU_REPORT_INTERVAL": "1"})
        forged = grant("url", GRANT_URL, key=Cryptodome_RSA.generate(2048))
        r = self.worker.post("/generate", envelope(forged, tgi_payload(10 ** 16)))
        self.assertEqual(r.status, 401)
        r = self.worker.post("/generate", envelope(forged, {"inputs": "x", "parameters":
                                                            {"max_new_tokens": 1e16}}))
        self.assertEqual(r.status, 401)

        def rej():
            return sum(p["json"]["rej_load"] for p in self.sink.reports(ok_only=True)) >= 2e6
        wait_for(rej, 15, what="reports with rej_load")
        time_ok = len(self.sink.reports(ok_only=True))
        wait_for(lambda: len(self.sink.reports(ok_only=True)) > time_ok, 15, what="next report")
        # 2 x SGPU_MAX_WORKLOAD (1e6), and every report was accepted (none over the engine's 1e15)
        self.assertEqual(sum(p["json"]["rej_load"] for p in self.sink.reports(ok_only=True)), 2e6)
        self.assertEqual(metric(self.worker, "sgpu_worker_numbers_capped_total"), 2)
        self.assertIn("event=number_capped", self.worker.log())

    def test_infinite_workloads_stay_finite_in_reports(self):
        self.start({"BACKEND": "generic", "SGPU_WORKLOAD_FIELD": "n", "SGPU_REPORT_INTERVAL": "1",
                    "SGPU_MAX_QUEUE_TIME": "none"})
        g = grant("url", GRANT_URL)
        out = []

        def call():
            out.append(self.worker.post("/x", envelope(g, {"n": 1e308, "sleep_ms": 5000})).status)
        ts = [threading.Thread(target=call) for _ in range(2)]
        for t in ts:
            t.start()

        def busy():
            for p in self.sink.reports(ok_only=True):
                if p["json"]["num_requests_working"] == 2:
                    return p["json"]
        d = wait_for(busy, 15, what="report with both requests working")
        self.assertEqual(d["cur_load"], 2e6)
        for t in ts:
            t.join(30)
        self.assertEqual(out, [200, 200])
        wait_for(lambda: sum(p["json"]["cur_perf"] for p in self.sink.reports(ok_only=True)) >= 2e6,
                 15, what="reports of the served work")
        self.assertEqual(sum(p["json"]["cur_perf"] for p in self.sink.reports(ok_only=True)), 2e6)
        for raw in report_bodies(self.sink):
            self.assertNotIn(b"Infinity", raw)
            self.assertNotIn(b"NaN", raw)

    def test_refused_report_is_dropped_not_retried_forever(self):
        self.start({"SGPU_REPORT_INTERVAL": "1"})
        wait_for(lambda: self.sink.reports(ok_only=True), 15, what="first report")
        self.sink.fail["/worker_status/"] = 400
        forged = grant("url", GRANT_URL, key=Cryptodome_RSA.generate(2048))
        self.assertEqual(self.worker.post("/generate", envelope(forged, tgi_payload(77))).status, 401)
        wait_for(lambda: [p for p in self.sink.reports() if p["status"] == 400 and
                          p["json"]["rej_load"] == 77.0], 15, what="refused report")
        wait_for(lambda: "event=report_refused" in self.worker.log(), 15, what="report_refused log")
        n = len(self.sink.reports())
        wait_for(lambda: len(self.sink.reports()) >= n + 2, 15, what="two more refused reports")
        self.sink.fail.pop("/worker_status/")
        t = len(self.sink.reports())
        # the refused figures were dropped: the next accepted report starts from zero
        ok = wait_for(lambda: [p["json"] for p in self.sink.reports()[t:] if p["status"] == 200],
                      15, what="accepted report")
        self.assertEqual(ok[0]["rej_load"], 0.0)
        self.assertEqual(self.worker.log().count("event=report_refused"), 1)  # logged once
        self.assertGreaterEqual(metric(self.worker, "sgpu_worker_reports_refused_total"), 3)


class SessionBounds(WorkerTestCase, unittest.TestCase):
    """Items 2 and 10: unsigned cost cannot make the worker unroutable; one grant, one session."""

    def setUp(self):
        self.model = Sink()
        # generic backend without a benchmark: max_perf = SGPU_MAX_PERF 100, window 100 x 30 s
        self.start({"BACKEND": "generic", "MODEL_SERVER_URL": self.model.url,
                    "SGPU_REPORT_INTERVAL": "1", "SGPU_MAX_SESSIONS": "20"}, stub=False)

    def tearDown(self):
        super().tearDown()
        self.model.stop()

    def test_huge_cost_is_capped_per_grant_and_in_total(self):
        r = self.worker.post("/session/create", {"auth_data": grant("url", GRANT_URL, cost=1e14,
                                                                    request_idx=1), "payload": {}})
        self.assertEqual(r.status, 201, r.body)
        for i in range(2, 12):  # request_idx is unsigned: each forged one is "another grant"
            r = self.worker.post("/session/create", {"auth_data": grant(
                "url", GRANT_URL, cost=1e14, request_idx=i), "payload": {}})
            self.assertEqual(r.status, 201, r.body)

        def open_report():
            for p in self.sink.reports(ok_only=True):
                if p["json"]["num_requests_working"] == 11:
                    return p["json"]
        d = wait_for(open_report, 15, what="report with the sessions")
        self.assertEqual(d["cur_load"], 3000.0)  # one admission window, never 1.1e15
        # a plain request is still admitted
        self.assertEqual(self.worker.post("/q", envelope(grant("url", GRANT_URL), {"a": 1})).status, 200)

    def test_one_grant_one_session(self):
        g = grant("url", GRANT_URL, request_idx=5)
        self.assertEqual(self.worker.post("/session/create", {"auth_data": g, "payload": {}}).status, 201)
        r = self.worker.post("/session/create", {"auth_data": g, "payload": {}})
        self.assertEqual(r.status, 409)
        self.assertEqual(r.json(), {"error": "this grant already holds an open session"})


class ParseBeforeAuth(WorkerTestCase, unittest.TestCase):
    """Item 9: size and shape are checked before anything big is parsed."""

    def test_big_session_body_refused_unparsed(self):
        self.start({"BACKEND": "generic"})
        small = b'{"session_id": "x", "session_auth": [' + b"0," * 40000 + b"0]}"
        for route in ("/session/create", "/session/end", "/session/get", "/session/health"):
            r = self.worker.request("POST", route, small)
            self.assertEqual(r.status, 413, route)
            self.assertEqual(r.header("Content-Type"), "application/json")
            self.assertEqual(r.json(), {"error": "session request body is larger than 65536 bytes"})
        base = peak_rss_mb(self.worker)
        big = b'{"session_id": "x", "session_auth": [' + b"0," * (8 << 20) + b"0]}"
        self.assertEqual(self.worker.request("POST", "/session/end", big).status, 413)
        # a parse would cost ~30x the 16 MB body (about 500 MB)
        self.assertLess(peak_rss_mb(self.worker) - base, 200)
        self.assertEqual(self.worker.request("GET", "/ping").body, b"pong")

    def test_huge_auth_data_refused_unparsed(self):
        self.start({})
        base = peak_rss_mb(self.worker)
        for auth in (b"[" + b"0," * (8 << 20) + b"0]",
                     b'{"pad": [' + b"0," * (8 << 20) + b'0], "url": "%s"}' % GRANT_URL.encode()):
            body = b'{"auth_data": ' + auth + b', "payload": {"inputs": "x", "parameters": {}}}'
            r = self.worker.request("POST", "/generate", body)
            self.assertEqual(r.status, 422)
            self.assertEqual(r.header("Content-Type"), JSON_CT)
            self.assertEqual(r.json(), {"auth_data": "larger than 16384 bytes"})
        self.assertLess(peak_rss_mb(self.worker) - base, 200)
        # the same rule on the small-body path
        g = grant("url", GRANT_URL)
        g["pad"] = "x" * 17000
        r = self.worker.post("/generate", envelope(g, tgi_payload(2)))
        self.assertEqual((r.status, r.json()), (422, {"auth_data": "larger than 16384 bytes"}))
        del g["pad"]
        self.assertEqual(self.worker.post("/generate", envelope(g, tgi_payload(2))).status, 200)
        self.assertEqual(self.worker.request("GET", "/ping").body, b"pong")

    def test_big_payload_not_parsed_before_auth(self):
        """A workload path through an array needs the whole payload tree: on the large-body path
        it is built only once the grant verified."""
        self.start({"BACKEND": "generic", "SGPU_WORKLOAD_FIELD": "items.0.n",
                    "SGPU_MAX_QUEUE_TIME": "none"})
        base = peak_rss_mb(self.worker)
        forged = grant("url", GRANT_URL, key=Cryptodome_RSA.generate(2048))
        payload = b'{"items": [{"n": 7}], "pad": [' + b"0," * (8 << 20) + b"0]}"
        body = b'{"auth_data": ' + json.dumps(forged).encode() + b', "payload": ' + payload + b"}"
        r = self.worker.request("POST", "/echo", body)
        self.assertEqual(r.status, 401)
        self.assertLess(peak_rss_mb(self.worker) - base, 200)
        # with a valid grant the payload is parsed after all, for its workload
        small = b'{"items": [{"n": 7}], "pad": [' + b"0," * 20000 + b"0]}"
        body = (b'{"auth_data": ' + json.dumps(grant("url", GRANT_URL)).encode() + b', "payload": '
                + small + b"}")
        r = self.worker.request("POST", "/echo", body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, small)  # forwarded byte for byte
        wait_for(lambda: any(p["json"]["cur_perf"] == 7.0 for p in self.sink.reports(ok_only=True)),
                 15, what="report of the workload from the deferred parse")


if __name__ == "__main__":
    unittest.main()
