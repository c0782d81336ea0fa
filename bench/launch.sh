#!/usr/bin/env bash
# Cold start of one instance, broken down, through the real stack:
#   client `sgpu call` on an endpoint with zero workers -> engine creates an instance (local
#   provider) -> sgpu-launch start -> model loaded -> worker benchmark done -> first ready report
#   at the engine -> first routed request served.
# Two worker configurations: the default (benchmark: 3 rounds of 10 requests) and the
# benchmark off (SGPU_BENCHMARK=false, fixed max_perf), each run SGPU_BENCH_RUNS times (default 3).
# Next to it: what the reference start_server.sh path costs before PyWorker even starts
# (python3 -m venv measured here; package installation needs the network and is not run).
# Results: docs/benchmarks.md#cold-start-and-load-through-the-whole-stack-issue-5.
set -u
cd "$(dirname "$0")/.."
export SGPU_BIN=${SGPU_BIN:-$PWD/bin}
export SGPU_BENCH_RUNS=${SGPU_BENCH_RUNS:-3}
exec /usr/bin/python3 - <<'EOF'
import datetime, json, os, re, shutil, signal, statistics, subprocess, tempfile, time

BIN = os.environ["SGPU_BIN"]
RUNS = int(os.environ["SGPU_BENCH_RUNS"])


def ts(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    return datetime.datetime.fromisoformat(m.group(1)).replace(
        tzinfo=datetime.timezone.utc).timestamp() if m else None


def first(path, pat):
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if re.search(pat, line):
                    return ts(line)
    except OSError:
        pass
    return None


def wait_file(p, t=20):
    end = time.time() + t
    while time.time() < end:
        if os.path.exists(p) and os.path.getsize(p) > 0:
            return
        time.sleep(0.02)
    raise SystemExit("timeout waiting for " + p)


def one(env_extra):
    tmp = tempfile.mkdtemp(prefix="sgpu-bench-launch-")
    data = os.path.join(tmp, "data")
    log = open(os.path.join(tmp, "engine.log"), "w")
    eng = subprocess.Popen([os.path.join(BIN, "sgpu-engine"), "--data-dir", data, "--listen",
                            "127.0.0.1:0", "--tick-ms", "100"], stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    env = dict(os.environ, SGPU_DATA_DIR=data)
    try:
        wait_file(os.path.join(data, "engine.addr"))
        sg = os.path.join(BIN, "sgpu")
        subprocess.run([sg, "endpoint", "create", "b", "cold_workers=0", "max_workers=1"],
                       env=env, check=True, capture_output=True)
        subprocess.run([sg, "workergroup", "create", "--endpoint", "b", "--launch",
                        json.dumps({"env": env_extra})], env=env, check=True,
                       capture_output=True)
        t0 = time.time()
        r = subprocess.run([sg, "call", "--endpoint", "b", "--show-worker", "--data",
                            '{"inputs": "Hello", "parameters": {"max_new_tokens": 8}}'],
                           env=env, capture_output=True, text=True, timeout=300)
        t_served = time.time()
        if r.returncode != 0:
            raise SystemExit("call failed: " + r.stderr)
        w = os.path.join(data, "workers", "1")
        elog = os.path.join(tmp, "engine.log")
        marks = {
            "request sent": t0,
            "instance created": first(elog, r"local_instance_start worker=1 "),
            "launcher start": first(os.path.join(w, "debug.log"), r"event=launch_start"),
            "model loaded": first(os.path.join(w, "model.log"), r"event=model_loaded"),
            "worker sees load line": first(os.path.join(w, "debug.log"),
                                           r"comp=worker event=model_loaded"),
            "worker ready (benchmark done)": first(os.path.join(w, "debug.log"),
                                    r"comp=worker event=(benchmark_done|ready)"),
            "ready report at engine": first(elog, r"worker=1 kind=state reason=\"ready"),
            "request served": t_served,
        }
        m = re.search(r"grant_s=([\d.]+) first_byte_s=([\d.]+) total_s=([\d.]+)", r.stderr)
        marks["grant received"] = t0 + float(m.group(1))
        return marks
    finally:
        eng.send_signal(signal.SIGTERM)
        try:
            eng.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(eng.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


ORDER = ["request sent", "instance created", "launcher start", "model loaded",
         "worker sees load line", "worker ready (benchmark done)", "ready report at engine", "grant received",
         "request served"]

print("Cold start of one instance (scale from zero), ms since `launcher start`, median of %d"
      % RUNS)
print("(machine: %d CPUs; tiny embedded model; engine --tick-ms 100)" % os.cpu_count())
cols = {}
for name, extra in (("benchmark on (default)", {}),
                    ("benchmark off", {"SGPU_BENCHMARK": "false", "SGPU_MAX_PERF": "100"})):
    runs = [one(extra) for _ in range(RUNS)]
    cols[name] = {k: statistics.median((r[k] - r["launcher start"]) * 1000 for r in runs
                                       if r[k] is not None) for k in ORDER
                  if any(r[k] is not None for r in runs)}
print("| step | " + " | ".join(cols) + " |")
print("|---|" + "---:|" * len(cols))
for k in ORDER:
    print("| %s | %s |" % (k, " | ".join("%.0f" % cols[c][k] if k in cols[c] else "-"
                                         for c in cols)))

# The reference path before PyWorker runs: a virtualenv (measured here, no network) and
# `pip install -r requirements.txt` (network-bound, not measured), then in G1 a 5 s sleep after
# the load line and up to 10-11 s until the "loaded" report (docs/protocol.md §4.3, §5.2).
d = tempfile.mkdtemp(prefix="sgpu-bench-venv-")
t = time.time()
rv = subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", os.path.join(d, "v")],
                    capture_output=True)
venv_ms = (time.time() - t) * 1000
t = time.time()
rv2 = subprocess.run(["/usr/bin/python3", "-m", "venv", os.path.join(d, "v2")],
                     capture_output=True)
venv_pip_ms = (time.time() - t) * 1000
shutil.rmtree(d, ignore_errors=True)
print()
print("Reference start_server.sh path on this machine (for comparison):")
print("  python3 -m venv --without-pip: %s" % ("%.0f ms" % venv_ms if rv.returncode == 0
                                                else "unavailable"))
print("  python3 -m venv (with pip):    %s" % ("%.0f ms" % venv_pip_ms if rv2.returncode == 0
                                                else "unavailable (python3-venv not installed)"))
print("  pip/uv install of requirements: not run (needs the network)")
print("  G1: sleep 5 s after the load line before the benchmark; <= 10-11 s report cycle until")
print("  the engine sees 'loaded'; G3: 10 s sleep when no healthcheck URL is configured")
EOF
