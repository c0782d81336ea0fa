"""/route/ long poll: a request that would get a "waiting" answer is held open and granted, in
FIFO order, the moment capacity frees (a /delete_requests/ for a finished grant, a report, a
worker becoming ready); a held request whose client disconnects leaves the queue; past
--route-hold-max the waiting answer comes at once. A request to an endpoint whose only loaded
worker is parked is served by that worker without waiting for a scaler tick and a client poll.

Reports are sent by the test itself (the fleet's reporter is idle), so capacity frees exactly
when the test says; every assertion is on what a single /route/ call answers, not on timing."""
import http.client
import json
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402


class Held(threading.Thread):
    """One /route/ call (no polling) on its own connection; .result = (status, body)."""

    def __init__(self, eng, endpoint):
        super().__init__(daemon=True)
        self.eng, self.endpoint, self.result = eng, endpoint, None
        self.start()

    def run(self):
        self.result = self.eng.route(self.endpoint, cost=10)


class RouteHold(unittest.TestCase):
    def setUp(self):
        self.eng = el.Engine("--route-hold-ms", "8000", "--route-hold-max", "2", tick_ms=50)
        self.fleet = el.Fleet(self.eng, perf=100.0, load_s=0.0, report_s=3600, park=False)

    def tearDown(self):
        self.fleet.close()
        self.eng.close()

    def qlen(self, name):
        st, r = self.eng.call("GET", "/api/v0/endptjobs/")
        return [x for x in r["results"] if x["endpoint_name"] == name][0]["queue_length"]

    def report(self, w, cur_load=0.0):
        body = w.report()
        body["cur_load"] = cur_load
        st, r = self.eng.call("POST", "/worker_status/", body, key=False)
        self.assertEqual(st, 200, r)

    def test_held_requests_granted_fifo_when_capacity_frees(self):
        e = self.eng
        # max_queue_time 0: any outstanding work makes the only worker full
        e.create_endpoint("lp", min_load=1, cold_workers=0, max_workers=1, target_util=1.0,
                          cold_mult=1, max_queue_time=0, target_queue_time=0,
                          inactivity_timeout=-1)
        e.create_group("lp", "command", self.fleet.launch)
        w = el.wait_for(lambda: list(self.fleet.workers.values()), what="worker created")[0]
        self.report(w)
        el.wait_for(lambda: [x for x in e.workers("lp") if x["status"] == "idle"], what="idle")
        st, a = e.route("lp", cost=10)
        self.assertIn("url", a)
        # the worker is full now: B and C are held, in this order
        b = Held(e, "lp")
        el.wait_for(lambda: self.qlen("lp") == 1, what="B queued")
        c = Held(e, "lp")
        el.wait_for(lambda: self.qlen("lp") == 2, what="C queued")
        # past --route-hold-max (2) the waiting answer comes at once
        st, d = e.route("lp", cost=10)
        self.assertEqual(st, 200)
        self.assertNotIn("url", d)
        self.assertIn("status", d)
        self.assertTrue(b.is_alive() and c.is_alive(), "B and C are held, not answered")
        # A's work is done (delete_requests): B, the oldest held request, gets the grant
        st, r = e.call("POST", "/delete_requests/", {
            "worker_id": w.id, "mtoken": w.mtoken, "request_idxs": [a["request_idx"]],
            "success": True}, key=False)
        self.assertEqual(st, 200, r)
        b.join(30)
        self.assertEqual(b.result[0], 200)
        self.assertIn("url", b.result[1], b.result)
        self.assertTrue(c.is_alive(), "C waits: the worker is full again with B")
        # a report showing no work frees the worker again: C
        self.report(w)
        c.join(30)
        self.assertEqual(c.result[0], 200)
        self.assertIn("url", c.result[1], c.result)
        self.assertLess(b.result[1]["request_idx"], c.result[1]["request_idx"])
        # D (not held) is still queued and is served when it polls
        self.report(w)
        st, d2 = e.route("lp", cost=10, request_idx=d["request_idx"])
        self.assertIn("url", d2)
        self.assertEqual(self.qlen("lp"), 0)

    def test_disconnected_held_request_leaves_the_queue(self):
        e = self.eng
        e.create_endpoint("dc", min_load=1, cold_workers=0, max_workers=1, target_util=1.0,
                          cold_mult=1, max_queue_time=0, target_queue_time=0,
                          inactivity_timeout=-1)
        e.create_group("dc", "command", self.fleet.launch)
        w = el.wait_for(lambda: list(self.fleet.workers.values()), what="worker created")[0]
        self.report(w)
        el.wait_for(lambda: [x for x in e.workers("dc") if x["status"] == "idle"], what="idle")
        st, a = e.route("dc", cost=10)
        self.assertIn("url", a)
        body = json.dumps({"endpoint": "dc", "api_key": e.key, "cost": 10}).encode()
        s = socket.create_connection((e.host, e.port), timeout=10)
        s.sendall(b"POST /route/ HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" %
                  (len(body), body))
        el.wait_for(lambda: self.qlen("dc") == 1, what="held")
        s.close()
        el.wait_for(lambda: self.qlen("dc") == 0, what="dropped after the client went away")
        # the engine is fine and the freed worker serves the next request at once
        self.report(w)
        st, b = e.route("dc", cost=10)
        self.assertIn("url", b)


class ParkedWake(unittest.TestCase):
    """The only loaded worker is parked (cold_workers=1, no load floor): the first request is
    served by it in the same /route/ call (resumed at once, granted when it reports ready)."""

    def test_first_request_to_parked_worker(self):
        e = el.Engine(tick_ms=50)
        fleet = el.Fleet(e, perf=100.0, load_s=0.1, report_s=0.1, park=True)
        try:
            e.create_endpoint("pk", min_load=0, cold_workers=1, max_workers=2, target_util=1.0,
                              cold_mult=1, max_queue_time=30, target_queue_time=0,
                              inactivity_timeout=0)
            e.create_group("pk", "command", fleet.launch)
            el.wait_for(lambda: [x["status"] for x in e.workers("pk")] == ["stopped"],
                        timeout=30, what="worker parked")
            st, g = e.route("pk", cost=10)
            self.assertEqual(st, 200)
            self.assertIn("url", g, g)
            self.assertFalse(fleet.violations, fleet.violations)
        finally:
            fleet.close()
            e.close()


if __name__ == "__main__":
    unittest.main()
