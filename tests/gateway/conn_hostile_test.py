"""Connection discipline of sgpu-gateway (issue 8's rules for every server): header trickles are
cut by --header-timeout, an idle flood past --max-connections evicts the oldest idle connection
and a good request is still served, and ambiguous framing gets 400 while chunk extensions are
accepted.  The gateway needs no engine for these (its engine URL points at a closed port; the
routed request gets an error answer in the client's shape, which is what the test checks).
Waits are on events with generous deadlines."""
import os
import socket
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
import gwlib as gl  # noqa: E402
import connlib  # noqa: E402


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class GatewayConn(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="sgpu-gw-conn-")
        self.gw = gl.Gateway("http://127.0.0.1:%d" % closed_port(), "--max-connections", "64",
                             "--header-timeout", "1", workdir=self.tmp.name)

    def tearDown(self):
        self.gw.close()
        self.tmp.cleanup()

    def metrics(self):
        st, _, data = self.gw.request("GET", "/metrics")
        self.assertEqual(st, 200)
        return data.decode()

    def health(self):
        st, _, _ = self.gw.request("GET", "/health")
        self.assertEqual(st, 200)

    def test_header_trickle_is_cut(self):
        cut = connlib.trickle_until_closed(self.gw.port, b"GET /health HTTP/1.1\r\nX-A: ",
                                           limit=60)
        self.assertTrue(cut, "a header trickle was never cut")
        self.assertGreaterEqual(
            connlib.metric(self.metrics(), "sgpu_gateway_conn_deadline_closed_total"), 1)
        self.health()

    def test_idle_flood_evicts_oldest_idle(self):
        socks = connlib.idle_flood(self.gw.port, 200)
        try:
            self.health()
            self.assertTrue(connlib.closed_by_peer(socks[0], 30), "oldest idle not evicted")
            self.assertGreaterEqual(
                connlib.metric(self.metrics(), "sgpu_gateway_conn_evicted_total"), 1)
        finally:
            for s in socks:
                s.close()

    def test_framing_400_and_chunk_extensions(self):
        body = b'{"model": "x", "messages": []}'
        for name, req in connlib.framing_cases("/v1/chat/completions", body):
            with self.subTest(name):
                r = connlib.raw(self.gw.port, req)
                self.assertEqual(connlib.status_of(r), 400, (name, r[:200]))
        r = connlib.raw(self.gw.port, connlib.chunked_with_extensions(
            "/v1/chat/completions", body, b"Authorization: Bearer k\r\n"))
        self.assertNotIn(connlib.status_of(r), (400, 413, None), r[:300])
        self.assertIn(b'"error"', r)
        self.assertGreaterEqual(
            connlib.metric(self.metrics(), "sgpu_gateway_framing_rejected_total"), 8)
        self.health()


if __name__ == "__main__":
    unittest.main()
