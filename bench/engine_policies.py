"""Autoscaling policies compared with realistic instance start times (issue 14; stdlib only).

Replays two traces through the real engine with fake workers (tests/engine/enginelib.py:
`command` provider, FIFO service at max_perf) whose provider commands take as long as GPU
instances do: `create` sleeps CREATE_S before the instance exists (pulling and booting an
image), the model then loads for LOAD_S before the first ready report, and `start` (resume
from parked) sleeps RESUME_S.  Policies, each on a fresh engine:
  sgpu   our scaler ("scaler": "sgpu"), one parked worker as the warm floor
  kpa    Knative's KPA ("scaler": "kpa", its 60 s / 6 s windows), same parked floor
  peak   a fixed pool sized for the busiest 2 s of the trace
  mean   a fixed pool sized for the trace's mean load
Traces: bench/engine_trace.csv (the recorded bursty one, 60 s) and a diurnal one generated
here (bench/engine_trace_diurnal.csv, 240 s: a smooth day/night cycle compressed).
Reports per policy: p50/p99/max queue time (arrival -> service start), worker-seconds active
and parked (instances integrated over the replay, a parked one counted apart), scale actions
(create/start/stop/destroy), and writes an SVG of load vs ready capacity per policy.
The four policies of a trace run at once (separate engines and fleets) to keep the run short.

Usage: engine_policies.py [--create-s 30] [--resume-s 3] [--load-s 5] [--svg PATH]
                          [--policies sgpu,kpa,peak,mean] [--traces bursty,diurnal]
       engine_policies.py one TRACE POLICY OUT.json   (internal: one replay)"""
import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "engine"))
import enginelib as el  # noqa: E402

PERF = 100.0
POLICIES = ("sgpu", "kpa", "peak", "mean")
COLORS = {"sgpu": "#1f77b4", "kpa": "#d62728", "peak": "#2ca02c", "mean": "#ff7f0e"}


def load_trace(path):
    with open(path) as f:
        return [(float(r["t"]), float(r["cost"])) for r in csv.DictReader(f)]


def gen_diurnal(path, seed=11, dur=240.0):
    """A compressed day: rate 1 + 24 sin^2(pi t / dur) req/s of cost 10 (Poisson)."""
    import random
    rnd = random.Random(seed)
    t, rows, lam_max = 0.0, [], 25.0
    while True:
        t += rnd.expovariate(lam_max)
        if t >= dur:
            break
        if rnd.random() < (1 + 24 * math.sin(math.pi * t / dur) ** 2) / lam_max:
            rows.append((round(t, 4), 10.0))
    with open(path, "w") as f:
        f.write("t,cost\n")
        for a, c in rows:
            f.write("%s,%s\n" % (a, c))


def sizes(trace):
    dur = trace[-1][0]
    mean = sum(c for _, c in trace) / dur
    peak, j = 0.0, 0
    for i in range(len(trace)):
        while trace[i][0] - trace[j][0] > 2.0:
            j += 1
        peak = max(peak, sum(c for _, c in trace[j:i + 1]) / 2.0)
    return max(1, math.ceil(peak / PERF)), max(1, math.ceil(mean / PERF))


def replay(trace, policy, create_s, resume_s, load_s):
    n_peak, n_mean = sizes(trace)
    if policy == "kpa":  # Knative's defaults
        flags = ["--panic-window-s", "6", "--stable-window-s", "60"]
    else:
        flags = ["--panic-window-s", "2", "--stable-window-s", "10", "--scale-down-delay-s", "5"]
    flags += ["--drain-grace-s", "1", "--unavailable-after-s", "%g" % (create_s + load_s + 30),
              "--ready-timeout-s", "%g" % (create_s + load_s + 120)]
    eng = el.Engine(*flags, tick_ms=200)
    fleet = el.Fleet(eng, perf=PERF, load_s=load_s)
    # realistic start times: the provider commands take as long as GPU instances do
    fleet.launch["create"] = "sleep %g; %s" % (create_s, fleet.launch["create"])
    fleet.launch["start"] = "sleep %g; %s" % (resume_s, fleet.launch["start"])
    try:
        if policy in ("sgpu", "kpa"):
            eng.create_endpoint("t", scaler=policy, min_load=0, min_workers=1, max_workers=20,
                                target_util=0.8, cold_mult=1, target_queue_time=1.0,
                                max_queue_time=1.0, inactivity_timeout=5)
            pool = 0
        else:
            pool = n_peak if policy == "peak" else n_mean
            eng.create_endpoint("t", min_load=pool * PERF, min_workers=0, max_workers=pool,
                                target_util=1.0, cold_mult=1, target_queue_time=0,
                                max_queue_time=1e6, inactivity_timeout=-1)
        eng.create_group("t", "command", fleet.launch)
        if pool:
            el.wait_for(lambda: len([w for w in fleet.live() if w.running and
                                     w.ready_at < time.time()]) == pool,
                        timeout=create_s + load_s + 60, what="fixed pool ready")
        else:
            el.wait_for(lambda: len([w for w in fleet.live() if not w.running]) >= 1,
                        timeout=create_s + load_s + 60, what="one parked worker")
        time.sleep(1.0)
        n_actions0 = len(fleet.actions)
        client = el.Client(eng, fleet, "t", cost=trace[0][1], nthreads=48)
        samples = []  # (t, running, parked, ready capacity)
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                now = time.time()
                live = fleet.live()
                run = [w for w in live if w.running]
                samples.append((now, len(run), len(live) - len(run),
                                PERF * sum(1 for w in run if w.ready_at <= now)))
                stop.wait(0.25)

        st = threading.Thread(target=sampler, daemon=True)
        st.start()
        t0 = time.time()
        for (ta, cost) in trace:
            d = t0 + ta - time.time()
            if d > 0:
                time.sleep(d)
            client.add(time.time())
        end_arrivals = time.time()
        el.wait_for(lambda: len(client.results) + len(client.errors) >= len(trace),
                    timeout=create_s + 300, what="trace served")
        stop.set()
        st.join(5)
        t_end = max(end_arrivals, max(r[1] for r in client.results))
        ws = parked = 0.0
        for (a, b) in zip(samples, samples[1:]):
            if a[0] > t_end:
                break
            ws += a[1] * (b[0] - a[0])
            parked += a[2] * (b[0] - a[0])
        waits = sorted(r[1] - r[0] + r[3] for r in client.results)
        acts = {}
        for (ta, act, _) in fleet.actions[n_actions0:]:
            if ta <= t_end:
                acts[act] = acts.get(act, 0) + 1
        client.close()

        def pct(p):
            return waits[min(len(waits) - 1, int(math.ceil(p * len(waits))) - 1)]
        return {"policy": policy, "pool": pool, "n": len(waits), "p50": pct(0.5),
                "p99": pct(0.99), "max": waits[-1], "worker_s": ws, "parked_s": parked,
                "actions": acts, "errors": len(client.errors),
                "violations": len(fleet.violations), "duration": t_end - t0,
                "series": [(round(s[0] - t0, 2), s[3]) for s in samples if s[0] <= t_end]}
    finally:
        fleet.close()
        eng.close()


def svg(results, traces, path):
    """Per trace a row, per policy a panel: offered load (cost/s, 2 s bins) and ready capacity."""
    W, H, L, T = 260, 150, 36, 20
    rows = list(traces)
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
           'font-size="10">' % (L + 4 * (W + 10), len(rows) * (H + 40) + 30)]
    out.append('<text x="4" y="14" font-size="12">load (grey, cost/s in 2 s bins) vs ready '
               'capacity (colour) per policy</text>')
    for ri, name in enumerate(rows):
        trace = traces[name]
        dur = max(trace[-1][0], max(max((s[0] for s in results[name][p]["series"]), default=0)
                                    for p in POLICIES))
        bins = [0.0] * (int(dur // 2) + 1)
        for (ta, c) in trace:
            bins[int(ta // 2)] += c / 2.0
        ymax = max(max(bins), max(max((s[1] for s in results[name][p]["series"]), default=0)
                                  for p in POLICIES)) * 1.1 or 1
        for pi, pol in enumerate(POLICIES):
            x0, y0 = 10 + pi * (W + 10), 30 + ri * (H + 40)
            r = results[name][pol]

            def X(t):
                return x0 + L + (W - L) * t / dur

            def Y(v):
                return y0 + T + (H - T - 14) * (1 - v / ymax)
            out.append('<rect x="%d" y="%d" width="%d" height="%d" fill="#fff" stroke="#ccc"/>'
                       % (x0, y0, W, H))
            out.append('<text x="%d" y="%d">%s: %s  p99 %.2f s, %.0f worker-s</text>'
                       % (x0 + 4, y0 + 12, name, pol, r["p99"], r["worker_s"]))
            for k in range(3):
                v = ymax * k / 2
                out.append('<text x="%d" y="%.1f">%.0f</text>' % (x0 + 2, Y(v) + 3, v))
            out.append('<polyline fill="none" stroke="#999" points="%s"/>' % " ".join(
                "%.1f,%.1f" % (X(2 * i + 1), Y(v)) for i, v in enumerate(bins)))
            out.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (
                COLORS[pol], " ".join("%.1f,%.1f" % (X(t), Y(v)) for t, v in r["series"])))
            out.append('<text x="%d" y="%d">0 s</text><text x="%d" y="%d">%.0f s</text>'
                       % (x0 + L, y0 + H - 3, x0 + W - 30, y0 + H - 3, dur))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if sys.argv[1:2] == ["one"]:
        a = sys.argv[2:]
        trace = load_trace(a[0])
        r = replay(trace, a[1], float(a[3]), float(a[4]), float(a[5]))
        with open(a[2], "w") as f:
            json.dump(r, f)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--create-s", type=float, default=30.0)
    ap.add_argument("--resume-s", type=float, default=3.0)
    ap.add_argument("--load-s", type=float, default=5.0)
    ap.add_argument("--svg", default=os.path.join(ROOT, "docs", "engine_policies.svg"))
    ap.add_argument("--policies", default=",".join(POLICIES),
                    help="comma-separated subset (the plot needs all four)")
    ap.add_argument("--traces", default="bursty,diurnal", help="comma-separated subset")
    args = ap.parse_args()
    pols = [p for p in args.policies.split(",") if p in POLICIES]
    dpath = os.path.join(ROOT, "bench", "engine_trace_diurnal.csv")
    if not os.path.exists(dpath):
        gen_diurnal(dpath)
    paths = {"bursty": os.path.join(ROOT, "bench", "engine_trace.csv"), "diurnal": dpath}
    paths = {k: v for k, v in paths.items() if k in args.traces.split(",")}
    traces = {k: load_trace(v) for k, v in paths.items()}
    tmp = tempfile.mkdtemp(prefix="sgpu-policies-")
    results = {}
    print("start times: create %.0f s, model load %.0f s, resume from parked %.0f s; perf %.0f"
          "/worker" % (args.create_s, args.load_s, args.resume_s, PERF))
    for name, path in paths.items():
        procs = {}
        for pol in pols:
            out = os.path.join(tmp, "%s-%s.json" % (name, pol))
            procs[pol] = (subprocess.Popen([sys.executable, __file__, "one", path, pol, out,
                                            str(args.create_s), str(args.resume_s),
                                            str(args.load_s)]), out)
        results[name] = {}
        for pol, (p, out) in procs.items():
            if p.wait() != 0:
                raise SystemExit("replay %s/%s failed" % (name, pol))
            with open(out) as f:
                results[name][pol] = json.load(f)
        tr = traces[name]
        n_peak, n_mean = sizes(tr)
        print("\n%s trace: %d requests over %.0f s (peak pool %d, mean pool %d)"
              % (name, len(tr), tr[-1][0], n_peak, n_mean))
        print("%-8s %6s %8s %8s %8s %10s %9s  %s" % ("policy", "n", "p50_s", "p99_s", "max_s",
                                                   "active_ws", "parked_ws", "actions"))
        for pol in pols:
            r = results[name][pol]
            acts = " ".join("%s=%d" % kv for kv in sorted(r["actions"].items())) or "-"
            print("%-8s %6d %8.3f %8.3f %8.3f %10.1f %9.1f  %s%s" % (
                pol + ("(%d)" % r["pool"] if r["pool"] else ""), r["n"], r["p50"], r["p99"],
                r["max"], r["worker_s"], r["parked_s"], acts,
                "" if not (r["errors"] or r["violations"]) else
                "  errors=%d violations=%d" % (r["errors"], r["violations"])))
    if len(pols) == len(POLICIES) and len(paths) == 2:
        svg(results, traces, args.svg)
        print("\nplot: %s" % os.path.relpath(args.svg, ROOT))


if __name__ == "__main__":
    main()
