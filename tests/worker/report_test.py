"""/worker_status/ and /delete_requests/ against a recording sink: field sets and
order, Python json.dumps bytes, counter semantics and resets, address fallback."""
import json
import os
import socket
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import WorkerTestCase, envelope, grant, tgi_payload, wait_for  # noqa: E402

V3 = ["id", "mtoken", "version", "loadtime", "cur_load", "rej_load", "new_load", "error_msg",
      "max_perf", "cur_perf", "cur_capacity", "max_capacity", "num_requests_working",
      "num_requests_recieved", "additional_disk_usage", "working_request_idxs", "url"]
V1 = ["id", "loadtime", "cur_load", "error_msg", "max_perf", "cur_perf", "cur_capacity",
      "max_capacity", "num_requests_working", "num_requests_recieved", "additional_disk_usage", "url"]
URL = "http://203.0.113.7:41234"
ENV = {"CONTAINER_ID": "4242", "MASTER_TOKEN": "tok-\u00e9", "PUBLIC_IPADDR": "203.0.113.7",
       "VAST_TCP_PORT_0": "41234", "SGPU_REPORT_INTERVAL": "1"}


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class StatusV3(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start(dict(ENV))

    def ready_reports(self):
        return [p for p in self.sink.reports(ok_only=True) if p["json"]["max_perf"] > 0]

    def test_fields_order_and_bytes(self):
        wait_for(self.ready_reports, 10, what="ready report")
        p = self.ready_reports()[0]
        d = p["json"]
        self.assertEqual(list(d.keys()), V3)
        self.assertEqual(p["raw"], json.dumps(d).encode())  # json.dumps default separators, exact
        self.assertEqual(p["ctype"], "application/json")
        self.assertEqual(d["id"], 4242)
        self.assertEqual(d["mtoken"], "tok-\u00e9")
        self.assertEqual(d["version"], "1.1.0")
        self.assertEqual(d["url"], URL)
        self.assertEqual(d["error_msg"], "")
        self.assertIsInstance(d["loadtime"], float)
        self.assertGreater(d["loadtime"], 0)
        self.assertEqual(d["cur_capacity"], 0)
        self.assertEqual(d["working_request_idxs"], [])

    def test_counters_reset_after_send_and_delete_requests(self):
        wait_for(self.ready_reports, 10, what="ready report")
        for i in (7, 8):
            g = grant("url", URL, request_idx=i)
            self.assertEqual(self.worker.post("/generate", envelope(g, tgi_payload(4))).status, 200)
        bad = grant("url", URL, request_idx=666)
        bad["url"] = "http://evil"
        self.assertEqual(self.worker.post("/generate", envelope(bad, tgi_payload(5))).status, 401)

        def carried():
            for p in self.sink.reports(ok_only=True):
                if p["json"]["new_load"] > 0:
                    return p["json"]
        d = wait_for(carried, 10, what="report with load")
        self.assertEqual(d["new_load"], 8.0)
        self.assertEqual(d["cur_perf"], 8.0)
        self.assertEqual(d["rej_load"], 5.0)
        self.assertEqual(d["num_requests_recieved"], 2)
        self.assertEqual(d["num_requests_working"], 0)
        self.assertEqual(d["cur_load"], 0.0)
        n = len(self.sink.reports())
        wait_for(lambda: len(self.sink.reports()) > n, 15, what="next report")
        last = self.sink.reports()[-1]["json"]
        self.assertEqual(last["new_load"], 0.0)  # reset after the successful send
        self.assertEqual(last["num_requests_recieved"], 2)  # lifetime count

        dels = wait_for(lambda: self.sink.reports("/delete_requests/"), 10, what="delete_requests")
        reqs = [r for p in dels for r in p["json"]["requests"]]
        self.assertEqual(list(dels[0]["json"].keys()), ["worker_id", "mtoken", "requests"])
        self.assertEqual(dels[0]["json"]["worker_id"], 4242)
        self.assertEqual(sorted(r["request_idx"] for r in reqs), [7, 8])  # not 666 (B18)
        for r in reqs:
            self.assertEqual(list(r.keys()), ["request_idx", "success", "status", "entered_queue_at",
                                              "work_started_at", "work_completed_at"])
            self.assertEqual((r["success"], r["status"]), (True, "Success"))
            self.assertLessEqual(r["entered_queue_at"], r["work_started_at"])
            self.assertLessEqual(r["work_started_at"], r["work_completed_at"])

    def test_working_request_idxs_and_cur_load(self):
        wait_for(self.ready_reports, 10, what="ready report")
        import threading
        t = threading.Thread(target=lambda: self.worker.post(
            "/generate", envelope(grant("url", URL, request_idx=31), tgi_payload(9, sleep_ms=2500))))
        t.start()

        def busy():
            for p in self.sink.reports(ok_only=True):
                if p["json"]["num_requests_working"] == 1:
                    return p["json"]
        d = wait_for(busy, 10, what="report while busy")
        t.join()
        self.assertEqual(d["working_request_idxs"], [31])
        self.assertEqual(d["cur_load"], 9.0)


class Cadence(WorkerTestCase, unittest.TestCase):
    def test_change_reported_soon_idle_reported_by_interval(self):
        """Order and coarse spacing only: a change is reported well before the 10 s interval,
        an idle worker is not chatty, a loading worker reports once then waits."""
        env = dict(ENV, SGPU_REPORT_INTERVAL="10")
        self.start(env)
        wait_for(lambda: [p for p in self.sink.reports() if p["json"]["max_perf"] > 0], 10,
                 what="ready report")
        import time
        time.sleep(1.2)  # let the ready burst settle
        n_idle = len(self.sink.reports())
        time.sleep(2.5)
        self.assertLessEqual(len(self.sink.reports()) - n_idle, 1)  # idle: no flood
        t0 = time.monotonic()
        self.assertEqual(self.worker.post("/generate", envelope(grant("url", URL), tgi_payload(2))).status, 200)
        p = wait_for(lambda: [p for p in self.sink.reports() if p["json"]["new_load"] > 0], 9,
                     what="change report")[0]
        self.assertLess(p["t"] - t0, 5.0)  # "1 s after a change", far below the 10 s interval
        ready_idx = [i for i, p in enumerate(self.sink.reports()) if p["json"]["max_perf"] > 0][0]
        for q in self.sink.reports()[:ready_idx]:
            self.assertEqual(q["json"]["max_perf"], 0.0)  # loading reports come first


class MaxPerfOnlyWhenReady(WorkerTestCase, unittest.TestCase):
    def test_no_benchmark_reports_max_perf_0_until_ready(self):
        """SGPU_BENCHMARK=false sets max_perf at load, but the engine routes to any worker with
        max_perf > 0: until the worker admits requests (here: first health probe passed, key
        still missing) every report says max_perf 0."""
        env = dict(ENV, SGPU_BENCHMARK="false", MODEL_HEALTH_ENDPOINT="/health",
                   SGPU_HEALTH_INTERVAL="0.2", SGPU_MAX_PERF="77")
        self.start(env, stub_log=False, wait_ready=False, pubkey=b"")
        self.sink.pubkey_status = 500
        wait_for(lambda: self.worker.status()["max_perf"] == 77, 10, what="model loaded")
        self.assertNotEqual(self.worker.status()["phase"], "ready")
        n = len(self.sink.reports(ok_only=True))
        wait_for(lambda: len(self.sink.reports(ok_only=True)) >= n + 2, 10, what="two more reports")
        self.assertNotEqual(self.worker.status()["phase"], "ready")
        for p in self.sink.reports():
            self.assertEqual(p["json"]["max_perf"], 0.0)
        self.sink.pubkey_status = 200
        self.sink.pubkey = __import__("worker_lib").pubkey_pem()
        p = wait_for(lambda: [p for p in self.sink.reports() if p["json"]["max_perf"] > 0], 20,
                     what="ready report")[0]
        self.assertEqual(p["json"]["max_perf"], 77.0)
        self.assertEqual(self.worker.status()["phase"], "ready")


class NamedEngine(WorkerTestCase, unittest.TestCase):
    def test_report_addr_by_name_resolved_asynchronously(self):
        """A host name (from /etc/hosts here) goes through evdns, not a blocking resolver."""
        import socket as so
        name = None
        for cand in (so.gethostname(), "vm", "runsc"):
            try:
                if so.gethostbyname(cand) == "127.0.0.1":
                    name = cand
                    break
            except OSError:
                pass
        if not name:
            self.skipTest("no /etc/hosts name for 127.0.0.1")
        self.start(dict(ENV), wait_ready=False)
        self.worker.stop()
        from worker_lib import Worker
        url = "http://%s:%d" % (name, self.sink.port)
        self.worker = Worker(dict(self.worker.env, REPORT_ADDR=url), wait_ready=True)
        wait_for(lambda: [p for p in self.sink.reports(ok_only=True) if p["json"]["max_perf"] > 0], 10,
                 what="report via a named host")


class TlsEngine(WorkerTestCase, unittest.TestCase):
    def test_https_engine_with_ca_and_verification(self):
        import ssl
        import subprocess
        import tempfile
        d = tempfile.mkdtemp()
        crt, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "1", "-subj", "/CN=engine.test",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
        self.start(dict(ENV), wait_ready=False, stub=True)
        self.worker.stop()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        self.sink.srv.socket = ctx.wrap_socket(self.sink.srv.socket, server_side=True)
        url = "https://127.0.0.1:%d" % self.sink.port
        from worker_lib import Worker
        # without the CA: the key cannot be fetched (certificate verification fails)
        self.worker = Worker(dict(self.worker.env, REPORT_ADDR=url, SGPU_ENGINE_CA=""), wait_ready=False)
        import time
        time.sleep(1.5)
        self.assertFalse(self.worker.status()["auth"]["pubkey"])
        self.worker.stop()
        self.worker = Worker(dict(self.worker.env, REPORT_ADDR=url, SGPU_ENGINE_CA=crt), wait_ready=True)
        g = grant("url", URL)
        self.assertEqual(self.worker.post("/generate", envelope(g, tgi_payload(2))).status, 200)
        wait_for(lambda: [p for p in self.sink.reports(ok_only=True) if p["json"]["max_perf"] > 0], 10,
                 what="report over TLS")
        for f in (crt, key):
            os.unlink(f)
        os.rmdir(d)


class FailuresAndFallback(WorkerTestCase, unittest.TestCase):
    def test_counters_kept_when_send_fails(self):
        self.start(dict(ENV))
        wait_for(lambda: self.sink.reports(ok_only=True), 10, what="first report")
        self.sink.fail["/worker_status/"] = 500
        n = len(self.sink.reports())
        for i in range(3):
            self.assertEqual(self.worker.post("/generate", envelope(grant("url", URL), tgi_payload(2))).status, 200)
        wait_for(lambda: len([p for p in self.sink.reports()[n:] if p["status"] == 500]) >= 2, 15,
                 what="failed sends")
        del self.sink.fail["/worker_status/"]
        d = wait_for(lambda: [p["json"] for p in self.sink.reports(ok_only=True)[1:]
                              if p["json"]["new_load"] > 0], 15, what="recovered report")[0]
        self.assertEqual(d["new_load"], 6.0)  # B5: nothing lost while the engine failed
        self.assertEqual(d["cur_perf"], 6.0)

    def test_disk_growth_not_lost_when_send_fails(self):
        """B24: the disk baseline advances only after a successful send."""
        self.start(dict(ENV))
        wait_for(lambda: self.sink.reports(ok_only=True), 10, what="first report")
        self.sink.fail["/worker_status/"] = 503
        n = len(self.sink.reports())
        big = os.path.join(self._tmp.name, "grow.bin")
        with open(big, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, 256 << 20)
        try:
            wait_for(lambda: len([p for p in self.sink.reports()[n:] if p["status"] == 503]) >= 2, 15,
                     what="failed sends")
            del self.sink.fail["/worker_status/"]
            ok = wait_for(lambda: [p["json"] for p in self.sink.reports()[n:] if p["status"] == 200], 15,
                          what="recovered report")[0]
            self.assertGreater(ok["additional_disk_usage"], 0.2)  # ~0.25 GiB, not swallowed
        finally:
            os.unlink(big)

    def test_second_address_and_v1_format(self):
        dead = "http://127.0.0.1:%d" % closed_port()
        env = dict(ENV)
        env.update({"SGPU_REPORT_FORMAT": "v1", "UNSECURED": "1"})
        self.start(env)
        self.worker.stop()
        env["REPORT_ADDR"] = dead + "," + self.sink.url
        from worker_lib import Worker
        self.worker = Worker(dict(self.worker.env, **env), wait_ready=True)
        self.assertEqual(self.worker.post("/generate", envelope({"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 1,
                                                                 "signature": "s", "url": "u"},
                                                                tgi_payload(3))).status, 200)
        d = wait_for(lambda: [p["json"] for p in self.sink.reports(ok_only=True)
                              if p["json"]["cur_load"] > 0], 10, what="v1 report")[0]
        self.assertEqual(list(d.keys()), V1)
        self.assertGreater(d["cur_load"], 0.0)  # a rate (report_semantics_test.py)
        self.assertEqual(self.sink.reports("/delete_requests/"), [])


if __name__ == "__main__":
    unittest.main()
