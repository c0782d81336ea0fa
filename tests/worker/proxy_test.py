"""Request path end to end against the stub model: forwarding, streaming (chunk by
chunk), cancellation, serial queueing, 429, 503 before ready, upstream failures."""
import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import (WorkerTestCase, envelope, grant, raw_request, tgi_payload,  # noqa: E402
                        wait_for)

AUTH = {"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 7, "signature": "x", "url": "u"}


def http_post_raw(port, path, body):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (path.encode(), len(body))) + body


class Forwarding(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"BACKEND": "generic", "UNSECURED": "1"}, stub_log=False)

    def test_payload_bytes_forwarded_verbatim(self):
        payload = '{"b":1,  "a" : [1.0, 2e3, 1E400, -0.0], "s": "\\u00e9\\ud83d\\ude00 \u00e9", "n": null}'
        body = '{"payload" : %s , "auth_data": %s, "extra": [1]}' % (payload, json.dumps(AUTH))
        r = self.worker.request("POST", "/any/path", body.encode("utf-8"))
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.body, payload.encode("utf-8"))
        self.assertEqual(r.header("Content-Type"), "application/json")

    def test_duplicate_payload_key_last_wins(self):
        body = '{"auth_data": %s, "payload": {"first": 1}, "payload": {"second": 2}}' % json.dumps(AUTH)
        r = self.worker.request("POST", "/echo", body)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b'{"second": 2}')

    def test_model_status_and_body_passed_through_and_counted_as_error(self):
        r = self.worker.post("/x", envelope(AUTH, {"status": 418}))
        self.assertEqual(r.status, 418)
        self.assertEqual(r.json(), {"error": "forced status 418"})
        st = self.worker.status()
        self.assertEqual(st["requests"]["error"], 1)  # B26: not "success"
        self.assertEqual(st["requests"]["success"], 0)

    def test_content_type_passthrough(self):
        r = self.worker.post("/x", envelope(AUTH, {"sleep_ms": 1, "content_type": "text/plain; x=1"}))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Type"), "text/plain; x=1")

    def test_large_response(self):
        r = self.worker.post("/generate", envelope(AUTH, {"sleep_ms": 1, "body_bytes": 5_000_000}))
        self.assertEqual(r.status, 200)
        self.assertGreaterEqual(len(r.body), 4_999_000)
        json.loads(r.body)

    def test_non_object_payload_422(self):
        r = self.worker.post("/x", {"auth_data": AUTH, "payload": [1, 2]})
        self.assertEqual(r.status, 422)
        self.assertEqual(r.body, b'{"payload": {"data": "payload must be a dictionary"}}')

    def test_envelope_422_exact(self):
        cases = [
            (b"not json", b'{"error": "invalid JSON"}'),
            (b'{"payload": {}}', b'{"auth_data": "field missing"}'),
            (b'{"auth_data": {}}', b'{"payload": "field missing"}'),
            (b'{}', b'{"auth_data": "field missing", "payload": "field missing"}'),
            (b'{"auth_data": {"cost": 1}, "payload": 3}',
             b'{"auth_data": {"endpoint": "missing parameter", "reqnum": "missing parameter", '
             b'"request_idx": "missing parameter", "signature": "missing parameter", '
             b'"url": "missing parameter"}, "payload": {"data": "payload must be a dictionary"}}'),
        ]
        for body, want in cases:
            r = self.worker.request("POST", "/x", body)
            self.assertEqual(r.status, 422, body)
            self.assertEqual(r.body, want)
            self.assertEqual(r.header("Content-Type"), "application/json; charset=utf-8")

    def test_session_id_410_after_auth(self):
        r = self.worker.post("/x", envelope(AUTH, {}, session_id="abc"))
        self.assertEqual(r.status, 410)
        self.assertEqual(r.body, b'{"error": "invalid session"}')
        r = self.worker.post("/x", envelope(AUTH, {}, session_id=None))
        self.assertEqual(r.status, 200)


class TgiRoutes(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"UNSECURED": "1"})

    def test_404_405(self):
        r = self.worker.request("GET", "/generate")
        self.assertEqual(r.status, 405)
        self.assertEqual(r.header("Allow"), "POST")
        r = self.worker.post("/nope", envelope(AUTH, tgi_payload()))
        self.assertEqual(r.status, 404)
        self.assertEqual(r.body, b"404: Not Found")
        self.assertEqual(self.worker.request("GET", "/ping").body, b"pong")
        # fixed G3 routes are answered by the worker, not forwarded (session_test.py)
        for p, st in (("/session/create", 422), ("/session/end", 422), ("/session/get", 422),
                      ("/session/health", 422), ("/pyworker/update", 401)):
            self.assertEqual(self.worker.request("POST", p, b"{}").status, st, p)
            self.assertEqual(self.worker.request("GET", p).status, 405, p)

    def test_port_in_use_is_a_clear_startup_error(self):
        """B27: a duplicate launch fails fast (exit 1) instead of limping along."""
        import subprocess
        from worker_lib import WORKER_BIN
        env = dict(self.worker.env, WORKER_PORT=str(self.worker.port))
        p = subprocess.run([WORKER_BIN], env=env, capture_output=True, timeout=120)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"listen_failed", p.stderr)

    def test_tgi_payload_422_and_extra_parameters_kept(self):
        # v3 (generation 3, the default): a payload without "parameters" is forwarded, as Vast's
        # current worker does; the G1 422 is in TgiGeneration1 below
        r = self.worker.post("/generate", envelope(AUTH, {"inputs": "x"}))
        self.assertEqual(r.status, 200, r.body)
        r = self.worker.post("/generate", envelope(AUTH, {"x": 1}))
        self.assertEqual(r.status, 422)
        self.assertEqual(r.body, b'{"payload": {"inputs": "missing parameter"}}')
        # B7: temperature etc. reach the model (stub answers with max_new_tokens tokens)
        r = self.worker.post("/generate", envelope(AUTH, {"inputs": "x", "parameters": {
            "max_new_tokens": 3, "temperature": 0.5, "top_p": 0.9}}))
        self.assertEqual(r.json()["generated_text"], "tok0 tok1 tok2 ")

    def test_stream_chunk_by_chunk(self):
        """Each event must reach the client before the stub sends the next (handshake)."""
        hs = "hs1"
        n = 6
        s = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        s.sendall(http_post_raw(self.worker.port, "/generate_stream",
                                envelope(AUTH, tgi_payload(n, handshake=hs, chunks=n))))
        buf = b""
        acked = -1
        deadline = time.monotonic() + 120
        while b"\r\n0\r\n\r\n" not in buf and time.monotonic() < deadline:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            # ack every complete event seen so far (the last one needs none)
            events = [e for e in buf.split(b"data: ")[1:] if b"\n\n" in e]
            while acked + 1 < min(len(events), n - 1):
                acked += 1
                self.assertEqual(self.stub.ack(hs, acked), 200)
            got = len(events)
        s.close()
        head, _, _ = buf.partition(b"\r\n\r\n")
        self.assertIn(b"200 OK", head)
        self.assertIn(b"X-Accel-Buffering: no", head)
        self.assertIn(b"Content-Type: text/event-stream", head)
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertEqual(acked, n - 2, buf)
        self.assertEqual(got, n)
        self.assertTrue(buf.endswith(b"\r\n0\r\n\r\n"))
        wait_for(lambda: self.worker.status()["requests"]["success"] == 1, 5, what="success")

    def test_cancel_before_first_byte_aborts_upstream(self):
        s = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        s.sendall(http_post_raw(0, "/generate", envelope(AUTH, tgi_payload(sleep_ms=20000))))
        wait_for(lambda: self.stub.stats()["in_flight"] == 1, 5, what="upstream started")
        s.close()
        wait_for(lambda: self.stub.stats()["cancelled"] == 1, 5, what="upstream cancelled")
        st = wait_for(lambda: (lambda x: x if x["requests"]["cancelled"] == 1 else None)(self.worker.status()), 5)
        self.assertEqual(st["requests"]["working"], 0)
        self.assertEqual(st["working_load"], 0.0)

    def test_cancel_mid_stream_aborts_upstream(self):
        hs = "hs2"
        s = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        s.sendall(http_post_raw(0, "/generate_stream", envelope(AUTH, tgi_payload(8, handshake=hs, chunks=8))))
        buf = b""
        while b'"id": 0' not in buf:
            buf += s.recv(65536)
        s.close()
        wait_for(lambda: self.stub.stats()["cancelled"] == 1, 5, what="upstream cancelled")
        wait_for(lambda: self.worker.status()["requests"]["cancelled"] == 1, 5, what="counted")

    def test_parallel_requests(self):
        res = []

        def one():
            res.append(self.worker.post("/generate", envelope(AUTH, tgi_payload(2, sleep_ms=300))).status)
        ts = [threading.Thread(target=one) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(res, [200] * 4)
        self.assertGreaterEqual(self.stub.stats()["max_in_flight"], 2)


class Serial(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"BACKEND": "generic", "UNSECURED": "1", "SGPU_PARALLEL": "false",
                    "SGPU_MAX_QUEUE_TIME": "2.5", "SGPU_MAX_PERF": "100", "SGPU_WORKLOAD": "100"},
                   stub_log=False)

    def test_fifo_one_at_a_time_then_429(self):
        res = {}

        def one(i):
            a = dict(AUTH, request_idx=100 + i)
            res[i] = self.worker.post("/slow", envelope(a, {"sleep_ms": 600})).status
        ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for i, t in enumerate(ts):
            t.start()
            wait_for(lambda: self.worker.status()["requests"]["working"] == i + 1, 5, what="queued")
        # 3 x 100 workload queued at max_perf 100 = 3 s > 2.5 s
        r = self.worker.post("/slow", envelope(dict(AUTH, request_idx=999), {"sleep_ms": 1}))
        self.assertEqual(r.status, 429)
        self.assertEqual(r.body, b"")
        for t in ts:
            t.join()
        self.assertEqual(res, {0: 200, 1: 200, 2: 200})
        self.assertEqual(self.stub.stats()["max_in_flight"], 1)

    def test_cancel_while_queued_frees_slot(self):
        s1 = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        s1.sendall(http_post_raw(0, "/a", envelope(AUTH, {"sleep_ms": 800})))
        wait_for(lambda: self.stub.stats()["in_flight"] == 1, 5)
        s2 = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
        s2.sendall(http_post_raw(0, "/b", envelope(AUTH, {"sleep_ms": 1})))
        wait_for(lambda: self.worker.status()["queue"]["*"]["queued"] == 1, 5)
        s2.close()  # leaves while queued: never reaches the model (B3)
        wait_for(lambda: self.worker.status()["queue"]["*"]["queued"] == 0, 5)
        data = s1.recv(65536)
        self.assertIn(b"200 OK", data)
        s1.close()
        st = wait_for(lambda: (lambda x: x if x["requests"]["working"] == 0 else None)(self.worker.status()), 5)
        self.assertEqual(st["requests"]["cancelled"], 1)
        self.assertEqual(self.stub.stats()["started"], 1)
        r = self.worker.post("/c", envelope(AUTH, {"sleep_ms": 1}))
        self.assertEqual(r.status, 200)


class NotReady(WorkerTestCase, unittest.TestCase):
    def test_503_until_loaded(self):
        self.start({"UNSECURED": "1"}, load_delay_ms=3000, wait_ready=False)
        r = self.worker.post("/generate", envelope(AUTH, tgi_payload()))
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("Retry-After"), "5")
        self.assertEqual(self.worker.request("GET", "/health").status, 503)
        self.assertEqual(self.stub.stats()["requests"], 0)  # B29: nothing forwarded
        self.worker.wait_phase("ready", 15)
        self.assertEqual(self.worker.post("/generate", envelope(AUTH, tgi_payload())).status, 200)
        self.assertEqual(self.worker.request("GET", "/health").status, 200)


class UpstreamDown(WorkerTestCase, unittest.TestCase):
    def test_502_json_and_counted(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self.start({"BACKEND": "generic", "UNSECURED": "1",
                    "MODEL_SERVER_URL": "http://127.0.0.1:%d" % port}, stub=False)
        r = self.worker.post("/x", envelope(AUTH, {}))
        self.assertEqual(r.status, 502)
        self.assertIn("error", r.json())
        self.assertEqual(self.worker.status()["requests"]["error"], 1)

    def test_timeout_504(self):
        self.start({"BACKEND": "generic", "UNSECURED": "1", "SGPU_UPSTREAM_TIMEOUT": "0.3"},
                   stub_log=False)
        r = self.worker.post("/x", envelope(AUTH, {"sleep_ms": 5000}))
        self.assertEqual(r.status, 504)
        wait_for(lambda: self.stub.stats()["cancelled"] == 1, 5, what="upstream aborted")


class OddUpstreams(WorkerTestCase, unittest.TestCase):
    """Python http.server upstreams: HTTP/1.0 close-delimited answers, and HTTP/1.1
    keep-alive connections the server closes after 0.2 s idle (pool must recover)."""

    def serve(self, proto, idle):
        import http.server

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = proto
            timeout = idle

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if proto == "HTTP/1.1":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        return "http://127.0.0.1:%d" % srv.server_address[1]

    def test_http10_and_idle_closed_keepalive(self):
        for proto, idle in (("HTTP/1.0", None), ("HTTP/1.1", 0.2)):
            url = self.serve(proto, idle)
            if getattr(self, "worker", None):
                self.worker.stop()
                self.sink.stop()
                self._tmp.cleanup()
            self.start({"BACKEND": "generic", "UNSECURED": "1", "MODEL_SERVER_URL": url}, stub=False)
            for i in range(6):
                r = self.worker.post("/e", envelope(AUTH, {"i": i}))
                self.assertEqual((r.status, r.body), (200, b'{"i": %d}' % i), proto)
                time.sleep(0.3 if idle else 0.01)  # let the server drop the idle connection
            st = self.worker.status()
            self.assertEqual(st["requests"]["success"], 6)


class StreamOption(WorkerTestCase, unittest.TestCase):
    def test_forced_and_disabled_streaming(self):
        import tempfile
        cfg = os.path.join(tempfile.mkdtemp(), "h.json")
        with open(cfg, "w") as f:
            json.dump({"handlers": [
                {"route": "/always", "upstream": "/generate", "stream": True, "workload": {"constant": 1}},
                {"route": "/never", "upstream": "/generate_stream", "stream": False, "payload": "any"},
                {"route": "/auto", "upstream": "/generate_stream", "stream": "auto"}]}, f)
        self.start({"UNSECURED": "1", "SGPU_CONFIG": cfg, "SGPU_BENCHMARK": "false"})
        r = raw_request(self.worker.port, http_post_raw(0, "/always", envelope(AUTH, tgi_payload(2))))
        self.assertIn(b"Transfer-Encoding: chunked", r)
        self.assertIn(b"X-Accel-Buffering: no", r)
        self.assertIn(b'"generated_text": "tok0 tok1 "', r)
        r = raw_request(self.worker.port, http_post_raw(0, "/never", envelope(AUTH, tgi_payload(2))))
        self.assertIn(b"Content-Length:", r)
        self.assertNotIn(b"X-Accel-Buffering", r)
        self.assertEqual(r.count(b"data: "), 2)
        r = raw_request(self.worker.port, http_post_raw(0, "/auto", envelope(AUTH, tgi_payload(2))))
        self.assertIn(b"X-Accel-Buffering: no", r)
        os.unlink(cfg)


class TgiGeneration1(WorkerTestCase, unittest.TestCase):
    """SGPU_REPORT_FORMAT=v1 or SGPU_AUTH_SCHEME=fields-v1 select generation 1, whose tgi worker
    (PyWorker workers/tgi) answers 422 for a payload without "parameters"."""

    def check_g1(self, env):
        self.start(dict(env, UNSECURED="1"))
        r = self.worker.post("/generate", envelope(AUTH, {"inputs": "x"}))
        self.assertEqual((r.status, r.body), (422, b'{"payload": {"parameters": "missing parameter"}}'))
        r = self.worker.post("/generate", envelope(AUTH, {"x": 1}))
        self.assertEqual(r.body, b'{"payload": {"inputs": "missing parameter", "parameters": "missing parameter"}}')
        r = self.worker.post("/generate", envelope(AUTH, {"inputs": "x", "parameters": {"max_new_tokens": 2}}))
        self.assertEqual(r.status, 200, r.body)

    def test_v1_report_format(self):
        self.check_g1({"SGPU_REPORT_FORMAT": "v1"})

    def test_fields_v1_scheme(self):
        self.check_g1({"SGPU_AUTH_SCHEME": "fields-v1"})


class LargeBodies(WorkerTestCase, unittest.TestCase):
    """Bodies above SGPU_FULL_PARSE_MAX (1K here): only auth_data is parsed strictly; the
    payload is located, checked and measured from spans, and forwarded byte for byte."""

    def test_tgi_large_body(self):
        from worker_lib import grant as mkgrant
        self.start({"SGPU_FULL_PARSE_MAX": "1K"})
        from worker_lib import GRANT_URL as url
        big = "w\u00e9 " * 2000
        payload = '{"inputs": "%s", "parameters": {"max_new_tokens": 3, "top_p": 0.5}, "x": [1.0, 2e3]}' % big
        g = mkgrant("url", url)
        body = '{"payload":%s, "auth_data": %s}' % (payload, json.dumps(g))
        r = self.worker.request("POST", "/generate", body.encode())
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["generated_text"], "tok0 tok1 tok2 ")
        bad = dict(g)
        bad["url"] = url + "x"
        r = self.worker.request("POST", "/generate", ('{"payload":%s, "auth_data": %s}' % (payload, json.dumps(bad))).encode())
        self.assertEqual(r.status, 401)
        # 422 bodies are the same as for small bodies
        r = self.worker.request("POST", "/generate", ('{"payload": {"pad": "%s"}, "auth_data": %s}' % (big, json.dumps(g))).encode())
        self.assertEqual((r.status, r.body), (422, b'{"payload": {"inputs": "missing parameter"}}'))
        r = self.worker.request("POST", "/generate", ('{"payload": {"inputs": "%s"}}' % big).encode())
        self.assertEqual((r.status, r.body), (422, b'{"auth_data": "field missing"}'))
        for junk in ('{"payload": {"inputs": "%s"}, "auth_data": {"cost": 1,}}' % big,
                     '{"payload": {"inputs": "%s"}' % big, '["%s"]' % big, '{"payload": %s' % ("[" * 3000)):
            r = self.worker.request("POST", "/generate", junk.encode())
            self.assertEqual((r.status, r.body), (422, b'{"error": "invalid JSON"}'), junk[:40])
        # workload from parameters.max_new_tokens while in flight
        slow = '{"inputs": "%s", "parameters": {"max_new_tokens": 77}, "sleep_ms": 800}' % big
        t = threading.Thread(target=lambda: self.worker.request(
            "POST", "/generate", ('{"auth_data": %s, "payload": %s}' % (json.dumps(g), slow)).encode()))
        t.start()
        st = wait_for(lambda: (lambda x: x if x["requests"]["working"] == 1 else None)(self.worker.status()), 5)
        self.assertEqual(st["working_load"], 77.0)
        t.join()

    def test_generic_field_and_verbatim(self):
        self.start({"BACKEND": "generic", "UNSECURED": "1", "SGPU_FULL_PARSE_MAX": "1K",
                    "SGPU_WORKLOAD_FIELD": "job.cost", "SGPU_PARALLEL": "true"}, stub_log=False)
        payload = '{"blob": "%s", "job" : {"cost": 12.5, "n": [1,2]}, "sleep_ms": 600}' % ("z" * 5000)
        body = '{"auth_data": %s, "payload":  %s }' % (json.dumps(AUTH), payload)
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", self.worker.request("POST", "/e", body.encode())))
        t.start()
        st = wait_for(lambda: (lambda x: x if x["requests"]["working"] == 1 else None)(self.worker.status()), 5)
        self.assertEqual(st["working_load"], 12.5)
        t.join()
        self.assertEqual(res["r"].status, 200)
        echo = '{"blob": "%s", "job" : {"cost": 1e2}, "u": "\\u00e9\u00e9"}' % ("y" * 5000)
        r = self.worker.request("POST", "/e", ('{"auth_data": %s, "payload":%s}' % (json.dumps(AUTH), echo)).encode())
        self.assertEqual(r.body, echo.encode())

    def test_openai_unwrap_large(self):
        self.start({"BACKEND": "openai", "UNSECURED": "1", "SGPU_FULL_PARSE_MAX": "1K",
                    "MODEL_LOAD_LOG_MSG": "loaded"})
        inner = '{"prompt": "%s", "max_tokens": 2}' % ("p" * 4000)
        r = self.worker.request("POST", "/v1/completions",
                                ('{"auth_data": %s, "payload": {"input": %s}}' % (json.dumps(AUTH), inner)).encode())
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["choices"][0]["text"], "tok0 tok1 ")


class OpenAI(WorkerTestCase, unittest.TestCase):
    def test_completions_plain_and_stream(self):
        self.start({"BACKEND": "openai", "UNSECURED": "1", "MODEL_LOAD_LOG_MSG": "loaded"})
        r = self.worker.post("/v1/completions", envelope(AUTH, {"prompt": "hi", "max_tokens": 3}))
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["choices"][0]["text"], "tok0 tok1 tok2 ")
        r = self.worker.post("/v1/chat/completions", envelope(AUTH, {
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}))
        self.assertEqual(r.status, 200)
        self.assertTrue(r.body.endswith(b"data: [DONE]\n\n"))
        self.assertEqual(r.body.count(b"data: "), 3)
        # the openai worker's request_parser: payload["input"] is what the model gets
        r = self.worker.post("/v1/completions", envelope(AUTH, {"input": {"prompt": "x", "max_tokens": 2}}))
        self.assertEqual(r.json()["choices"][0]["text"], "tok0 tok1 ")

    def test_bad_config_file_is_a_startup_error(self):
        import subprocess
        import tempfile
        from worker_lib import WORKER_BIN
        d = tempfile.mkdtemp()
        for i, doc in enumerate(['{"handlers": []}', '{"handlers": [{"route": "x"}]}', 'nope',
                                 '{"handlers": [{"route": "/a", "workload": "gpu"}]}',
                                 '{"handlers": [{"route": "/a", "stream": 3}]}']):
            cfg = os.path.join(d, "c%d.json" % i)
            with open(cfg, "w") as f:
                f.write(doc)
            p = subprocess.run([WORKER_BIN, "--config", cfg, "--port", "0", "--report-addr", ""],
                               capture_output=True, timeout=20)
            self.assertEqual(p.returncode, 2, doc)
            self.assertIn(b"SGPU_CONFIG", p.stderr)
            os.unlink(cfg)
        p = subprocess.run([WORKER_BIN, "--port", "0", "--backend", "vllm"], capture_output=True, timeout=120)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"BACKEND", p.stderr)
        os.rmdir(d)



class FlowControlAndTls(WorkerTestCase, unittest.TestCase):
    def test_stalled_client_does_not_grow_memory(self):
        """40 MB streamed to a client that stops reading: the upstream read pauses."""
        self.start({"UNSECURED": "1", "SGPU_BENCHMARK": "false"})
        s = socket.create_connection(("127.0.0.1", self.worker.port), timeout=20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(http_post_raw(0, "/generate_stream",
                                envelope(AUTH, tgi_payload(64, chunks=400, chunk_bytes=100000))))
        time.sleep(1.5)

        def rss_kib():
            with open("/proc/%d/status" % self.worker.proc.pid) as f:
                return int([l for l in f if l.startswith("VmRSS")][0].split()[1])
        if not os.environ.get("SGPU_TEST_WRAPPER"):  # valgrind's own RSS is not the worker's
            self.assertLess(rss_kib(), 40 * 1024)  # far below the 40 MB streamed (ASan builds are larger)
        n = 0
        tail = b""
        while True:
            d = s.recv(1 << 20)
            if not d:
                break
            n += len(d)
            tail = (tail + d)[-16:]
            if tail.endswith(b"\r\n0\r\n\r\n"):
                break
        s.close()
        self.assertGreater(n, 40_000_000)
        wait_for(lambda: self.worker.status()["requests"]["success"] == 1, 5)

    def test_tls_listener(self):
        import ssl
        import subprocess
        import tempfile
        d = tempfile.mkdtemp()
        crt, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
        self.start({"UNSECURED": "1", "USE_SSL": "true", "SGPU_TLS_CERT": crt, "SGPU_TLS_KEY": key,
                    "PUBLIC_IPADDR": "198.51.100.9"}, wait_ready=False)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        import http.client
        c = http.client.HTTPSConnection("127.0.0.1", self.worker.port, context=ctx, timeout=10)
        wait_for(lambda: (c.request("GET", "/health"), c.getresponse().read())[1] == b'{"status": "ready"}', 10)
        c.request("POST", "/generate", json.dumps(envelope(AUTH, tgi_payload(2))))
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        self.assertEqual(json.loads(r.read())["generated_text"], "tok0 tok1 ")
        c.close()
        self.assertIn("url=https://198.51.100.9:", self.worker.log())
        # TLS client leaving mid-stream: upstream aborted, worker unharmed
        for i in range(3):
            raw = socket.create_connection(("127.0.0.1", self.worker.port), timeout=10)
            t = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            t.sendall(http_post_raw(0, "/generate_stream", envelope(AUTH, tgi_payload(
                64, chunks=200, chunk_bytes=50000))))
            t.recv(1000)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            t.close()
        wait_for(lambda: self.stub.stats()["cancelled"] == 3, 10, what="upstream aborted")

        for f in (crt, key):
            os.unlink(f)
        os.rmdir(d)


if __name__ == "__main__":
    unittest.main()
