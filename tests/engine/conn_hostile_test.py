"""Connection discipline of sgpu-engine (issue 8, items 5, 6, 7, 11, 14): at the fd limit
accept() must not spin (one "accept_paused" line per episode, CPU idle, served again after the
flood); header trickles are cut by --request-deadline-s; an idle flood past --max-connections
evicts the oldest idle connection; ambiguous framing gets 400 and chunk extensions are
accepted; --body-budget-mb refuses the biggest upload.  Waits are on events with generous
deadlines; the CPU check can only fail when the engine really spins."""
import os
import resource
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "common"))
from enginelib import Engine, wait_for  # noqa: E402
import connlib  # noqa: E402


class EngineConn(unittest.TestCase):
    def setUp(self):
        self.e = Engine("--max-connections", "64", "--request-deadline-s", "1",
                        "--body-budget-mb", "0.25")

    def tearDown(self):
        self.e.close()

    def health(self):
        st, data, _ = self.e.raw("GET", "/health", timeout=30)
        self.assertEqual(st, 200)

    def metrics(self):
        st, data, _ = self.e.raw("GET", "/metrics", timeout=30)
        return data.decode()

    def test_header_trickle_is_cut(self):
        cut = connlib.trickle_until_closed(self.e.port, b"GET /health HTTP/1.1\r\nX-A: ",
                                           limit=60)
        self.assertTrue(cut, "a header trickle was never cut")
        wait_for(lambda: "slow_request_closed" in self.e.logtext(), 10, what="log line")
        self.assertGreaterEqual(connlib.metric(self.metrics(), "sgpu_engine_conn_deadline_closed_total"), 1)
        self.health()

    def test_idle_flood_evicts_oldest_idle(self):
        socks = connlib.idle_flood(self.e.port, 200)
        try:
            self.health()
            self.assertTrue(connlib.closed_by_peer(socks[0], 30), "oldest idle not evicted")
            self.assertGreaterEqual(connlib.metric(self.metrics(), "sgpu_engine_conn_evicted_total"), 1)
        finally:
            for s in socks:
                s.close()

    def test_framing_400_and_chunk_extensions(self):
        for name, req in connlib.framing_cases("/route/", b'{"endpoint": "x"}'):
            with self.subTest(name):
                r = connlib.raw(self.e.port, req)
                self.assertEqual(connlib.status_of(r), 400, (name, r[:200]))
        r = connlib.raw(self.e.port, connlib.chunked_with_extensions(
            "/route/", b'{"endpoint": "nope", "cost": 1}'))
        self.assertNotIn(connlib.status_of(r), (400, 413, None), r[:300])
        self.assertIn(b"application/json", r)
        self.assertGreaterEqual(connlib.metric(self.metrics(), "sgpu_engine_framing_rejected_total"), 8)
        self.health()

    def test_body_budget(self):
        # the engine's own body limit is 4 MiB; two uploads of 200 KB exceed the 256 KiB budget
        a = connlib.partial_upload(self.e.port, "/route/", 1000000, 200000)
        b = connlib.partial_upload(self.e.port, "/route/", 1000000, 200000)
        try:
            self.assertTrue(connlib.closed_by_peer(a, 30) or connlib.closed_by_peer(b, 30),
                            "no upload was refused")
            self.health()
            self.assertGreaterEqual(connlib.metric(self.metrics(), "sgpu_engine_body_budget_refused_total"), 1)
        finally:
            a.close()
            b.close()


class EngineFdLimit(unittest.TestCase):
    def test_emfile_does_not_spin(self):
        if os.environ.get("SGPU_TEST_WRAPPER"):
            self.skipTest("valgrind needs its own file descriptors")
        e = Engine("--request-deadline-s", "600")
        try:
            pid = e.proc.pid
            e.raw("GET", "/health")
            soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            limit = connlib.open_fds(pid) + 24
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, hard))
            # connections in the middle of a request head: nothing idle to evict
            socks = []
            for _ in range(120):
                s = socket.create_connection(("127.0.0.1", e.port), timeout=30)
                s.sendall(b"GET /health HTTP/1.1\r\n")
                socks.append(s)
            wait_for(lambda: "accept_paused" in e.logtext(), 60, what="accept_paused")
            c0 = connlib.proc_cpu_ticks(pid)
            time.sleep(2.0)
            used = connlib.proc_cpu_ticks(pid) - c0
            self.assertLess(used, os.sysconf("SC_CLK_TCK"), "engine spins at the fd limit")
            for s in socks:
                s.close()
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
            wait_for(lambda: e.raw("GET", "/health", timeout=5)[0] == 200, 60, what="recovery")
            lines = [ln for ln in e.logtext().splitlines() if "accept_paused" in ln]
            self.assertLessEqual(len(lines), 2, lines[:5])
            self.assertIn("why=fd_limit", lines[0])
        finally:
            e.close()


if __name__ == "__main__":
    unittest.main()
