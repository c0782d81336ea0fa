"""Connection discipline of sgpu-worker (issue 8, items 7, 8, 11, 12, 14): an idle flood past
SGPU_MAX_CONNECTIONS evicts the oldest idle connection instead of locking clients out; a TLS
ClientHello trickled one byte at a time is cut by the request deadline; ambiguous framing gets
400 and chunk extensions are accepted; the global body budget refuses the biggest upload while
a small request is served; a model server sending endless headers gets a 502 and does not grow
the worker.  Every wait is on an event with a generous deadline."""
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "common"))
from worker_lib import WorkerTestCase, envelope, tgi_payload, wait_for  # noqa: E402
import connlib  # noqa: E402

AUTH = {"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 7, "signature": "x", "url": "u"}


class ConnLimits(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"UNSECURED": "1", "SGPU_MAX_CONNECTIONS": "64", "SGPU_IDLE_TIMEOUT": "300",
                    "SGPU_REQUEST_DEADLINE": "300", "SGPU_MAX_BODY": "200K",
                    "SGPU_BODY_BUDGET": "256K"})
        self.port = self.worker.port

    def good(self):
        r = self.worker.post("/generate", envelope(AUTH, tgi_payload(2)), timeout=30)
        self.assertEqual(r.status, 200)

    def test_idle_flood_evicts_oldest_idle(self):
        socks = connlib.idle_flood(self.port, 200)
        try:
            self.good()  # before the fix: accept paused at 64 until the idle timeout
            self.assertTrue(connlib.closed_by_peer(socks[0], 30), "oldest idle not evicted")
            m = self.worker.request("GET", "/metrics").body.decode()
            self.assertGreaterEqual(connlib.metric(m, "sgpu_worker_conn_evicted_total"), 1)
        finally:
            for s in socks:
                s.close()

    def test_body_budget_refuses_biggest_upload(self):
        a = connlib.partial_upload(self.port, "/generate", 190000, 150000)
        b = connlib.partial_upload(self.port, "/generate", 190000, 150000)
        try:
            # 300 KB held > 256 KB budget: one of them is refused (503, then closed)
            cut = [s for s in (a, b) if connlib.closed_by_peer(s, 30)]
            self.assertTrue(cut, "no upload was refused")
            self.good()
            m = self.worker.request("GET", "/metrics").body.decode()
            self.assertGreaterEqual(connlib.metric(m, "sgpu_worker_body_budget_refused_total"), 1)
            self.assertIn("why=body_budget", self.worker.log())
        finally:
            a.close()
            b.close()

    def test_budget_answer_is_json_503(self):
        a = connlib.partial_upload(self.port, "/generate", 190000, 150000)
        b = connlib.partial_upload(self.port, "/generate", 190000, 150000)
        try:
            got = b""
            for s in (a, b):
                s.settimeout(30)
                try:
                    got += s.recv(65536)
                except (socket.timeout, OSError):
                    pass
                if got:
                    break
            self.assertEqual(connlib.status_of(got), 503, got[:200])
            self.assertIn(b"application/json", got)
            self.assertIn("error", json.loads(got.split(b"\r\n\r\n", 1)[1]))
        finally:
            a.close()
            b.close()

    def test_framing_400(self):
        body = json.dumps(envelope(AUTH, tgi_payload(2))).encode()
        for name, req in connlib.framing_cases("/generate", body):
            with self.subTest(name):
                r = connlib.raw(self.port, req)
                self.assertEqual(connlib.status_of(r), 400, (name, r[:200]))
        m = self.worker.request("GET", "/metrics").body.decode()
        self.assertGreaterEqual(connlib.metric(m, "sgpu_worker_framing_rejected_total"), 8)
        self.good()

    def test_chunk_extensions_accepted(self):
        body = json.dumps(envelope(AUTH, tgi_payload(3))).encode()
        r = connlib.raw(self.port, connlib.chunked_with_extensions("/generate", body))
        self.assertEqual(connlib.status_of(r), 200, r[:300])
        self.assertIn(b"generated_text", r)
        # pipelined: a chunked request then a plain one on the same connection
        req = connlib.chunked_with_extensions("/generate", body) + (
            b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        s.sendall(req)
        out = b""
        while out.count(b"HTTP/1.1 ") < 2 or not out.endswith(b"pong"):
            b = s.recv(65536)
            if not b:
                break
            out += b
        s.close()
        self.assertTrue(out.endswith(b"pong"), out[-300:])

    def test_chunked_over_max_body_413(self):
        big = b"x" * 150000
        req = (b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
               (b"%x\r\n" % len(big) + big + b"\r\n") * 2 + b"0\r\n\r\n")
        r = connlib.raw(self.port, req)
        self.assertIn(connlib.status_of(r), (413, None))
        self.good()


class EndlessUpstreamHeaders(WorkerTestCase, unittest.TestCase):
    def test_endless_headers_502_and_bounded(self):
        self.start({"UNSECURED": "1"})
        pid = self.worker.proc.pid
        rss0 = connlib.proc_status_kb(pid, "VmRSS")
        p = tgi_payload(2)
        p["endless_headers"] = True
        r = self.worker.post("/generate", envelope(AUTH, p), timeout=120)
        self.assertEqual(r.status, 502)
        self.assertIn("error", r.json())
        grown = connlib.proc_status_kb(pid, "VmHWM") - rss0
        self.assertLess(grown, 64 * 1024, "worker grew by %d KiB" % grown)
        r = self.worker.post("/generate", envelope(AUTH, tgi_payload(2)), timeout=30)
        self.assertEqual(r.status, 200)


class TlsHandshakeDeadline(WorkerTestCase, unittest.TestCase):
    def test_trickled_client_hello_is_cut(self):
        d = tempfile.mkdtemp()
        crt, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", "1", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
        self.start({"UNSECURED": "1", "USE_SSL": "true", "SGPU_TLS_CERT": crt,
                    "SGPU_TLS_KEY": key, "SGPU_REQUEST_DEADLINE": "1", "SGPU_IDLE_TIMEOUT": "300"},
                   wait_ready=False)
        port = self.worker.port
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        hello = connlib.CLIENT_HELLO_PREFIX + b"\x00" * 600
        cut = False
        end = time.monotonic() + 60  # the hello record (512 bytes) would take 128 s to send
        i = 0
        while time.monotonic() < end and i < len(hello):
            try:
                s.sendall(hello[i:i + 1])
                i += 1
                s.settimeout(0.25)
                if s.recv(100) == b"":
                    cut = True
                    break
            except socket.timeout:
                pass
            except OSError:
                cut = True
                break
        s.close()
        self.assertTrue(cut, "trickled ClientHello was never cut")
        self.assertLess(i, 512, "cut only when the record was complete, not by the deadline")
        wait_for(lambda: "slow_request_closed" in self.worker.log(), 10, what="log line")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        import http.client
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        c.request("GET", "/ping")
        self.assertEqual(c.getresponse().read(), b"pong")
        c.close()


if __name__ == "__main__":
    unittest.main()
