"""sgpu-engine benchmarks (run by bench/engine.sh; stdlib only).

routes   /route/ throughput per signing scheme: the engine pinned to CPU 0, wrk pinned to
         CPU 1; routes per engine CPU-second (= per core) from /proc/<pid>/stat.  8 ready fake
         workers (max_perf huge, so none is ever full).  Next to it: the RSA-2048 sign ceiling
         from `openssl speed` on the same CPU (fields-* sign once per route).
trace    a recorded bursty trace (bench/engine_trace.csv: arrival time, cost) replayed through
         the real engine with fake workers (tests/engine/enginelib.py: FIFO service at
         max_perf, 0.5 s model load): the autoscaler vs a fixed pool sized for the peak and one
         sized for the mean.  Reports p50/p99 queue time (arrival -> service start, including
         global-queue waits) and worker-seconds (running instances integrated over the replay;
         parked instances are listed separately).
"""
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "engine"))
import enginelib as el  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def openssl_sign_per_s():
    try:
        out = subprocess.run(["taskset", "-c", "0", "openssl", "speed", "-seconds", "2", "rsa2048"],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"rsa 2048 bits\s+([\d.]+)s\s+([\d.]+)s\s+([\d.]+)\s+([\d.]+)", out)
    return float(m.group(3)) if m else None


def bench_routes(seconds=5.0, conns=16, sign_threads=0, schemes=("url", "fields-v2", "fields-v1")):
    eng = el.Engine("--unavailable-after-s", "100000", "--sign-threads", str(sign_threads),
                    tick_ms=1000)
    if not sign_threads:
        subprocess.run(["taskset", "-pc", "0", str(eng.proc.pid)], capture_output=True)
    try:
        rows = []
        stop = threading.Event()
        perf = 1e6
        for scheme in ("url", "fields-v2", "fields-v1"):
            eng.create_endpoint("b-" + scheme, min_load=8 * perf, min_workers=0, max_workers=8,
                                target_util=1.0, cold_mult=1, max_queue_time=1e6,
                                target_queue_time=0, sig_scheme=scheme)
            eng.create_group("b-" + scheme, "command", {
                "create": "echo $SGPU_WORKER_ID $SGPU_MASTER_TOKEN >> %s/tokens" % eng.dir,
                "destroy": "true"})

        def reporter():
            import http.client
            c = http.client.HTTPConnection(eng.host, eng.port, timeout=5)
            while not stop.is_set():
                try:
                    with open(os.path.join(eng.dir, "tokens")) as f:
                        toks = dict(line.split() for line in f if line.strip())
                except OSError:
                    toks = {}
                for w in eng.workers():
                    body = {"id": w["id"], "mtoken": toks.get(str(w["id"]), ""), "version": "1.1.0", "loadtime": 1.0,
                            "cur_load": 0.0, "new_load": 0.0, "error_msg": "", "max_perf": perf,
                            "cur_perf": 0.0, "num_requests_working": 0,
                            "url": "http://127.0.0.1:%d" % (30000 + w["id"])}
                    c.request("POST", "/worker_status/", body=json.dumps(body))
                    c.getresponse().read()
                stop.wait(0.5)
            c.close()

        t = threading.Thread(target=reporter, daemon=True)
        t.start()
        el.wait_for(lambda: len([w for w in eng.workers() if w["status"] == "idle"]) == 24,
                    timeout=60, what="24 idle workers")
        tmp = tempfile.mkdtemp(prefix="sgpu-bench-engine-")
        for scheme in schemes:
            lua = os.path.join(tmp, scheme + ".lua")
            with open(lua, "w") as f:
                f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = '
                        '"application/json"\n' % json.dumps(json.dumps(
                            {"endpoint": "b-" + scheme, "api_key": eng.key, "cost": 1.0})))
            c0 = cpu_seconds(eng.proc.pid)
            t0 = time.time()
            out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns,
                                  "-d%ds" % seconds, "--latency", "-s", lua, eng.url + "/route/"],
                                 capture_output=True, text=True).stdout
            wall = time.time() - t0
            cpu = cpu_seconds(eng.proc.pid) - c0
            m = re.search(r"(\d+) requests in", out)
            n = int(m.group(1)) if m else 0
            non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
            p50 = re.search(r"50%\s+([\d.]+\w+)", out)
            p99 = re.search(r"99%\s+([\d.]+\w+)", out)
            rows.append((scheme + (" +%dthr" % sign_threads if sign_threads else ""), n / wall, n / cpu if cpu > 0 else 0, cpu / wall,
                         p50.group(1) if p50 else "?", p99.group(1) if p99 else "?",
                         int(non2xx.group(1)) if non2xx else 0))
        stop.set()
        t.join(5)
        shutil.rmtree(tmp, ignore_errors=True)
        return rows
    finally:
        eng.close()


def load_trace(path):
    with open(path) as f:
        return [(float(r["t"]), float(r["cost"])) for r in csv.DictReader(f)]


def replay(trace, mode, pool=0, perf=100.0, load_s=0.5):
    """mode: 'auto' | 'fixed'.  Returns dict of results."""
    flags = ["--panic-window-s", "2", "--stable-window-s", "10", "--scale-down-delay-s", "5",
             "--drain-grace-s", "1", "--unavailable-after-s", "10"]
    eng = el.Engine(*flags, tick_ms=100)
    fleet = el.Fleet(eng, perf=perf, load_s=load_s)
    try:
        if mode == "auto":
            eng.create_endpoint("t", min_load=0, min_workers=1, max_workers=20, target_util=0.8,
                                cold_mult=1, target_queue_time=1.0, max_queue_time=1.0,
                                inactivity_timeout=5)
        else:
            eng.create_endpoint("t", min_load=pool * perf, min_workers=0, max_workers=pool,
                                target_util=1.0, cold_mult=1, target_queue_time=0,
                                max_queue_time=1e6, inactivity_timeout=-1)
        eng.create_group("t", "command", fleet.launch)
        if mode == "fixed":
            el.wait_for(lambda: len([w for w in fleet.live() if w.running and
                                     w.ready_at < time.time()]) == pool, timeout=60,
                        what="fixed pool ready")
        else:
            el.wait_for(lambda: len([w for w in fleet.live() if not w.running]) >= 1, timeout=60,
                        what="one parked worker")
        client = el.Client(eng, fleet, "t", cost=trace[0][1], nthreads=24)
        waits = []  # per request: arrival -> service start at the worker
        samples = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                live = fleet.live()
                samples.append((time.time(), sum(1 for w in live if w.running),
                                sum(1 for w in live if not w.running)))
                stop.wait(0.1)

        st = threading.Thread(target=sampler, daemon=True)
        st.start()
        t0 = time.time()
        for (ta, cost) in trace:
            d = t0 + ta - time.time()
            if d > 0:
                time.sleep(d)
            client.add(time.time())
        end_arrivals = time.time()
        el.wait_for(lambda: len(client.results) + len(client.errors) >= len(trace), timeout=120,
                    what="trace served")
        # results: (t_arrival, t_granted, worker_id); service start = finish - cost/perf
        # reconstruct from the worker FIFO: the queue wait at the worker is recorded below
        stop.set()
        st.join(5)
        t_end = max(end_arrivals, max(r[1] for r in client.results)) + 0.0
        ws = 0.0
        parked = 0.0
        for (a, b) in zip(samples, samples[1:]):
            if a[0] > t_end:
                break
            ws += a[1] * (b[0] - a[0])
            parked += a[2] * (b[0] - a[0])
        for r in client.results:
            waits.append(r[1] - r[0] + r[3])
        client.close()
        waits.sort()

        def pct(p):
            return waits[min(len(waits) - 1, int(math.ceil(p * len(waits))) - 1)]
        return {"n": len(waits), "p50": pct(0.50), "p99": pct(0.99), "max": waits[-1],
                "worker_s": ws, "parked_s": parked, "max_live": fleet.max_live,
                "errors": len(client.errors), "violations": len(fleet.violations),
                "duration": t_end - t0}
    finally:
        fleet.close()
        eng.close()


def gen_trace(path, seed=7):
    """The recorded trace: 60 s, cost 10 per request; base 4 req/s, a 4 s burst at 40 req/s,
    a 1 s spike at 80 req/s, a ramp to 30 req/s and an idle tail (Poisson arrivals)."""
    import random
    rnd = random.Random(seed)

    def rate(t):
        if 8 <= t < 12:
            return 40.0
        if 25 <= t < 26:
            return 80.0
        if 33 <= t < 43:
            return 4 + 26 * (t - 33) / 10
        if t >= 50:
            return 0.2
        return 4.0
    t, rows = 0.0, []
    while t < 60:
        lam_max = 80.0
        t += rnd.expovariate(lam_max)
        if t < 60 and rnd.random() < rate(t) / lam_max:
            rows.append((round(t, 4), 10.0))
    with open(path, "w") as f:
        f.write("t,cost\n")
        for a, c in rows:
            f.write("%s,%s\n" % (a, c))


def main():
    if sys.argv[1:2] == ["gen-trace"]:
        gen_trace(os.path.join(ROOT, "bench", "engine_trace.csv"))
        return
    which = sys.argv[1:] or ["routes", "trace"]
    if "routes" in which:
        sign = openssl_sign_per_s()
        rows = bench_routes()
        rows += bench_routes(sign_threads=2, schemes=("fields-v2",))
        print("routes: /route/ answers, engine pinned to CPU 0, wrk -t1 -c16 on CPU 1, 5 s each")
        print("(+Nthr: --sign-threads N, engine not pinned; its threads share CPU 1 with wrk)")
        print("%-15s %12s %14s %9s %9s %9s %7s" % ("scheme", "routes/s", "routes/cpu-s",
                                                     "eng_cpu", "p50", "p99", "non2xx"))
        for r in rows:
            print("%-15s %12.0f %14.0f %9.2f %9s %9s %7d" % r)
        if sign:
            print("openssl speed rsa2048 sign (CPU 0): %.0f/s  -> ceiling for fields-* routes/core"
                  % sign)
    if "trace" in which:
        trace = load_trace(os.path.join(ROOT, "bench", "engine_trace.csv"))
        perf = 100.0
        dur = trace[-1][0]
        total = sum(c for _, c in trace)
        mean = total / dur
        # peak: the busiest 2 s window
        peak = 0.0
        j = 0
        for i in range(len(trace)):
            while trace[i][0] - trace[j][0] > 2.0:
                j += 1
            peak = max(peak, sum(c for _, c in trace[j:i + 1]) / 2.0)
        n_peak = max(1, math.ceil(peak / perf))
        n_mean = max(1, math.ceil(mean / perf))
        print("trace: %d requests over %.0f s, mean load %.0f/s, 2 s peak %.0f/s, perf %.0f/worker"
              % (len(trace), dur, mean, peak, perf))
        print("%-22s %6s %8s %8s %8s %10s %9s %8s" % ("policy", "n", "p50_s", "p99_s", "max_s",
                                                       "worker_s", "parked_s", "max_live"))
        for name, mode, pool in (("autoscaler", "auto", 0),
                                 ("fixed peak (%d)" % n_peak, "fixed", n_peak),
                                 ("fixed mean (%d)" % n_mean, "fixed", n_mean)):
            r = replay(trace, mode, pool, perf=perf)
            print("%-22s %6d %8.3f %8.3f %8.3f %10.1f %9.1f %8d%s" % (
                name, r["n"], r["p50"], r["p99"], r["max"], r["worker_s"], r["parked_s"],
                r["max_live"], "" if not (r["errors"] or r["violations"]) else
                "  errors=%d violations=%d" % (r["errors"], r["violations"])))


if __name__ == "__main__":
    main()
