"""sgpu-worker benchmark (run by bench/worker.sh; Debian /usr/bin/python3 + wrk).

Everything on loopback against bin/fixtures/stub_model, in one run:
  - wrk POST ~1.4 KB envelopes: direct to the stub (payload only) vs through the
    worker, at 1 and 32 connections; worker with per-request RSA verification
    (SGPU_URL_CACHE=0) and with cached url-scheme grants;
  - worker CPU per request from /proc/PID/stat (utime+stime) around each run;
  - added p50/p99 latency, throughput ratio, RSS;
  - exec -> first /ping answer, exec -> ready (/health 200), exec -> first ready report;
  - streamed-chunk delay: stub send time (CLOCK_MONOTONIC in each event) to client receipt,
    direct vs through the worker.
Prints a markdown table.  SGPU_BENCH_SECONDS (default 5) sets each wrk run's length.
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "worker"))
from worker_lib import STUB_BIN, WORKER_BIN, Sink, Stub, envelope, free_port, grant, pubkey_pem  # noqa: E402

SECS = int(os.environ.get("SGPU_BENCH_SECONDS", "5"))
TCK = os.sysconf("SC_CLK_TCK")
LUA = """
local f = io.open(os.getenv("BODY"), "rb"); local body = f:read("*a"); f:close()
wrk.method = "POST"; wrk.body = body; wrk.headers["Content-Type"] = "application/json"
"""


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid, key="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def wrk(url, body_path, conns, lua):
    env = dict(os.environ, BODY=body_path)
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % SECS, "-s", lua, "--latency", url],
                         env=env, capture_output=True, text=True).stdout
    n = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"n": n, "rps": rps, "p50": p50, "p99": p99, "bad": int(bad.group(1)) if bad else 0}


def start_worker(env, cwd):
    port = free_port()
    # the worker reports (and accepts grants for) http://127.0.0.1:3000, the url of the grant below
    e = {"PATH": os.environ["PATH"], "WORKER_PORT": str(port), "SGPU_LOG_LEVEL": "warn",
         "VAST_TCP_PORT_%d" % port: "3000"}
    e.update(env)
    t0 = time.monotonic()
    p = subprocess.Popen([WORKER_BIN], env=e, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, port, t0


def first_answer(port, path, want=200, limit=10.0):
    end = time.monotonic() + limit
    req = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
    while time.monotonic() < end:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(req)
            data = s.recv(4096)
            s.close()
            if data.startswith(b"HTTP/1.1 %d" % want):
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.0005)
    raise RuntimeError("no answer on %s" % path)


def stop(p):
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def chunk_delays(port, path, body):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw = json.dumps(body).encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
              % (path.encode(), len(raw)) + raw)
    buf = b""
    delays = []
    seen = 0
    while b"\r\n0\r\n\r\n" not in buf:
        d = s.recv(65536)
        now = time.monotonic()
        if not d:
            break
        buf += d
        ts = re.findall(rb'"stub_t": ([\d.]+)', buf)
        for t in ts[seen:]:
            delays.append((now - float(t)) * 1000)
        seen = len(ts)
    s.close()
    return delays


def main():
    tmp = tempfile.mkdtemp(prefix="sgpu-bench-")
    lua = os.path.join(tmp, "post.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    with open(os.path.join(tmp, "pub.pem"), "wb") as f:
        f.write(pubkey_pem())
    payload = {"inputs": "x" * 800, "parameters": {"max_new_tokens": 16, "temperature": 0.7}}
    g = grant("url", "http://127.0.0.1:3000", reqnum=1, request_idx=1)
    body = os.path.join(tmp, "body.json")
    direct = os.path.join(tmp, "payload.json")
    with open(body, "w") as f:
        json.dump(envelope(g, payload), f)
    with open(direct, "w") as f:
        json.dump(payload, f)
    bigp = {"inputs": "word " * 20000, "parameters": {"max_new_tokens": 16}, "list": list(range(2000))}
    big, bigdirect = os.path.join(tmp, "big.json"), os.path.join(tmp, "bigpayload.json")
    with open(big, "w") as f:
        json.dump(envelope(g, bigp), f)
    with open(bigdirect, "w") as f:
        json.dump(bigp, f)
    sizes = {"1k": (os.path.getsize(body), os.path.getsize(direct)),
             "110k": (os.path.getsize(big), os.path.getsize(bigdirect))}
    stub = Stub()
    base_env = {"BACKEND": "generic", "MODEL_SERVER_URL": stub.url, "REPORT_ADDR": "",
                "PUBKEY_FILE": os.path.join(tmp, "pub.pem"), "SGPU_MAX_QUEUE_TIME": "none"}
    rows = {}
    try:
        # start-up
        pings, readies, reports = [], [], []
        for _ in range(5):
            p, port, t0 = start_worker(dict(base_env), tmp)
            pings.append((first_answer(port, "/ping") - t0) * 1000)
            readies.append((first_answer(port, "/health") - t0) * 1000)
            stop(p)
        sink = Sink()
        for _ in range(3):
            sink.clear()
            p, port, t0 = start_worker(dict(base_env, REPORT_ADDR=sink.url), tmp)
            end = time.monotonic() + 10
            while time.monotonic() < end and not [r for r in sink.reports() if r["json"]["max_perf"] > 0]:
                time.sleep(0.001)
            r = [r for r in sink.reports() if r["json"]["max_perf"] > 0][0]
            reports.append((r["t"] - t0) * 1000)
            stop(p)
        sink.stop()

        for c in (1, 32):
            rows[("direct", "1k", c)] = wrk(stub.url + "/bench", direct, c, lua)
        rows[("direct", "110k", 1)] = wrk(stub.url + "/bench", bigdirect, 1, lua)
        for name, cache in (("worker, RSA verify per request", "0"), ("worker, cached url grants", "256")):
            p, port, _ = start_worker(dict(base_env, SGPU_URL_CACHE=cache), tmp)
            first_answer(port, "/health")
            runs = [("1k", 1), ("1k", 32)] + ([("110k", 1)] if cache != "0" else [])
            for size, c in runs:
                t0 = cpu_ticks(p.pid)
                r = wrk("http://127.0.0.1:%d/bench" % port, body if size == "1k" else big, c, lua)
                r["cpu_us"] = (cpu_ticks(p.pid) - t0) / TCK / r["n"] * 1e6
                r["rss"] = rss_kib(p.pid)
                r["hwm"] = rss_kib(p.pid, "VmHWM")
                rows[(name, size, c)] = r
            stop(p)

        # streamed chunk delay (TGI stream, 40 events, 10 ms apart)
        sp = {"inputs": "x", "parameters": {"max_new_tokens": 40}, "chunks": 40, "chunk_delay_ms": 10}
        p, port, _ = start_worker(dict(base_env, BACKEND="tgi", UNSECURED="1", SGPU_BENCHMARK="false"), tmp)
        first_answer(port, "/health")
        d_direct = chunk_delays(stub.port, "/generate_stream", sp)
        d_worker = chunk_delays(port, "/generate_stream", envelope(g, sp))
        stop(p)
    finally:
        stub.stop()

    def med(v):
        return statistics.median(v)

    print("| path | body B (worker / direct) | conns | req/s | p50 ms | p99 ms | added p50 ms | added p99 ms | x direct | worker CPU us/req | RSS KiB (peak) | non-2xx |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, size, c), r in sorted(rows.items(), key=lambda kv: (kv[0][1] != "1k", kv[0][0] != "direct", kv[0][0], kv[0][2])):
        d = rows[("direct", size, c)]
        sz = "%d / %d" % sizes[size]
        if name == "direct":
            print("| direct to stub | %s | %d | %.0f | %.3f | %.3f | - | - | 1.00 | - | - | %d |" % (sz, c, r["rps"], r["p50"], r["p99"], r["bad"]))
        else:
            print("| %s | %s | %d | %.0f | %.3f | %.3f | %+.3f | %+.3f | %.2f | %.1f | %d (%d) | %d |" % (
                name, sz, c, r["rps"], r["p50"], r["p99"], r["p50"] - d["p50"], r["p99"] - d["p99"],
                r["rps"] / d["rps"], r["cpu_us"], r["rss"], r["hwm"], r["bad"]))
    print()
    print("| start-up (median) | ms |")
    print("|---|---|")
    print("| exec -> first /ping answer | %.1f |" % med(pings))
    print("| exec -> /health 200 (ready) | %.1f |" % med(readies))
    print("| exec -> first ready /worker_status/ received | %.1f |" % med(reports))
    print()
    print("| streamed chunk delay (stub send -> client receipt), 40 events | median ms | p99 ms |")
    print("|---|---|---|")
    q = lambda v: sorted(v)[max(0, int(len(v) * 0.99) - 1)]  # noqa: E731
    print("| direct | %.3f | %.3f |" % (med(d_direct), q(d_direct)))
    print("| through the worker | %.3f | %.3f |" % (med(d_worker), q(d_worker)))
    print("| added by the worker | %+.3f | %+.3f |" % (med(d_worker) - med(d_direct), q(d_worker) - q(d_direct)))
    sys.stdout.flush()


if __name__ == "__main__":
    if not (os.path.exists(WORKER_BIN) and os.path.exists(STUB_BIN)):
        sys.exit("build first: make")
    main()
