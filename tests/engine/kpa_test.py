"""The `kpa` scaler (Knative's KPA, docs/engine.md "KPA policy") on the same machinery as ours:
fake workers behind the `command` provider, an open-loop client through /route/.  A step of
load converges to ceil(demand / perf / target_util) workers; every decision says it came from
the KPA with its windows; when the load stops the pool shrinks at most by half per decision
and goes to zero only after the scale-to-zero grace; no worker is stopped with work in flight.
The parameter is validated and listed.  Assertions are about order and bounds, never speed."""
import math
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402
from autoscale_test import Load, active, DOWN  # noqa: E402

FLAGS = ["--panic-window-s", "1", "--stable-window-s", "4", "--drain-grace-s", "1",
         "--unavailable-after-s", "5", "--error-backoff-s", "0.2"]
GRACE_S = 30  # KPA_SCALE_TO_ZERO_GRACE_S


class Kpa(unittest.TestCase):
    def setUp(self):
        if not os.access(el.binpath("sgpu-engine"), os.X_OK):
            raise unittest.SkipTest("sgpu-engine not built")
        self.eng = el.Engine(*FLAGS)
        self.fleet = el.Fleet(self.eng, perf=100.0, load_s=0.3)
        self.client = el.Client(self.eng, self.fleet, "ep", cost=10.0, nthreads=12)
        self.load = Load(self.client)

    def tearDown(self):
        self.load.close()
        self.client.close()
        self.fleet.close()
        if self._outcome.result.errors or self._outcome.result.failures:
            sys.stderr.write(self.eng.logtext()[-6000:])
        self.eng.close()

    def test_parameter(self):
        eid = self.eng.create_endpoint("ep", scaler="kpa", min_workers=0, max_workers=2)
        st, r = self.eng.call("GET", "/api/v0/endptjobs/")
        self.assertEqual([x["scaler"] for x in r["results"]], ["kpa"])
        for bad in ("KPA", 1, ""):
            st, r = self.eng.call("PUT", "/api/v0/endptjobs/%d/" % eid, {"scaler": bad})
            self.assertEqual(st, 400, (bad, r))
            self.assertIn("scaler", r["msg"])
        st, r = self.eng.call("PUT", "/api/v0/endptjobs/%d/" % eid, {"scaler": "sgpu"})
        self.assertEqual(st, 200, r)
        st, r = self.eng.call("GET", "/api/v0/endptjobs/")
        self.assertEqual([x["scaler"] for x in r["results"]], ["sgpu"])

    def test_step_then_idle(self):
        maxw = 8
        self.eng.create_endpoint("ep", scaler="kpa", min_load=0, min_workers=0, max_workers=maxw,
                                 target_util=0.9, cold_mult=1, target_queue_time=2,
                                 max_queue_time=1)
        self.eng.create_group("ep", "command", self.fleet.launch)
        # 30 req/s x cost 10 = 300 cost/s = 3 worker-equivalents at perf 100; target 0.9 -> 4
        want = math.ceil(300 / 100 / 0.9)
        self.load.rate = 30.0
        el.wait_for(lambda: len(active(self.fleet)) == want and
                    all(w.ready_at < time.time() for w in active(self.fleet)),
                    timeout=60, what="convergence to %d workers" % want)
        ev = self.eng.events("ep")
        dec = [e for e in ev if e["kind"] == "decision"]
        self.assertTrue(dec)
        for e in dec:
            self.assertEqual(e["inputs"]["scaler"], "kpa", e)
            for k in ("kpa_stable", "kpa_panic", "desired_stable", "desired_panic", "panicking"):
                self.assertIn(k, e["inputs"])
        self.assertTrue(all(e["reason"] for e in dec))
        # idle: down by at most half of the ready workers per decision, zero after the grace
        self.load.rate = 0.0
        el.wait_for(lambda: not self.client.outstanding(), timeout=30, what="all routed")
        last_req = self.client.last_request
        el.wait_for(lambda: len(active(self.fleet)) == 0, timeout=GRACE_S + 90,
                    what="scale to zero")
        to_zero = max(a[0] for a in self.fleet.actions if a[1] in DOWN)
        self.assertGreaterEqual(to_zero, last_req + GRACE_S - 0.5,
                                "scaled to zero before the grace period")
        targets = [e["inputs"]["a"] for e in self.eng.events("ep") if e["kind"] == "decision"]
        for prev, cur in zip(targets, targets[1:]):
            if cur < prev:
                self.assertGreaterEqual(cur, prev // 2 if prev > 1 else 0, targets)
        self.assertEqual(self.fleet.violations, [])
        self.assertLessEqual(self.fleet.max_live, maxw)
        self.assertEqual(self.client.errors, [])


if __name__ == "__main__":
    unittest.main()
