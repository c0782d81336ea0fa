"""sgpu-gateway benchmark (run by bench/gateway.sh; Debian /usr/bin/python3, stdlib only).

One stack on loopback: sgpu-engine (local provider) -> sgpu-launch -> sgpu-worker in front of
bin/fixtures/stub_model, and sgpu-gateway.  Three ways to make the same request, interleaved
request by request so that machine noise hits them alike, each on its own keep-alive connection:

  direct   the client already holds a grant (fetched from the engine before the clock starts)
           and POSTs the envelope to the worker: the baseline the issue names;
  client   the client routes itself (POST /route/ to the engine) and then calls the worker, both
           timed: what `sgpu call` or Vast's SDK do;
  gateway  one POST to sgpu-gateway (which routes and calls the worker).

Time to first byte = from the first byte of the request sent to the first byte of the answer
received (the answer is then read to its end).  Rows: TGI /generate (buffered JSON) and OpenAI
chat with "stream": true (SSE).  CPU per request from /proc/PID/stat (utime + stime) of the
gateway (over its requests) and of the worker (over all requests it served).
SGPU_BENCH_N (default 2000) requests per way and row.
"""
import json
import os
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "gateway"))
import gwlib as gl  # noqa: E402

el = gl.el
N = int(os.environ.get("SGPU_BENCH_N", "2000"))
TCK = os.sysconf("SC_CLK_TCK")
# SGPU_BENCH_GATEWAY_ARGS: extra sgpu-gateway flags, e.g. "--log-level warn" (no access lines)
GW_ARGS = os.environ.get("SGPU_BENCH_GATEWAY_ARGS", "").split()


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Conn:
    """A keep-alive HTTP/1.1 connection with a minimal response reader."""

    def __init__(self, host, port):
        self.addr = (host, port)
        self.s = socket.create_connection(self.addr)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def post(self, path, body, auth=None):
        """(seconds to first byte, status, body bytes)"""
        h = "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" % path
        if auth:
            h += "Authorization: Bearer %s\r\n" % auth
        req = (h + "Content-Length: %d\r\n\r\n" % len(body)).encode() + body
        t0 = time.perf_counter()
        self.s.sendall(req)
        chunk = self.s.recv(65536)
        t1 = time.perf_counter()
        if not chunk:
            raise ConnectionError("closed")
        self.buf = chunk
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(65536)
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {ln.split(":", 1)[0].lower(): ln.split(":", 1)[1].strip() for ln in lines[1:]}
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            while len(rest) < n:
                rest += self.s.recv(65536)
            body, self.buf = rest[:n], rest[n:]
        else:  # chunked: read to the terminating chunk
            while not rest.endswith(b"0\r\n\r\n"):
                rest += self.s.recv(65536)
            body, self.buf = rest, b""
        return t1 - t0, status, body


def main():
    eng = el.Engine("--scale-down-delay-s", "600", tick_ms=200)
    gw = None
    try:
        launch = gl.stub_launch(eng.dir, {"SGPU_LOG_LEVEL": "warn", "SGPU_MAX_QUEUE_TIME": "none"})
        _, key = gl.create_endpoint(eng, "bench", min_load=1, max_queue_time=1e6)
        eng.create_group("bench", "local", launch)
        el.wait_for(lambda: any(w["status"] == "idle" for w in eng.workers("bench")), timeout=90,
                    what="worker ready")
        w = [w for w in eng.workers("bench") if w["status"] == "idle"][0]
        lpid = int(w["instance"].split(":")[1])
        wpid = [c for c in el_children(lpid) if cmdline(c).endswith("sgpu-worker")][0]
        gw = gl.Gateway(eng.url, *GW_ARGS, workdir=eng.dir)
        whost, wport = w["url"].split("//")[1].split(":")
        rows = [
            ("TGI /generate (JSON)", "/generate", "/endpoints/bench/generate",
             {"inputs": "hello", "parameters": {"max_new_tokens": 8}}),
            ("OpenAI chat, stream (SSE)", "/v1/chat/completions", "/v1/chat/completions",
             {"model": "bench", "stream": True, "max_tokens": 8,
              "messages": [{"role": "user", "content": "hello"}]}),
        ]
        out = []
        for title, wroute, groute, payload in rows:
            body = json.dumps(payload).encode()
            econ = Conn(eng.host, eng.port)
            dcon = Conn(whost, int(wport))
            ccon = Conn(whost, int(wport))
            gcon = Conn(gw.host, gw.port)
            rbody = json.dumps({"endpoint": "bench", "cost": 8.0}).encode()

            def grant():
                _, st, g = econ.post("/route/", rbody, auth=key)
                assert st == 200 and b'"url"' in g, g
                return g

            def envelope(g):
                return b'{"auth_data": ' + g + b', "payload": ' + body + b'}'

            for _ in range(50):  # warm up every path
                dcon.post(wroute, envelope(grant()))
                gcon.post(groute, body, auth=key)
            d, c, g = [], [], []
            g_cpu0, w_cpu0 = cpu_ticks(gw.proc.pid), cpu_ticks(wpid)
            for _ in range(N):
                env = envelope(grant())
                t, st, _ = dcon.post(wroute, env)
                assert st == 200
                d.append(t)
                # client routes itself: route time + the worker's time to first byte
                tr0 = time.perf_counter()
                _, st, gr = econ.post("/route/", rbody, auth=key)
                tr = time.perf_counter() - tr0
                t1, st, _ = ccon.post(wroute, envelope(gr))
                assert st == 200
                c.append(tr + t1)
                t, st, _ = gcon.post(groute, body, auth=key)
                assert st == 200
                g.append(t)
            g_cpu = (cpu_ticks(gw.proc.pid) - g_cpu0) / TCK
            w_cpu = (cpu_ticks(wpid) - w_cpu0) / TCK
            out.append((title, d, c, g, g_cpu / N, w_cpu / (3 * N)))
        print("| request | direct p50 / p99 ms | client routes itself p50 ms | gateway p50 / p99 ms "
              "| added p50 vs direct ms | added p50 vs client-routes ms | gateway CPU/req µs "
              "| worker CPU/req µs |")
        print("|---|---|---|---|---|---|---|---|")
        for title, d, c, g, gc, wc in out:
            def q(v, p):
                return sorted(v)[min(len(v) - 1, int(p * len(v)))] * 1000
            print("| %s | %.3f / %.3f | %.3f | %.3f / %.3f | %+.3f | %+.3f | %.0f | %.0f |" % (
                title, q(d, .5), q(d, .99), statistics.median(c) * 1000, q(g, .5), q(g, .99),
                q(g, .5) - q(d, .5), q(g, .5) - statistics.median(c) * 1000, gc * 1e6,
                wc * 1e6))
        print("\n%d requests per way and row (SGPU_BENCH_N); CPU from /proc/PID/stat (%d Hz); "
              "gateway flags: %s" % (N, TCK, " ".join(GW_ARGS) or "defaults (access lines on)"))
    finally:
        if gw:
            gw.close()
        eng.close()


def el_children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
