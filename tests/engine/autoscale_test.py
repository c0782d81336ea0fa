"""Autoscaling simulation on loopback: fake workers (command provider) that report like real ones,
an open-loop client that routes through /route/ (polling the global queue) and "sends" each
request to the granted fake worker.  Scenarios: a step then an idle period, a slow ramp.

Assertions are about order and bounds, never about speed: convergence is awaited while the load
keeps going; then the pool must stay put (no flapping); max_workers is never exceeded; no worker
is stopped or destroyed with work in flight; the last active worker goes only after
inactivity_timeout; every request is eventually served."""
import math
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402

FLAGS = ["--panic-window-s", "1", "--stable-window-s", "4", "--scale-down-delay-s", "2",
         "--drain-grace-s", "1", "--unavailable-after-s", "5", "--error-backoff-s", "0.2"]
UP = ("create", "start")
DOWN = ("stop", "destroy")


class Load:
    """Runs el.drive in a thread with a changeable rate."""

    def __init__(self, client):
        self.client = client
        self.rate = 0.0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        acc, last = 0.0, time.time()
        while not self.stop_ev.is_set():
            now = time.time()
            acc += self.rate * (now - last)
            last = now
            while acc >= 1.0:
                self.client.add(now)
                acc -= 1.0
            time.sleep(0.01)

    def close(self):
        self.stop_ev.set()
        self.t.join(timeout=5)


def active(fleet):
    return [w for w in fleet.live() if w.running]


class Autoscale(unittest.TestCase):
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

    def served_all(self, n):
        return lambda: (len(self.client.results) >= n and self.client.outstanding() == 0)

    def actions_between(self, t0, t1, kinds):
        return [a for a in self.fleet.actions if t0 <= a[0] <= t1 and a[1] in kinds]

    def test_step_then_idle(self):
        maxw = 8
        self.eng.create_endpoint("ep", min_load=0, min_workers=0, max_workers=maxw,
                                 target_util=0.9, cold_mult=1, target_queue_time=2,
                                 max_queue_time=1, inactivity_timeout=3)
        self.eng.create_group("ep", "command", self.fleet.launch)
        # step: 30 req/s x cost 10 = 300 workload/s; perf 100, util 0.9 -> ceil(3.33) = 4
        want = math.ceil(300 / 0.9 / 100)
        self.load.rate = 30.0
        el.wait_for(lambda: len(active(self.fleet)) == want and
                    all(w.ready_at < time.time() for w in active(self.fleet)),
                    timeout=60, what="convergence to %d workers" % want)
        # converged: the pool must now stay put while the load is steady (no flapping)
        t_conv = time.time()
        el.wait_for(lambda: time.time() > t_conv + 3, timeout=10)
        self.assertEqual(len(active(self.fleet)), want)
        self.assertEqual(self.actions_between(t_conv, time.time(), UP + DOWN), [],
                         "pool changed under steady load")
        # idle period
        self.load.rate = 0.0
        el.wait_for(self.served_all(1), timeout=30)
        el.wait_for(lambda: not self.client.outstanding(), timeout=30, what="all routed")
        el.wait_for(lambda: len(active(self.fleet)) == 0, timeout=60, what="scale to zero")
        last_req = self.client.last_request
        to_zero = max(a[0] for a in self.fleet.actions if a[1] in DOWN)
        self.assertGreaterEqual(to_zero, last_req + 3 - 0.25,
                                "scaled to zero before inactivity_timeout")
        self.assertEqual(self.fleet.violations, [])
        self.assertLessEqual(self.fleet.max_live, maxw)
        self.assertEqual(self.client.errors, [])
        # every decision is logged with inputs and a reason
        ev = self.eng.events("ep")
        dec = [e for e in ev if e["kind"] == "decision"]
        self.assertTrue(dec)
        for e in dec:
            self.assertIn("load", e["inputs"])
            self.assertIn("a", e["inputs"])
            self.assertTrue(e["reason"])
        acts = [e for e in ev if e["kind"] in ("create", "drain", "stop", "destroy")]
        self.assertTrue(all(e["reason"] and e["inputs"] for e in acts))

    def test_slow_ramp(self):
        maxw = 10
        self.eng.create_endpoint("ep", min_load=0, min_workers=0, max_workers=maxw,
                                 target_util=0.9, cold_mult=1, target_queue_time=2,
                                 max_queue_time=2, inactivity_timeout=0)
        self.eng.create_group("ep", "command", self.fleet.launch)
        t0 = time.time()
        dur = 8.0
        top = 40.0
        while time.time() - t0 < dur:
            self.load.rate = top * (time.time() - t0) / dur
            time.sleep(0.05)
        self.load.rate = top
        want = math.ceil(top * 10 / 0.9 / 100)  # 5
        el.wait_for(lambda: len(active(self.fleet)) == want and
                    all(w.ready_at < time.time() for w in active(self.fleet)),
                    timeout=60, what="convergence to %d workers" % want)
        t1 = time.time()
        el.wait_for(lambda: time.time() > t1 + 2.5, timeout=10)
        self.assertEqual(len(active(self.fleet)), want)
        # no flapping while the load only rose: never an up action after a down action
        acts = [a for a in self.fleet.actions if a[1] in UP + DOWN]
        first_down = next((i for i, a in enumerate(acts) if a[1] in DOWN), None)
        if first_down is not None:
            self.assertEqual([a for a in acts[first_down:] if a[1] in UP], [],
                             "scaled up again after scaling down: %r" % acts)
        self.load.rate = 0.0
        el.wait_for(lambda: not self.client.outstanding(), timeout=30, what="all routed")
        self.assertEqual(self.fleet.violations, [])
        self.assertLessEqual(self.fleet.max_live, maxw)
        self.assertEqual(self.client.errors, [])


if __name__ == "__main__":
    unittest.main()
