"""Report values mean what the generation named by SGPU_REPORT_FORMAT means (docs/protocol.md
section 4.2): v1 as PyWorker generation 1, v3 as Vast's current worker library.  Shapes are
written here from the fields those workers document, not from their code."""
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import WorkerTestCase, envelope, grant, pubkey_pem, tgi_payload, wait_for  # noqa: E402

URL = "http://203.0.113.7:41234"
ENV = {"CONTAINER_ID": "77", "MASTER_TOKEN": "t", "PUBLIC_IPADDR": "203.0.113.7",
       "VAST_TCP_PORT_0": "41234", "SGPU_REPORT_INTERVAL": "1"}


def ok_reports(sink):
    return [p for p in sink.reports(ok_only=True)]


class Generation1(WorkerTestCase, unittest.TestCase):
    def start_withheld_key(self, env):
        """Loaded and benchmarked, but not ready until the engine key arrives: reports go out
        in between (the window where loadtime must not be sent yet)."""
        self.start(env, wait_ready=False, pubkey=b"")
        self.sink.pubkey_status = 500
        wait_for(lambda: self.worker.status().get("max_perf", 0) > 0, 15, what="benchmark done")
        n = len(ok_reports(self.sink))
        wait_for(lambda: len(ok_reports(self.sink)) >= n + 2, 15, what="reports before ready")
        self.sink.pubkey = pubkey_pem()
        self.sink.pubkey_status = 200
        self.worker.wait_phase("ready", 20)

    def test_loadtime_once_with_the_benchmark_result(self):
        env = dict(ENV, SGPU_REPORT_FORMAT="v1", SGPU_AUTH_SCHEME="fields-v1")
        self.start_withheld_key(env)
        ready = wait_for(lambda: [i for i, p in enumerate(ok_reports(self.sink))
                                  if p["json"]["max_perf"] > 0], 15, what="ready report")[0]
        n = len(ok_reports(self.sink))
        wait_for(lambda: len(ok_reports(self.sink)) >= n + 2, 15, what="reports after ready")
        reps = [p["json"] for p in ok_reports(self.sink)]
        for d in reps[:ready]:  # loaded but not ready: max_perf 0.0 and no loadtime
            self.assertEqual((d["max_perf"], d["loadtime"]), (0.0, 0.0), d)
        self.assertGreater(reps[ready]["loadtime"], 0)  # in the same report as max_perf
        st = self.worker.status()
        self.assertGreaterEqual(reps[ready]["loadtime"] + 0.01, st["loadtime"])  # time to ready
        for d in reps[ready + 1:]:
            self.assertEqual(d["loadtime"], 0.0, d)  # once
            self.assertGreater(d["max_perf"], 0)

    def test_cur_load_per_second_and_cur_perf_of_last_request(self):
        env = dict(ENV, SGPU_REPORT_FORMAT="v1", UNSECURED="1", SGPU_REPORT_INTERVAL="30")
        self.start(env)
        wait_for(lambda: [p for p in ok_reports(self.sink) if p["json"]["max_perf"] > 0], 15,
                 what="ready report")
        time.sleep(1.5)  # let the ready burst settle
        n = len(ok_reports(self.sink))
        time.sleep(3.0)  # a long gap since the last report: cur_load is a rate over it
        t0 = time.monotonic()
        r = self.worker.post("/generate", envelope({"cost": 1, "endpoint": "e", "reqnum": 1,
                                                    "request_idx": 1, "signature": "s", "url": "u"},
                                                   tgi_payload(3, sleep_ms=200)))
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200)
        reps = wait_for(lambda: [p for p in ok_reports(self.sink)[n:] if p["json"]["cur_load"] > 0],
                        15, what="report with load")
        p = reps[0]
        before = [q for q in ok_reports(self.sink) if q["t"] < p["t"]][-1]
        gap = p["t"] - before["t"]
        self.assertGreaterEqual(gap, 2.5)
        d = p["json"]
        for k in ("loadtime", "cur_load", "max_perf", "cur_perf", "additional_disk_usage"):
            self.assertIsInstance(d[k], float, k)
        self.assertLess(d["cur_load"], 3.0 / 2.5 + 1e-9)  # 3 workload units over >= 2.5 s
        self.assertGreater(d["cur_load"] * gap, 3.0 / 4)
        self.assertLess(d["cur_load"] * gap, 3.0 * 4)
        # cur_perf: that request's workload / its response time, kept in later reports
        self.assertGreaterEqual(d["cur_perf"], 3.0 / took * 0.99)
        self.assertLessEqual(d["cur_perf"], 3.0 / 0.2 * 1.01)
        # the next report (idle) still says the last request's rate, and cur_load 0.0
        self.sink.clear()
        wait_for(lambda: ok_reports(self.sink), 40, what="next report")
        nxt = ok_reports(self.sink)[0]["json"]
        self.assertEqual(nxt["cur_perf"], d["cur_perf"])
        self.assertEqual(nxt["cur_load"], 0.0)
        self.assertIsInstance(nxt["cur_load"], float)


class Generation3(WorkerTestCase, unittest.TestCase):
    def test_loadtime_zero_until_ready_then_time_to_ready(self):
        self.start(dict(ENV), wait_ready=False, pubkey=b"")
        self.sink.pubkey_status = 500
        wait_for(lambda: self.worker.status().get("max_perf", 0) > 0, 15, what="benchmark done")
        n = len(ok_reports(self.sink))
        wait_for(lambda: len(ok_reports(self.sink)) >= n + 2, 15, what="reports before ready")
        for p in ok_reports(self.sink):
            self.assertEqual(p["json"]["loadtime"], 0.0, p["json"])  # 0.0 until ready
        self.sink.pubkey = pubkey_pem()
        self.sink.pubkey_status = 200
        self.worker.wait_phase("ready", 20)
        k = len(ok_reports(self.sink))
        wait_for(lambda: len([p for p in ok_reports(self.sink) if p["json"]["max_perf"] > 0]) >= 3,
                 20, what="reports after ready")
        after = [p["json"] for p in ok_reports(self.sink)[k - 1:] if p["json"]["max_perf"] > 0]
        lts = {d["loadtime"] for d in after}
        self.assertEqual(len(lts), 1, lts)  # the same time to ready in every report
        self.assertGreaterEqual(lts.pop() + 0.01, self.worker.status()["loadtime"])

    def test_zero_counters_after_a_reset_are_integers(self):
        self.start(dict(ENV))
        wait_for(lambda: len(ok_reports(self.sink)) >= 2, 15, what="two reports")
        g = grant("url", URL, request_idx=5)
        self.assertEqual(self.worker.post("/generate", envelope(g, tgi_payload(4))).status, 200)
        loaded = wait_for(lambda: [p for p in ok_reports(self.sink) if p["json"]["new_load"] > 0],
                          15, what="report with load")[0]
        self.assertIsInstance(loaded["json"]["new_load"], float)
        self.assertIsInstance(loaded["json"]["cur_perf"], float)
        self.sink.clear()
        wait_for(lambda: ok_reports(self.sink), 15, what="report after the reset")
        p = ok_reports(self.sink)[0]
        d = p["json"]
        self.assertEqual(p["raw"], json.dumps(d).encode())
        for k in ("cur_load", "rej_load", "new_load", "cur_perf"):
            self.assertIs(type(d[k]), int, (k, p["raw"]))
            self.assertEqual(d[k], 0)
        for k in ("loadtime", "max_perf", "additional_disk_usage"):
            self.assertIsInstance(d[k], float, k)
        self.assertIn(b'"cur_load": 0, "rej_load": 0, "new_load": 0,', p["raw"])

    def test_cur_load_while_working_is_a_float(self):
        self.start(dict(ENV))
        wait_for(lambda: ok_reports(self.sink), 15, what="first report")
        t = threading.Thread(target=lambda: self.worker.post(
            "/generate", envelope(grant("url", URL, request_idx=9), tgi_payload(6, sleep_ms=2500))))
        t.start()
        busy = wait_for(lambda: [p for p in ok_reports(self.sink)
                                 if p["json"]["num_requests_working"] == 1], 15, what="busy report")
        t.join()
        self.assertEqual(busy[0]["json"]["cur_load"], 6.0)
        self.assertIsInstance(busy[0]["json"]["cur_load"], float)


class CredentialsInReportAddr(WorkerTestCase, unittest.TestCase):
    def test_user_info_in_report_addr_is_ignored(self):
        """An engine gives token-less G1 workers their token as REPORT_ADDR user info; sgpu-worker
        in such a workergroup still reports to that host (with mtoken in the body)."""
        self.start(dict(ENV), wait_ready=False)
        self.worker.stop()
        from worker_lib import Worker
        addr = self.sink.url.replace("http://", "http://sgpu:0123abcd@")
        self.worker = Worker(dict(self.worker.env, REPORT_ADDR=addr), wait_ready=True)
        d = wait_for(lambda: ok_reports(self.sink), 15, what="a report")[0]["json"]
        self.assertEqual(d["mtoken"], "t")


if __name__ == "__main__":
    unittest.main()
