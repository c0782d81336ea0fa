"""Autoscaling simulation, part 2: a spike that overflows into the global queue with a
max_workers cap; parking (min_workers stopped with the model loaded) and resume on demand;
an erroring worker is replaced; a silent worker becomes unavailable and is not routed.
See autoscale_test.py for the harness and the rules (no timed assertions)."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402
from autoscale_test import DOWN, FLAGS, UP, active  # noqa: E402


class Spike(unittest.TestCase):
    def setUp(self):
        if not os.access(el.binpath("sgpu-engine"), os.X_OK):
            raise unittest.SkipTest("sgpu-engine not built")
        self.eng = el.Engine(*FLAGS)
        self.fleet = el.Fleet(self.eng, perf=100.0, load_s=0.3)
        self.client = el.Client(self.eng, self.fleet, "ep", cost=10.0, nthreads=16)

    def tearDown(self):
        self.client.close()
        self.fleet.close()
        if self._outcome.result.errors or self._outcome.result.failures:
            sys.stderr.write(self.eng.logtext()[-6000:])
        self.eng.close()

    def test_spike_capped_and_queue_served(self):
        maxw = 4
        self.eng.create_endpoint("ep", min_load=0, min_workers=0, max_workers=maxw,
                                 target_util=0.9, cold_mult=1, target_queue_time=0.5,
                                 max_queue_time=0.5, inactivity_timeout=0)
        self.eng.create_group("ep", "command", self.fleet.launch)
        n = 120  # 1200 workload at once; 4 workers x 100/s need 3 s
        now = time.time()
        for _ in range(n):
            self.client.add(now)
        el.wait_for(lambda: len(self.client.results) + len(self.client.errors) >= n, timeout=60,
                    what="all spike requests granted")
        self.assertEqual(self.client.errors, [])
        self.assertLessEqual(self.fleet.max_live, maxw)
        self.assertEqual(self.fleet.max_live, maxw, "the spike should use every allowed worker")
        st, text, _ = self.eng.raw("GET", "/metrics")
        queued = [ln for ln in text.decode().splitlines()
                  if ln.startswith('sgpu_engine_routes_total{result="queued"}')]
        self.assertTrue(queued and float(queued[0].split()[-1]) > 0, "nothing waited")
        waited = [ln for ln in text.decode().splitlines()
                  if ln.startswith("sgpu_engine_queue_wait_seconds_count")]
        self.assertTrue(waited and float(waited[0].split()[-1]) > 0)
        st, r = self.eng.call("GET", "/api/v0/endptjobs/")
        row = r["results"][0]
        self.assertEqual(row["perf_estimate"], 100.0)
        for k in ("queue_length", "active_target", "inactive_target", "predicted_load"):
            self.assertIn(k, row)
        # after the spike everything drains back to zero, never with work in flight
        el.wait_for(lambda: len(active(self.fleet)) == 0, timeout=60, what="back to zero")
        self.assertEqual(self.fleet.violations, [])
        self.assertLessEqual(self.fleet.max_live, maxw)

    def test_park_and_resume(self):
        # min_workers 2 with no load: two workers are created, loaded, then parked (stopped)
        self.eng.create_endpoint("ep", min_load=0, min_workers=2, max_workers=4,
                                 target_util=1.0, cold_mult=1, target_queue_time=5,
                                 max_queue_time=5, inactivity_timeout=2)
        self.eng.create_group("ep", "command", self.fleet.launch)
        el.wait_for(lambda: len([w for w in self.fleet.live() if not w.running]) == 2,
                    timeout=30, what="two parked workers")
        creates = [a for a in self.fleet.actions if a[1] == "create"]
        self.assertEqual(len(creates), 2)
        self.assertEqual(active(self.fleet), [])
        st, r = self.eng.call("POST", "/get_endpoint_workers/", {"endpoint": "ep"})
        self.assertEqual(st, 200)
        self.assertEqual(sorted(w["status"] for w in r), ["stopped", "stopped"])
        # a request arrives: a parked worker is resumed (start), not a new one created
        self.client.add(time.time())
        el.wait_for(lambda: len(self.client.results) == 1, timeout=30, what="request served")
        self.assertTrue([a for a in self.fleet.actions if a[1] == "start"])
        self.assertEqual(len([a for a in self.fleet.actions if a[1] == "create"]), 2)
        # after inactivity_timeout it parks again; the pool stays at min_workers loaded
        el.wait_for(lambda: len([w for w in self.fleet.live() if not w.running]) == 2,
                    timeout=30, what="parked again")
        self.assertEqual(len(self.fleet.live()), 2)
        self.assertEqual(self.fleet.violations, [])
        self.assertEqual(self.client.errors, [])

    def test_error_replaced_and_silent_unavailable(self):
        self.eng.create_endpoint("ep", min_load=150, min_workers=0, max_workers=4,
                                 target_util=1.0, cold_mult=1, target_queue_time=0,
                                 max_queue_time=100, inactivity_timeout=0)
        self.eng.create_group("ep", "command", self.fleet.launch)
        el.wait_for(lambda: len([w for w in self.eng.workers("ep") if w["status"] == "idle"]) == 2,
                    timeout=30, what="two idle workers")
        ws = self.fleet.live()
        bad = ws[0]
        bad.error_msg = "CUDA error: out of memory"
        el.wait_for(lambda: not bad.alive, timeout=30, what="errored worker destroyed")
        el.wait_for(lambda: len([w for w in self.eng.workers("ep") if w["status"] == "idle"]) == 2,
                    timeout=30, what="replacement ready")
        ev = self.eng.events("ep")
        self.assertTrue([e for e in ev if e["kind"] == "destroy" and e["worker_id"] == bad.id])
        self.assertTrue([e for e in ev if e["kind"] == "state" and e["worker_id"] == bad.id and
                         "CUDA" in e["reason"]])
        # a worker whose reports stop (process frozen) becomes unavailable and is not routed
        quiet = [w for w in self.fleet.live() if w is not bad][0]
        quiet.running = False  # stops reporting, as if hung
        el.wait_for(lambda: any(w["id"] == quiet.id and w["status"] == "unavailable"
                                for w in self.eng.workers("ep")), timeout=30,
                    what="unavailable")
        for _ in range(5):
            st, r = self.eng.route("ep", cost=1)
            self.assertEqual(st, 200)
            if "url" in r:
                self.assertNotEqual(r["url"], quiet.url)
        quiet.running = True  # reports again -> back to idle
        el.wait_for(lambda: any(w["id"] == quiet.id and w["status"] == "idle"
                                for w in self.eng.workers("ep")), timeout=30, what="idle again")
        self.assertNotIn(UP, DOWN)


if __name__ == "__main__":
    unittest.main()
