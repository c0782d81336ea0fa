"""Per-workergroup back-off and breaker for every way an instance fails (docs/engine.md,
"Failures, back-off and the breaker"): its create fails, it exits by itself, it never becomes
ready (a reported error_msg is covered end to end by tests/e2e/backoff_test.py).

Each case counts events, never wall time: the n-th failure's `backoff` event carries the delay
error_backoff_s x 2^(n-1), the next create comes after it, and at --error-breaker failures the
workergroup is `failing`: no more creates, /route/ answers 503 with the last error, until the
workergroup is updated or retried.
"""
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from enginelib import Engine, wait_for  # noqa: E402


def inputs(ev):
    i = ev["inputs"]
    return json.loads(i) if isinstance(i, str) else i


class Backoff(unittest.TestCase):
    def start(self, *flags):
        self.e = Engine("--error-backoff-s", "0.1", "--error-breaker", "3", *flags)
        self.addCleanup(self.e.close)
        self.e.create_endpoint("b", cold_workers=1, max_workers=1, inactivity_timeout=-1)

    def kinds(self, kind):
        return [ev for ev in self.e.events() if ev["kind"] == kind]

    def check_backoff(self, kind, failures=3):
        wait_for(lambda: self.kinds("workergroup_failing"), 120, what="breaker", interval=0.2)
        evs = self.e.events()
        creates = [ev for ev in evs if ev["kind"] == "create"]
        backoffs = [ev for ev in evs if ev["kind"] == "backoff"]
        self.assertEqual(len(creates), failures, [(ev["kind"], ev["reason"]) for ev in evs])
        self.assertEqual([inputs(b)["kind"] for b in backoffs], [kind] * failures)
        self.assertEqual([inputs(b)["failures"] for b in backoffs], list(range(1, failures + 1)))
        delays = [inputs(b)["delay_s"] for b in backoffs]
        self.assertEqual(delays, [0.1 * 2 ** k for k in range(failures)])
        for k in range(failures - 1):
            self.assertLess(backoffs[k]["id"], creates[k + 1]["id"])
            self.assertGreaterEqual(creates[k + 1]["ts"] + 0.05, backoffs[k]["ts"] + delays[k])
        st, r = self.e.call("GET", "/api/v0/workergroups/")
        g = r["results"][0]
        self.assertEqual((g["state"], g["failures"]), ("failing", failures))
        return g

    def route_503(self):
        st, r = self.e.route("b")
        self.assertEqual(st, 503, r)
        self.assertEqual(r["error"], "workergroup_failing")
        self.assertEqual(r["failures"], 3)
        self.assertTrue(r["last_error"])
        self.assertIn(r["last_error"], r["msg"])
        return r

    def test_create_fails_then_update_closes_the_breaker(self):
        self.start()
        gid = self.e.create_group("b", "command", {"create": "echo no capacity >&2; exit 1",
                                                   "destroy": "true"})
        g = self.check_backoff("create")
        self.assertIn("create failed", g["last_error"])
        self.route_503()
        time.sleep(1.5)  # the next delay would have been 0.8 s: still no create
        self.assertEqual(len(self.kinds("create")), 3)
        st, _ = self.e.call("PUT", "/api/v0/workergroups/%d/" % gid,
                            {"launch": {"create": "exit 2", "destroy": "true"}})
        self.assertEqual(st, 200)
        wait_for(lambda: len(self.kinds("create")) >= 4, 30, what="a create after the update")
        self.assertEqual([ev["reason"] for ev in self.kinds("workergroup_reset")], ["updated"])
        # metrics: failures by kind
        st, body, _ = self.e.raw("GET", "/metrics")
        self.assertRegex(body.decode(), r'sgpu_engine_instance_failures_total\{kind="create"\} '
                                        r'[3-9]')

    def test_instance_exits_by_itself(self):
        self.start()
        self.e.create_group("b", "local", {"launch_bin": "/bin/true"})
        g = self.check_backoff("exited")
        self.assertIn("instance exited", g["last_error"])
        self.route_503()
        # retry through the API: creates again
        st, r = self.e.call("POST", "/api/v0/workergroups/%d/retry/" % g["id"], {})
        self.assertEqual((st, r), (200, {"success": True}))
        wait_for(lambda: len(self.kinds("create")) >= 4, 30, what="a create after retry")
        st, r = self.e.call("GET", "/api/v0/workergroups/%d/retry/" % g["id"])
        self.assertEqual(st, 405)
        st, r = self.e.call("POST", "/api/v0/workergroups/999/retry/", {})
        self.assertEqual(st, 404)

    def test_never_ready(self):
        self.start("--ready-timeout-s", "0.3")
        self.e.create_group("b", "command", {"create": "true", "destroy": "true"})
        # a client that waits (held long polls, then polls again) learns of the breaker
        st, r = self.e.route("b")  # held up to --route-hold-ms (2 s): often answered by the 503
        answers = []
        while st == 200 and len(answers) < 100:
            self.assertNotIn("url", r)
            answers.append(st)
            st, r = self.e.route("b", request_idx=r["request_idx"])
        self.assertEqual(st, 503, r)
        self.assertEqual(r["error"], "workergroup_failing")
        g = self.check_backoff("not_ready")
        self.assertIn("not ready", g["last_error"])
        self.route_503()


if __name__ == "__main__":
    unittest.main()
