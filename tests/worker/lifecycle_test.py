"""Lifecycle: MODEL_LOG patterns (load, error, rotation, truncation), benchmark and
its cache, healthcheck threshold, drain on SIGTERM."""
import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import (Stub, Worker, WorkerTestCase, envelope, tgi_payload,  # noqa: E402
                        wait_for)

AUTH = {"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 7, "signature": "x", "url": "u"}


def readf(path):
    with open(path) as f:
        return f.read()


def append(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")


class LogPatterns(WorkerTestCase, unittest.TestCase):
    def test_load_line_then_ready_and_loadtime(self):
        self.start({"UNSECURED": "1"}, load_delay_ms=2000, wait_ready=False)
        self.assertIn(self.worker.status()["phase"], ("loading", "benchmarking"))
        self.worker.wait_phase("ready")
        st = self.worker.status()
        self.assertGreater(st["loadtime"], 0.1)
        self.assertGreater(st["max_perf"], 0)

    def test_error_pattern_is_fatal_and_reported(self):
        self.start({"UNSECURED": "1", "MODEL_ERROR_LOG_MSGS": "CUDA out of memory|FATAL BOOM"})
        append(self.model_log, "2026 ERROR something FATAL BOOM happened")
        self.worker.wait_phase("error", 5)
        self.assertEqual(self.worker.status()["last_error"], "FATAL BOOM")
        r = self.worker.post("/generate", envelope(AUTH, tgi_payload()))
        self.assertEqual(r.status, 503)
        wait_for(lambda: [p for p in self.sink.reports() if p["json"]["error_msg"] == "FATAL BOOM"], 5,
                 what="error report")
        # repeated load lines do not reset anything (B10)
        append(self.model_log, '{"message":"Connected","target":"text_generation_router"}')
        time.sleep(0.3)
        self.assertEqual(self.worker.status()["phase"], "error")

    def test_error_seen_during_benchmark(self):
        cfg = os.path.join(tempfile.mkdtemp(), "h.json")
        with open(cfg, "w") as f:
            json.dump({"handlers": [{"route": "/generate", "workload": "tgi", "payload": "tgi",
                                     "benchmark": {"inputs": "x", "parameters": {"max_new_tokens": 1},
                                                   "sleep_ms": 20000}}]}, f)
        self.start({"UNSECURED": "1", "SGPU_CONFIG": cfg, "MODEL_ERROR_LOG_MSGS": "BOOM"},
                   wait_ready=False)
        self.worker.wait_phase("benchmarking")
        append(self.model_log, "BOOM")
        self.worker.wait_phase("error", 5)  # B10: not after the benchmark
        wait_for(lambda: self.stub.stats()["cancelled"] >= 1, 5, what="benchmark request aborted")
        os.unlink(cfg)

    def test_log_created_later_rotated_and_truncated(self):
        self.start({"UNSECURED": "1", "MODEL_ERROR_LOG_MSGS": "ROTATED-ERR|TRUNC-ERR"},
                   stub_log=False, wait_ready=False)
        self.worker.stop()
        log = os.path.join(self._tmp.name, "later.log")
        self.worker = Worker(dict(self.worker.env, MODEL_LOG=log), wait_ready=False)
        time.sleep(0.3)
        self.assertEqual(self.worker.status()["phase"], "loading")
        append(log, "noise")
        append(log, 'x {"message":"Connected","target":"text_generation_router"} y')
        self.worker.wait_phase("ready")
        # rotation: move away, new file with the error
        os.rename(log, log + ".1")
        append(log, "fresh file")
        time.sleep(0.4)
        self.assertEqual(self.worker.status()["phase"], "ready")
        with open(log, "w") as f:  # truncate
            f.write("")
        time.sleep(0.3)
        append(log, "TRUNC-ERR here")
        self.worker.wait_phase("error", 5)
        self.assertEqual(self.worker.status()["last_error"], "TRUNC-ERR")

    def test_partial_lines_and_long_lines(self):
        self.start({"UNSECURED": "1", "MODEL_ERROR_LOG_MSGS": "SPLIT-ERROR"}, stub_log=True)
        with open(self.model_log, "a") as f:
            f.write("x" * 200000 + "\n")  # longer than the line buffer: truncated, no crash
            f.write("SPLIT-")
            f.flush()
            time.sleep(0.3)
            self.assertEqual(self.worker.status()["phase"], "ready")
            f.write("ERROR\n")
        self.worker.wait_phase("error", 5)


class Benchmark(WorkerTestCase, unittest.TestCase):
    def test_cache_written_reused_and_invalid_rerun(self):
        self.start({"UNSECURED": "1", "SGPU_BENCHMARK_RUNS": "2"})
        bf = self.worker.env["SGPU_BENCHMARK_FILE"]
        perf = float(readf(bf))
        self.assertGreater(perf, 0)
        self.assertEqual(self.worker.status()["max_perf"], perf)
        before = self.stub.stats()["requests"]
        self.assertGreaterEqual(before, 1 + 2 * 10)  # warm-up + 2 rounds of 10
        self.worker.stop()
        self.worker = Worker(self.worker.env, wait_ready=True)
        self.assertEqual(self.stub.stats()["requests"], before)  # cached: no benchmark traffic
        self.assertEqual(self.worker.status()["max_perf"], perf)
        self.worker.stop()
        for junk in ["0", "-5", "nan", "abc", ""]:
            with open(bf, "w") as f:
                f.write(junk)
            self.worker = Worker(self.worker.env, wait_ready=True)
            self.assertGreater(float(readf(bf)), 0, junk)
            self.worker.stop()
        # config change invalidates (B9): another model URL fingerprint
        with open(bf, "w") as f:
            f.write("123.5")
        stub2 = Stub(log=None)
        try:
            self.worker = Worker(dict(self.worker.env, MODEL_SERVER_URL=stub2.url,
                                      MODEL_LOG="", MODEL_LOAD_LOG_MSG=""), wait_ready=True)
            self.assertNotEqual(float(readf(bf)), 123.5)
        finally:
            stub2.stop()

    def test_failed_benchmark_is_error_and_not_cached(self):
        cfg = os.path.join(tempfile.mkdtemp(), "h.json")
        with open(cfg, "w") as f:
            json.dump({"handlers": [{"route": "/generate", "workload": "tgi",
                                     "benchmark": {"inputs": "x", "parameters": {}, "status": 500}}]}, f)
        self.start({"UNSECURED": "1", "SGPU_CONFIG": cfg}, wait_ready=False)
        self.worker.wait_phase("error")
        self.assertIn("Benchmark warm-up failed with status 500", self.worker.status()["last_error"])
        self.assertFalse(os.path.exists(self.worker.env["SGPU_BENCHMARK_FILE"]))
        os.unlink(cfg)


class Health(WorkerTestCase, unittest.TestCase):
    def test_one_blip_is_not_fatal_persistent_failure_is(self):
        self.start({"UNSECURED": "1", "MODEL_HEALTH_ENDPOINT": "/health", "SGPU_HEALTH_INTERVAL": "0.1",
                    "SGPU_HEALTH_FAILURES": "15"})
        n = self.stub.stats()["health_checks"]
        self.stub.control({"health": 503})
        wait_for(lambda: self.stub.stats()["health_checks"] >= n + 1, 5)
        self.stub.control({"health": 0})
        time.sleep(0.5)
        self.assertEqual(self.worker.status()["phase"], "ready")  # B11
        self.stub.control({"health": 503})
        self.worker.wait_phase("error", 5)
        self.assertEqual(self.worker.status()["last_error"], "Healthcheck failed with status: 503")

    def test_health_gated_readiness_without_log(self):
        self.start({"UNSECURED": "1", "MODEL_HEALTH_ENDPOINT": "/health", "SGPU_HEALTH_INTERVAL": "0.1"},
                   stub_log=False, load_delay_ms=2000, wait_ready=False)
        self.assertNotEqual(self.worker.status()["phase"], "ready")
        self.worker.wait_phase("ready", 10)

    def _ready_without_the_health_timer(self, bench):
        # The periodic probe is an hour apart: the start-up probe gets the stub's 503 (still
        # loading), so readiness can only come from the probe the load line triggers (and the
        # one after the benchmark), not from the timer (vast-cli#411: up to 10 s of cold start).
        self.start({"UNSECURED": "1", "MODEL_HEALTH_ENDPOINT": "/health",
                    "SGPU_HEALTH_INTERVAL": "3600", "SGPU_BENCHMARK": bench},
                   load_delay_ms=1500, wait_ready=False)
        self.assertNotEqual(self.worker.status()["phase"], "ready")
        self.worker.wait_phase("ready", 20)

    def test_load_line_triggers_a_health_probe_at_once(self):
        self._ready_without_the_health_timer("false")

    def test_benchmark_end_triggers_a_health_probe_at_once(self):
        self._ready_without_the_health_timer("true")


class Drain(WorkerTestCase, unittest.TestCase):
    def metric_503(self):
        text = self.worker.request("GET", "/metrics").body.decode()
        for line in text.splitlines():
            if line.startswith('sgpu_worker_replies_total{status="503"} '):
                return float(line.split()[-1])
        self.fail("no 503 counter in /metrics")

    def test_sigterm_finishes_in_flight_and_exits_0(self):
        self.start({"UNSECURED": "1", "SGPU_REPORT_INTERVAL": "1"})
        res = {}

        def slow():
            res["r"] = self.worker.post("/generate", envelope(AUTH, tgi_payload(3, sleep_ms=1500)))
        t = threading.Thread(target=slow)
        t.start()
        wait_for(lambda: self.stub.stats()["in_flight"] == 1, 5)
        self.worker.signal(signal.SIGTERM)
        wait_for(lambda: self.worker.status()["phase"] == "draining", 5)
        before = self.metric_503()
        r = self.worker.post("/generate", envelope(AUTH, tgi_payload()))
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("Retry-After"), "30")
        # /session/create answers with the same 503 (one reply helper), counted the same way
        s = self.worker.post("/session/create", {"auth_data": AUTH, "payload": {}})
        self.assertEqual(s.status, 503)
        self.assertEqual(s.header("Retry-After"), "30")
        self.assertEqual(s.json(), {"error": "worker not ready", "phase": "draining"})
        self.assertEqual(self.metric_503(), before + 2)
        t.join()
        self.assertEqual(res["r"].status, 200)  # the accepted request was not lost
        self.assertEqual(self.worker.proc.wait(10), 0)
        last = self.sink.reports()[-1]["json"]
        self.assertEqual(last["max_perf"], 0.0)
        self.assertEqual(last["num_requests_working"], 0)

    def test_drain_timeout_aborts_rest(self):
        self.start({"UNSECURED": "1", "SGPU_DRAIN_TIMEOUT": "0.5"})
        s = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        body = json.dumps(envelope(AUTH, tgi_payload(3, sleep_ms=30000))).encode()
        s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        wait_for(lambda: self.stub.stats()["in_flight"] == 1, 5)
        self.worker.signal(signal.SIGTERM)
        data = s.recv(65536)
        s.close()
        self.assertIn(b" 503 ", data.split(b"\r\n")[0])
        self.assertEqual(self.worker.proc.wait(10), 0)
        wait_for(lambda: self.stub.stats()["cancelled"] == 1, 5)


if __name__ == "__main__":
    unittest.main()
