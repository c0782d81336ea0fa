"""Hostile input: truncated bodies, huge headers, slowloris, oversize bodies, invalid
UTF-8, deep nesting, wrong types, garbage, abrupt disconnects.  The worker must answer
clearly (or close), stay up, and (under `make sanitize`) stay clean."""
import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from worker_lib import WorkerTestCase, envelope, grant, raw_request, tgi_payload, wait_for  # noqa: E402

AUTH = {"cost": 1, "endpoint": "e", "reqnum": 1, "request_idx": 7, "signature": "x", "url": "u"}


def post(path, body, extra=b""):
    if isinstance(body, str):
        body = body.encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % len(body) + body)


def status_of(resp):
    line = resp.split(b"\r\n", 1)[0]
    parts = line.split(b" ")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class Hostile(WorkerTestCase, unittest.TestCase):
    def setUp(self):
        self.start({"UNSECURED": "1", "SGPU_MAX_BODY": "64K", "SGPU_MAX_HEADERS": "8K",
                    "SGPU_REQUEST_DEADLINE": "1", "SGPU_IDLE_TIMEOUT": "30"})
        self.port = self.worker.port

    def alive(self):
        self.assertEqual(self.worker.request("GET", "/ping", timeout=5).body, b"pong")
        r = self.worker.post("/generate", envelope(AUTH, tgi_payload(2)))
        self.assertEqual(r.status, 200)

    def tearDown(self):
        self.alive()
        super().tearDown()

    def test_truncated_bodies(self):
        full = json.dumps(envelope(AUTH, tgi_payload())).encode()
        for cut in (1, 10, len(full) // 2, len(full) - 1):
            req = b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(full) + full[:cut]
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(req)
            s.close()  # leaves mid-body
        # a complete Content-Length body that is truncated JSON
        r = raw_request(self.port, post("/generate", full[:-5]))
        self.assertEqual(status_of(r), 422)
        self.assertIn(b'{"error": "invalid JSON"}', r)

    def test_huge_headers_and_uri(self):
        r = raw_request(self.port, b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        self.assertIn(status_of(r), (400, 413, 431, None))
        r = raw_request(self.port, b"GET /" + b"p" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(status_of(r), (400, 414, None))
        many = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
        r = raw_request(self.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        self.assertIn(status_of(r), (400, 413, 431, None))

    def test_body_over_limit_413(self):
        body = json.dumps(envelope(AUTH, tgi_payload(pad="x" * 70000))).encode()
        r = raw_request(self.port, post("/generate", body))
        self.assertEqual(status_of(r), 413)
        # chunked upload over the limit too
        chunk = b"x" * 40000
        req = (b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"%x\r\n" % len(chunk) + chunk + b"\r\n" + b"%x\r\n" % len(chunk) + chunk + b"\r\n0\r\n\r\n")
        r = raw_request(self.port, req)
        self.assertIn(status_of(r), (413, None))

    def test_chunked_upload_ok(self):
        body = json.dumps(envelope(AUTH, tgi_payload(3))).encode()
        req = (b"POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"%x\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
        r = raw_request(self.port, req, read_all=False)
        self.assertEqual(status_of(r), 200)

    def test_slowloris_is_cut_and_others_served(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(b"POST /generate HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 8:
            try:
                s.sendall(b"X")
                s.settimeout(0.2)
                if s.recv(100) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
            self.assertEqual(self.worker.request("GET", "/ping", timeout=5).body, b"pong")
        s.close()
        self.assertTrue(closed, "slow client was never cut off")
        self.assertIn("slow_request_closed", self.worker.log())

    def test_invalid_utf8_and_bad_json(self):
        bodies = [
            b'{"auth_data": {"url": "\xff\xfe"}, "payload": {}}',
            b'{"auth_data": {}, "payload": {"s": "\xc3"}}',
            b'{"auth_data": {}, "payload": {"s": "\xed\xa0\x80"}}',  # encoded surrogate
            b"\x00\x01\x02",
            b"",
            b'{"auth_data": {}, "payload": {}} trailing',
            b"{'single': 1}",
            b'{"a": 01}',
        ]
        for b in bodies:
            r = raw_request(self.port, post("/generate", b))
            self.assertEqual(status_of(r), 422, b)
            self.assertIn(b'{"error": "invalid JSON"}', r)

    def test_deep_nesting(self):
        for depth in (65, 1000, 30000):
            b = '{"auth_data": %s, "payload": %s}' % (json.dumps(AUTH), "[" * depth + "]" * depth)
            r = raw_request(self.port, post("/generate", b))
            self.assertEqual(status_of(r), 422, depth)
        b = '{"auth_data": %s, "payload": {"inputs": "x", "parameters": {}, "d": %s}}' % (
            json.dumps(AUTH), "[" * 50 + "]" * 50)
        self.assertEqual(status_of(raw_request(self.port, post("/generate", b), read_all=False)), 200)

    def test_wrong_types_everywhere(self):
        weird = [None, True, 1.5, -1, 2 ** 80, "s", [], {}, [{"a": []}], float("inf")]
        for v in weird:
            for k in ("cost", "endpoint", "reqnum", "request_idx", "signature", "url"):
                a = dict(AUTH)
                a[k] = v
                r = self.worker.post("/generate", envelope(a, tgi_payload(1)))
                self.assertIn(r.status, (200, 401, 422), (k, v))
            for p in ({"inputs": v, "parameters": v}, {"inputs": "x", "parameters": {"max_new_tokens": v}}):
                r = self.worker.post("/generate", envelope(AUTH, p))
                self.assertIn(r.status, (200, 422), p)

    def test_garbage_and_abrupt_clients(self):
        for g in [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"GET\r\n\r\n", b"HELLO WORLD\r\n\r\n",
                  b"POST /generate HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                  b"POST /generate HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\n12345",
                  b"POST /generate HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"]:
            r = raw_request(self.port, g, timeout=2)
            self.assertIn(status_of(r), (None, 400, 411, 413, 422, 501), g)
        socks = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12")
            socks.append(s)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # RST

    def test_pipelined_and_half_close(self):
        one = post("/generate", json.dumps(envelope(AUTH, tgi_payload(1))))
        r = raw_request(self.port, one * 3 + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5, responses=4)
        self.assertEqual(r.count(b"HTTP/1.1 200 OK"), 4)
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.sendall(post("/generate", json.dumps(envelope(AUTH, tgi_payload(1, sleep_ms=200)))))
        s.shutdown(socket.SHUT_WR)  # looks like a disconnect; must not crash
        try:
            s.recv(65536)
        except OSError:
            pass
        s.close()

    def test_many_concurrent_clients(self):
        errs = []

        def client():
            try:
                for _ in range(10):
                    r = self.worker.post("/generate", envelope(AUTH, tgi_payload(1)), timeout=20)
                    if r.status != 200:
                        errs.append(r.status)
            except Exception as e:  # noqa: BLE001
                errs.append(repr(e))
        ts = [threading.Thread(target=client) for _ in range(20)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errs, [])
        wait_for(lambda: self.worker.status()["requests"]["working"] == 0, 5)


class FdExhaustion(WorkerTestCase, unittest.TestCase):
    def test_connection_flood_at_fd_limit_does_not_spin(self):
        """At the fd limit libevent would retry accept() in a busy loop; the worker evicts the
        oldest idle connection (or pauses accepting when none is idle)."""
        if os.environ.get("SGPU_TEST_WRAPPER"):
            self.skipTest("valgrind needs its own file descriptors")
        import resource
        from worker_lib import Worker

        def low_fds():
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        self.start({"UNSECURED": "1"}, stub_log=False, wait_ready=False)
        self.worker.stop()
        self.worker = Worker(self.worker.env, preexec_fn=low_fds, wait_ready=True)
        pid = self.worker.proc.pid

        def cpu():
            with open("/proc/%d/stat" % pid) as f:
                x = f.read().rsplit(")", 1)[1].split()
            return int(x[11]) + int(x[12])
        socks = [socket.create_connection(("127.0.0.1", self.worker.port), timeout=5) for _ in range(120)]
        time.sleep(0.3)
        c0 = cpu()
        time.sleep(1.0)
        used = cpu() - c0
        for s in socks:
            s.close()
        self.assertLess(used, os.sysconf("SC_CLK_TCK") // 2, "worker spins at the fd limit")
        wait_for(lambda: self.worker.request("GET", "/ping", timeout=2).body == b"pong", 10, what="recovery")
        log = self.worker.log()
        self.assertTrue("accept_paused" in log or "connection_evicted" in log, log[-2000:])


class HostileLargeBodyPath(Hostile):
    """The same hostile inputs with the large-body path (SGPU_FULL_PARSE_MAX=256) taken."""

    def setUp(self):
        self.start({"UNSECURED": "1", "SGPU_MAX_BODY": "64K", "SGPU_MAX_HEADERS": "8K",
                    "SGPU_REQUEST_DEADLINE": "1", "SGPU_IDLE_TIMEOUT": "30",
                    "SGPU_FULL_PARSE_MAX": "256"})
        self.port = self.worker.port

    def test_invalid_utf8_and_bad_json(self):
        # small bodies still get the strict parse; big broken ones get 422 at the top level
        super().test_invalid_utf8_and_bad_json()
        pad = "x" * 400
        for b in ['{"auth_data": {"a": "%s"}, "payload": {}' % pad, '{"auth_data": %s}x' % json.dumps(pad),
                  '{"auth_data": {"a": "%s\xff"}, "payload": {}}' % pad]:
            r = raw_request(self.port, post("/generate", b.encode("latin-1")))
            self.assertEqual(status_of(r), 422, b[:30])


if __name__ == "__main__":
    unittest.main()
