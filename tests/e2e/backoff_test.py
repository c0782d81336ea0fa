"""End to end (issue 15): a model that cannot pass the default benchmark is served, and a model
that always fails neither churns instances nor leaves clients waiting.

Real processes: sgpu-engine (local provider) -> sgpu-launch -> sgpu-model + sgpu-worker, and
the `sgpu` client.

- small context: a GGUF written by `sgpu-model init-tiny --ctx 256` (the default TGI benchmark,
  250 words + 256 new tokens, is ~1000 tokens there): with the benchmark ON, the worker sizes it
  from /info, becomes ready with a measured max_perf, and `sgpu call` is served;
- always failing model command: creates follow the workergroup's exponential back-off (the
  delay in each `backoff` event doubles and no create comes before it has passed) and stop at the
  breaker (--error-breaker 3): the workergroup is `failing` with the last error in `sgpu
  workergroup list`, `sgpu endpoint list`, /metrics and the events; /route/ answers 503 with
  that error and `sgpu call` prints it at once; `sgpu workergroup retry` creates again.
Counts events, never wall time: the back-off base is small (--error-backoff-s 0.2) only so that
the test is quick.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack_test as st  # noqa: E402  (not `from ... import StackTest`: its tests would run here)

BIN, MISSING, read, wait_for = st.BIN, st.MISSING, st.read, st.wait_for

SERVE_ENV = {"BACKEND": "tgi", "MODEL_LOAD_LOG_MSG": "event=model_loaded",
             "MODEL_ERROR_LOG_MSGS": "event=fatal", "MODEL_HEALTH_ENDPOINT": "/health",
             "SGPU_HEALTH_INTERVAL": "1", "SGPU_REPORT_INTERVAL": "1"}


@unittest.skipIf(MISSING, "not built: %s" % MISSING)
class BackoffTest(st.StackTest):
    ENGINE_ARGS = ["--error-backoff-s", "0.2", "--error-breaker", "3"]

    # the stack tests themselves run in stack_test.py
    test_scale_from_zero_then_kill9_healed_by_launcher = None
    test_model_crash_loop_is_error_at_engine_and_replaced = None
    test_engine_sigterm_drains_accepted_request = None

    def setUp(self):
        # StackTest.setUp with the back-off flags (StackTest.tearDown cleans up)
        self.tmp = tempfile.mkdtemp(prefix="sgpu-e2e-backoff-")
        self.data = os.path.join(self.tmp, "data")
        self.elog = open(os.path.join(self.tmp, "engine.log"), "w")
        self.bg = []
        self.engine = subprocess.Popen(
            [os.path.join(BIN, "sgpu-engine"), "--data-dir", self.data, "--listen",
             "127.0.0.1:0", "--tick-ms", "50", "--drain-grace-s", "0.5"] + self.ENGINE_ARGS,
            stdout=self.elog, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: os.path.exists(os.path.join(self.data, "engine.addr")) and
                 os.path.getsize(os.path.join(self.data, "engine.addr")) > 0,
                 what="engine address")
        self.env = dict(os.environ, SGPU_DATA_DIR=self.data)
        for k in ("SGPU_ENGINE", "SGPU_API_KEY"):
            self.env.pop(k, None)

    def engine_url(self):
        return read(os.path.join(self.data, "engine.addr")).strip()

    def kinds(self, kind):
        return [e for e in self.events() if e["kind"] == kind]

    def test_small_context_model_passes_the_sized_benchmark(self):
        gguf = os.path.join(self.tmp, "ctx256.gguf")
        subprocess.run([os.path.join(BIN, "sgpu-model"), "init-tiny", gguf, "--ctx", "256"],
                       check=True, capture_output=True, timeout=60)
        cmd = "'%s' serve --model '%s' --port {model_port} --threads 1 --max-batch 4" % (
            os.path.join(BIN, "sgpu-model"), gguf)
        self.ok("endpoint", "create", "e2e", "cold_workers=1", "max_workers=1",
                "inactivity_timeout=-1")
        env = dict(SERVE_ENV, SGPU_BENCHMARK="true", SGPU_BENCHMARK_RUNS="1",
                   SGPU_BENCHMARK_CONCURRENCY="2")
        self.ok("workergroup", "create", "--endpoint", "e2e", "--launch",
                json.dumps({"model_cmd": cmd, "env": env}))
        ready = wait_for(lambda: [w for w in self.workers() if w["status"] == "idle"], 120,
                         what="a ready worker", step=0.3)
        self.assertGreater(ready[0]["measured_perf"], 0)
        r = self.ok("call", "--endpoint", "e2e", "--data",
                    '{"inputs": "Hello", "parameters": {"max_new_tokens": 8}}', "--max-time", "60")
        self.assertIn("generated_text", json.loads(r.stdout))
        dlog = read(os.path.join(self.data, "workers", str(ready[0]["id"]), "debug.log"))
        self.assertIn("event=benchmark_limits status=200 max_total_tokens=256", dlog)
        self.assertIn("event=benchmark_done", dlog)
        self.assertNotIn("Benchmark warm-up failed", dlog)
        self.assertEqual(self.kinds("backoff"), [])  # nothing failed

    def test_failing_model_backs_off_then_breaker_then_503_and_retry(self):
        self.ok("endpoint", "create", "e2e", "cold_workers=1", "max_workers=1",
                "inactivity_timeout=-1")
        self.ok("workergroup", "create", "--endpoint", "e2e", "--launch", json.dumps({
            "model_cmd": "echo boom: no GPU >&2; exit 3",
            "args": ["--max-model-restarts", "0", "--restart-delay", "0.05"],
            "env": SERVE_ENV}))
        failing = wait_for(lambda: self.kinds("workergroup_failing"), 180,
                           what="the breaker to open", step=0.5)
        self.assertEqual(len(failing), 1)
        # ---- the back-off, from the events ----
        evs = self.events()
        creates = [e for e in evs if e["kind"] == "create"]
        backoffs = [e for e in evs if e["kind"] == "backoff"]
        self.assertEqual(len(creates), 3, [e["reason"] for e in evs])
        self.assertEqual(len(backoffs), 3)
        delays = [json.loads(b["inputs"])["delay_s"] if isinstance(b["inputs"], str)
                  else b["inputs"]["delay_s"] for b in backoffs]
        self.assertEqual(delays, [0.2, 0.4, 0.8])
        fails = [(json.loads(b["inputs"]) if isinstance(b["inputs"], str) else b["inputs"])
                 ["failures"] for b in backoffs]
        self.assertEqual(fails, [1, 2, 3])
        for k in range(2):  # create k+1 only after failure k's delay (never before it)
            self.assertLess(backoffs[k]["id"], creates[k + 1]["id"])
            self.assertGreaterEqual(creates[k + 1]["ts"] + 0.05, backoffs[k]["ts"] + delays[k])
        self.assertIn("model server exited", backoffs[-1]["reason"])
        # ---- creates stopped: a while later still 3 (the next delay would have been 1.6 s) ----
        time.sleep(4)
        self.assertEqual(len(self.kinds("create")), 3)
        # ---- visible everywhere ----
        wgs = json.loads(self.ok("workergroup", "list", "--json").stdout)
        self.assertEqual(wgs[0]["state"], "failing")
        self.assertEqual(wgs[0]["failures"], 3)
        self.assertIn("model server exited", wgs[0]["last_error"])
        out = self.ok("workergroup", "list").stdout
        self.assertIn("failing", out)
        self.assertIn("last error: ", out)
        eps = json.loads(self.ok("endpoint", "list", "--json").stdout)
        self.assertEqual(eps[0]["workergroup_state"], "failing")
        self.assertIn("model server exited", eps[0]["last_error"])
        self.assertIn("model server exited", self.ok("endpoint", "list").stdout)
        metrics = urllib.request.urlopen(self.engine_url() + "/metrics", timeout=10).read()
        metrics = metrics.decode()
        self.assertIn('sgpu_engine_workergroup_failing{endpoint="e2e",workergroup="1"} 1',
                      metrics)
        self.assertIn('sgpu_engine_workergroup_failures{endpoint="e2e",workergroup="1"} 3',
                      metrics)
        # ---- clients learn why, at once ----
        r = self.sgpu("call", "--endpoint", "e2e", "--data", '{"inputs": "hi"}', "--max-time",
                      "100")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("workergroup_failing", r.stderr)
        self.assertIn("model server exited", r.stderr)
        self.assertIn("sgpu workergroup retry 1", r.stderr)
        # ---- retry: creates again (and fails again: the count starts over) ----
        self.ok("workergroup", "retry", "1")
        wait_for(lambda: len(self.kinds("create")) >= 4, 60, what="a create after retry",
                 step=0.3)
        self.assertEqual(len(self.kinds("workergroup_reset")), 1)


if __name__ == "__main__":
    unittest.main()
