"""Connection discipline of `sgpu-model serve` (issue 8, items 7, 11, 14 and the request
deadline): an idle flood past --max-connections evicts the oldest idle connection; a header
trickle is cut by --request-deadline; ambiguous framing gets 400 and chunk extensions are
accepted; --body-budget-kb refuses the biggest upload while a small request is served; at a
lowered fd limit accept() does not spin.  Waits are on events with generous deadlines."""
import json
import os
import resource
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "common"))
from model_server_test import Server  # noqa: E402
import connlib  # noqa: E402

GEN = json.dumps({"inputs": "hello", "parameters": {"max_new_tokens": 2}}).encode()


def sanitizer_errors(server):
    pats = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
    return [ln for ln in server.lines if any(p in ln for p in pats)]


def wait_for(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class ModelConn(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server("--max-connections", "64", "--request-deadline", "1", "--max-body-kb", "256",
                       "--body-budget-kb", "300", "--threads", "1")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        errs = sanitizer_errors(cls.s)
        if errs:
            raise AssertionError("sanitizer: %s" % errs[:5])

    def log(self):
        return "".join(self.s.lines)

    def get(self, path):
        r = connlib.raw(self.s.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        return connlib.status_of(r), r

    def generate(self):
        r = connlib.raw(self.s.port, b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: "
                        b"application/json\r\nContent-Length: %d\r\n\r\n" % len(GEN) + GEN)
        self.assertEqual(connlib.status_of(r), 200, r[:300])
        self.assertIn(b"generated_text", r)

    def test_idle_flood_evicts_oldest_idle(self):
        socks = connlib.idle_flood(self.s.port, 200)
        try:
            self.assertEqual(self.get("/health")[0], 200)
            self.assertTrue(connlib.closed_by_peer(socks[0], 30), "oldest idle not evicted")
            m = self.get("/metrics")[1].decode()
            self.assertGreaterEqual(connlib.metric(m, "sgpu_model_conn_evicted_total"), 1)
        finally:
            for s in socks:
                s.close()

    def test_header_trickle_is_cut(self):
        cut = connlib.trickle_until_closed(self.s.port, b"POST /generate HTTP/1.1\r\nX-A: ",
                                           limit=60)
        self.assertTrue(cut, "a header trickle was never cut")
        wait_for(lambda: "slow_request_closed" in self.log(), 10, "log line")
        self.generate()

    def test_framing_400_and_chunk_extensions(self):
        for name, req in connlib.framing_cases("/generate", GEN):
            with self.subTest(name):
                r = connlib.raw(self.s.port, req)
                self.assertEqual(connlib.status_of(r), 400, (name, r[:200]))
        r = connlib.raw(self.s.port, connlib.chunked_with_extensions(
            "/generate", GEN, b"Content-Type: application/json\r\n"))
        self.assertEqual(connlib.status_of(r), 200, r[:300])
        self.assertIn(b"generated_text", r)
        m = self.get("/metrics")[1].decode()
        self.assertGreaterEqual(connlib.metric(m, "sgpu_model_framing_rejected_total"), 8)

    def test_body_budget(self):
        a = connlib.partial_upload(self.s.port, "/generate", 250000, 200000)
        b = connlib.partial_upload(self.s.port, "/generate", 250000, 200000)
        try:
            self.assertTrue(connlib.closed_by_peer(a, 30) or connlib.closed_by_peer(b, 30),
                            "no upload was refused")
            self.generate()
            m = self.get("/metrics")[1].decode()
            self.assertGreaterEqual(connlib.metric(m, "sgpu_model_body_budget_refused_total"), 1)
        finally:
            a.close()
            b.close()

    def test_streaming_generation_outlives_the_deadline(self):
        """A reply that takes longer than the request deadline is not cut: the deadline ends
        with the request body."""
        body = json.dumps({"inputs": "hello", "parameters": {"max_new_tokens": 40},
                           "stream": True}).encode()
        s = socket.create_connection(("127.0.0.1", self.s.port), timeout=60)
        s.sendall(b"POST /generate_stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                  b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        out = b""
        while not out.endswith(b"0\r\n\r\n"):
            b = s.recv(65536)
            if not b:
                break
            out += b
        s.close()
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:200])
        self.assertTrue(out.endswith(b"0\r\n\r\n"), out[-200:])


class ModelFdLimit(unittest.TestCase):
    def test_emfile_does_not_spin(self):
        if os.environ.get("SGPU_TEST_WRAPPER"):
            self.skipTest("valgrind needs its own file descriptors")
        s = Server("--request-deadline", "600", "--threads", "1")
        try:
            pid = s.proc.pid
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            limit = connlib.open_fds(pid) + 24
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
            socks = []
            for _ in range(120):
                c = socket.create_connection(("127.0.0.1", s.port), timeout=30)
                c.sendall(b"GET /health HTTP/1.1\r\n")
                socks.append(c)
            wait_for(lambda: "accept_paused" in "".join(s.lines), 60, "accept_paused")
            c0 = connlib.proc_cpu_ticks(pid)
            time.sleep(2.0)
            used = connlib.proc_cpu_ticks(pid) - c0
            self.assertLess(used, os.sysconf("SC_CLK_TCK"), "model server spins at the fd limit")
            for c in socks:
                c.close()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))

            def served():
                try:
                    return connlib.status_of(connlib.raw(
                        s.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)) == 200
                except OSError:
                    return False
            wait_for(served, 60, "recovery")
            lines = [ln for ln in s.lines if "accept_paused" in ln]
            self.assertLessEqual(len(lines), 2, lines[:5])
            self.assertIn("why=fd_limit", lines[0])
        finally:
            s.stop()
        self.assertEqual(sanitizer_errors(s), [])


if __name__ == "__main__":
    unittest.main()
