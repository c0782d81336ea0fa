"""Engine SIGTERM through the real stack (local provider: sgpu-launch + sgpu-worker +
bin/fixtures/stub_model): a streamed request in flight when the engine gets SIGTERM runs to its
end (the worker drains for up to SGPU_DRAIN_TIMEOUT, its final report is answered), /route/
gives no new grants once shutdown began, and the launcher finishes its ordered stop and exits 0
by itself instead of being killed."""
import http.client
import json
import os
import signal
import sys
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402

NEED = ["sgpu-engine", "sgpu-worker", "sgpu-launch", "fixtures/stub_model"]
CHUNKS = 14  # one per second: longer than the old engine's fixed wait minus the final report


class Shutdown(unittest.TestCase):
    def setUp(self):
        for n in NEED:
            if not os.access(el.binpath(n), os.X_OK):
                raise unittest.SkipTest("missing " + n)
        self.eng = el.Engine(tick_ms=100)

    def tearDown(self):
        self.eng.close()

    def test_sigterm_lets_inflight_stream_finish_and_launcher_exit_0(self):
        e = self.eng
        stub = el.binpath("fixtures/stub_model")
        e.create_endpoint("sd", min_load=1, cold_workers=0, max_workers=1, target_util=1.0,
                          cold_mult=1, max_queue_time=30, target_queue_time=0,
                          inactivity_timeout=0)
        e.create_group("sd", "local", {
            "model_cmd": stub + " --port {model_port} --log \"$MODEL_LOG\"",
            "env": {"BACKEND": "tgi", "SGPU_BENCHMARK_RUNS": "1", "SGPU_REPORT_INTERVAL": "1",
                    "SGPU_DRAIN_TIMEOUT": "30"}})
        w = el.wait_for(lambda: [x for x in e.workers("sd") if x["status"] == "idle"],
                        timeout=60, what="worker ready")[0]
        st, g = e.route("sd", cost=4)
        self.assertIn("url", g, g)
        u = urllib.parse.urlparse(g["url"])
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        try:
            conn.request("POST", "/generate_stream", body=json.dumps({
                "auth_data": g, "payload": {"inputs": "x", "parameters": {
                    "max_new_tokens": CHUNKS}, "chunk_delay_ms": 1000}}),
                headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            events = []
            line = r.fp.readline()
            while line and not line.startswith(b"data:"):
                line = r.fp.readline()
            events.append(line)  # the stream is under way
            e.proc.send_signal(signal.SIGTERM)
            # shutdown began: no new grants (a waiting answer; the client polls again)
            st, g2 = el.wait_for(lambda: (lambda x: x if "url" not in x[1] else None)(
                e.route("sd", cost=4)), timeout=10, what="no grant during shutdown")
            self.assertEqual(st, 200)
            self.assertIn("request_idx", g2)
            for line in r.fp:
                if line.startswith(b"data:"):
                    events.append(line)
            self.assertEqual(len(events), CHUNKS, events[-2:])
            self.assertIn(b"generated_text", events[-1])
        finally:
            conn.close()
        rc = e.proc.wait(timeout=180)
        self.assertEqual(rc, 0)
        log = e.logtext()
        self.assertNotIn("local_instance_kill", log)
        self.assertNotIn("shutdown_timeout", log)
        with open(os.path.join(e.dir, "workers", str(w["id"]), "launch.log"),
                  errors="replace") as f:
            launch = f.read()
        self.assertIn("event=stopped exit=0", launch, launch[-3000:])
        self.assertNotIn("stop_timeout", launch)


if __name__ == "__main__":
    unittest.main()
