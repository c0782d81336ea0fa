"""The benchmark is sized to the model and never fails a model that serves (issue 15).

- a real sgpu-model with a context (256) too small for the default TGI/OpenAI benchmark
  (250 filler words are ~760 tokens in its vocabulary): the worker reads /info or /v1/models,
  shrinks the prompt and the generation, measures, and becomes ready;
- a model server that publishes no limits and answers 422 with TGI's length message: the
  warm-up is shrunk from the token counts in the message until it fits;
- a benchmark the model refuses (422) even so: the worker becomes ready with the documented
  fallback max_perf (SGPU_MAX_PERF), says why in /status and /metrics, caches nothing, and then
  takes max_perf from the requests it serves.
"""
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import BIN, WorkerTestCase, envelope, tgi_payload, wait_for  # noqa: E402

MODEL_BIN = os.path.join(BIN, "sgpu-model")
AUTH = {"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 7, "signature": "x", "url": "u"}


class Model:
    """sgpu-model (the embedded tiny model) with a small context."""

    def __init__(self, ctx):
        self.log = tempfile.NamedTemporaryFile(prefix="sgpu-model-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [MODEL_BIN, "serve", "--port", "0", "--ctx", str(ctx), "--threads", "1",
             "--max-batch", "4"], stdout=self.log, stderr=subprocess.STDOUT)
        self.port = wait_for(self._port, 60, what="sgpu-model to listen")
        self.url = "http://127.0.0.1:%d" % self.port
        wait_for(self._healthy, 120, what="sgpu-model to load", interval=0.1)

    def _healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _port(self):
        if self.proc.poll() is not None:
            raise AssertionError("sgpu-model exited")
        with open(self.log.name, errors="replace") as f:
            m = re.search(r"event=listening host=\S+ port=(\d+)", f.read())
        return int(m.group(1)) if m else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.unlink(self.log.name)


class LengthLimited(http.server.ThreadingHTTPServer):
    """A TGI-like server without /info: 3 tokens per word, context LIMIT, TGI's 422 text."""
    LIMIT = 400
    daemon_threads = True


class _LHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def _send(self, status, obj):
        b = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def do_GET(self):
        self._send(404, {"error": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        lim = LengthLimited.LIMIT
        if self.path == "/v1/completions":  # vLLM's answer: 400 with the counts in the message
            n, m = 3 * len(body["prompt"].split()), body["max_tokens"]
            self.server.seen.append((n, m))
            if n + m > lim:
                self._send(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                 "message": "This model's maximum context length is %d tokens. "
                                            "However, you requested %d tokens (%d in the prompt, "
                                            "%d in the completion). Please reduce the length of "
                                            "the messages or completion." % (lim, n + m, n, m)})
            else:
                self._send(200, {"choices": [{"text": " x" * m}]})
            return
        n = 3 * len(body["inputs"].split())
        m = body["parameters"]["max_new_tokens"]
        self.server.seen.append((n, m))
        if n + m > lim:
            self._send(422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` "
                                      "must be <= %d. Given: %d `inputs` tokens and %d "
                                      "`max_new_tokens`" % (lim, n, m),
                             "error_type": "validation"})
        else:
            self._send(200, {"generated_text": " x" * m})


class BenchmarkSizing(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.model = None
        self.server = None

    def tearDown(self):
        super().tearDown()
        if self.model:
            self.model.stop()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def _start_on(self, url, backend="tgi", extra=None):
        env = {"UNSECURED": "1", "BACKEND": backend, "MODEL_SERVER_URL": url,
               "SGPU_BENCHMARK_CONCURRENCY": "2"}
        env.update(extra or {})
        return self.start(env, stub=False, wait_ready=False)

    def test_small_context_tgi_is_sized_from_info_and_ready(self):
        self.model = Model(256)
        # the default benchmark payload does not fit this model
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.model.port, timeout=30)
        words = " ".join(["quickly"] * 250)
        c.request("POST", "/generate", json.dumps({"inputs": words,
                                                   "parameters": {"max_new_tokens": 256}}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        self.assertEqual(r.status, 422, r.read())
        c.close()
        w = self._start_on(self.model.url)
        w.wait_phase("ready", 120)
        st = w.status()
        self.assertEqual(st["benchmark"]["how"], "measured", st)
        self.assertEqual(st["benchmark"]["model_max_total_tokens"], 256)
        self.assertLess(st["benchmark"]["words"], 250)
        self.assertLessEqual(st["benchmark"]["max_new_tokens"], 64)
        self.assertGreater(st["max_perf"], 0)
        self.assertIn("event=benchmark_limits status=200", w.log())
        # the shape is part of the cache key (second line: what was measured)
        with open(self.worker.env["SGPU_BENCHMARK_FILE"] + ".meta") as f:
            meta = f.read()
        self.assertIn("words=%d" % st["benchmark"]["words"], meta)

    def test_small_context_openai_is_sized_from_v1_models(self):
        self.model = Model(256)
        w = self._start_on(self.model.url, backend="openai")
        w.wait_phase("ready", 120)
        st = w.status()
        self.assertEqual(st["benchmark"]["how"], "measured", st)
        self.assertEqual(st["benchmark"]["model_max_total_tokens"], 256)
        self.assertLessEqual(st["benchmark"]["max_new_tokens"], 64)

    def test_no_limits_published_warmup_shrunk_on_422(self):
        self.server = LengthLimited(("127.0.0.1", 0), _LHandler)
        self.server.seen = []
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        w = self._start_on("http://127.0.0.1:%d" % self.server.server_address[1])
        w.wait_phase("ready", 30)
        st = w.status()
        self.assertEqual(st["benchmark"]["how"], "measured", st)
        self.assertIn("event=benchmark_shrink status=422", w.log())
        # first the default shape, refused; then one that fits
        self.assertEqual(self.server.seen[0], (750, 256))
        n, m = self.server.seen[-1]
        self.assertLessEqual(n + m, LengthLimited.LIMIT)

    def test_no_limits_published_openai_shrunk_on_vllm_400(self):
        self.server = LengthLimited(("127.0.0.1", 0), _LHandler)
        self.server.seen = []
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        w = self._start_on("http://127.0.0.1:%d" % self.server.server_address[1],
                           backend="openai")
        w.wait_phase("ready", 30)
        self.assertEqual(w.status()["benchmark"]["how"], "measured")
        self.assertIn("event=benchmark_shrink status=400", w.log())
        self.assertEqual(self.server.seen[0], (750, 500))
        n, m = self.server.seen[-1]
        self.assertLessEqual(n + m, LengthLimited.LIMIT)

    def test_refused_benchmark_falls_back_and_learns_from_requests(self):
        cfg = os.path.join(tempfile.mkdtemp(), "h.json")
        with open(cfg, "w") as f:
            json.dump({"handlers": [{"route": "/generate", "workload": "tgi",
                                     "benchmark": {"inputs": "x", "parameters": {},
                                                   "status": 422}}]}, f)
        w = self.start({"UNSECURED": "1", "SGPU_CONFIG": cfg, "SGPU_MAX_PERF": "50"},
                       wait_ready=False)
        w.wait_phase("ready", 30)
        st = w.status()
        self.assertEqual(st["max_perf"], 50.0)
        self.assertEqual(st["benchmark"]["how"], "fallback")
        self.assertIn("status 422", st["benchmark"]["cause"])
        self.assertEqual(st["last_error"], "")
        self.assertIn("event=benchmark_fallback", w.log())
        self.assertIn("sgpu_worker_benchmark_fallback 1",
                      w.request("GET", "/metrics").body.decode())
        self.assertFalse(os.path.exists(self.worker.env["SGPU_BENCHMARK_FILE"]))
        # served requests replace the estimate: 8 tokens in >= 0.2 s each -> <= 40/s
        for _ in range(3):
            r = w.post("/generate", envelope(AUTH, tgi_payload(8, sleep_ms=200)))
            self.assertEqual(r.status, 200, r.body)
        st = wait_for(lambda: (lambda s: s if s["max_perf"] != 50.0 else None)(w.status()), 10,
                      what="max_perf from served requests")
        self.assertGreater(st["max_perf"], 0)
        self.assertLessEqual(st["max_perf"], 40.0)
        os.unlink(cfg)


if __name__ == "__main__":
    unittest.main()
