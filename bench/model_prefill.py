"""sgpu-model prompt-processing benchmark (run by bench/model_prefill.sh).

Part 1, prefill against llama.cpp: for each weight type and prompt length N,
time to first token of one request with an N-token prompt (fixed token ids:
BOS, then (i * 7919) % vocab) and max 1 new token, on an idle server; prefill
tok/s = N / that time.  sgpu-model over HTTP (/v1/completions with token ids,
so the HTTP round trip is included), llama.cpp (node-llama-cpp, in-process) on
the same GGUF file with the same thread count; the two alternate rep by rep so
both see the same machine load.

Part 2, decode under an arriving prompt (sgpu only): 8 streams decode; after
they run, one request with a long prompt arrives.  The streams' step latency
(the gap between consecutive streamed tokens, measured at the client) is
reported as p50/p99 before the prompt arrives and while it is being processed
(from its submission to its first token), for each --prefill-chunk value (0 =
whole prompt in one step) and each --prefill-step-ratio value (0 = every step
takes --prefill-chunk prompt tokens; R > 0 = the adaptive per-step budget that
keeps a step within R x a decode-only step while streams decode), with the
long prompt's own TTFT.  A row is marked when the streams ran out before the
prompt's first token (then raise --stream-tokens).  Since a stream's step
time grows with its context (its KV cache reads), the same streams also run
once without the long prompt, and their gaps at the same token positions give
the "without the prompt" p99 that the gaps during it are compared with.

usage: model_prefill.py WORKDIR [--threads N] [--reps N] [--types q8_0,f16,q4_k_m]
                        [--lens 128,512,2048] [--chunks 0,128,256,512] [--ratios 0,1.8]
                        [--llamacpp-dir DIR] [--long N] [--streams N] [--stream-tokens N]
                        [--latency-type T] [--skip-prefill] [--skip-latency]
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time

BIN = os.environ.get("SGPU_BIN", os.path.join(os.path.dirname(__file__), "..", "bin"))
MODEL = os.path.join(BIN, "sgpu-model")
# as bench/model_bench.py, with room for a 2048-token prompt plus its output
SHAPE = ["--dim", "768", "--layers", "12", "--heads", "12", "--kv-heads", "12", "--ff", "2048",
         "--vocab", "32000", "--ctx", "4096", "--name", "bench-125m"]
VOCAB = 32000


def prompt_ids(n):
    return [1] + [(i * 7919) % VOCAB for i in range(1, n)]


def start_server(path, threads, max_batch, chunk, ratio=0):
    p = subprocess.Popen([MODEL, "serve", "--model", path, "--port", "0", "--threads", str(threads),
                          "--max-batch", str(max_batch), "--prefill-chunk", str(chunk),
                          "--prefill-step-ratio", str(ratio)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        if "event=model_loaded" in line:
            port = int(re.search(r"port=(\d+)", line).group(1))
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, port
        if "event=fatal" in line:
            break
    p.kill()
    raise RuntimeError("sgpu-model did not start")


def completion(port, n):
    """Seconds from sending an n-token prompt to the answer with its one token."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    body = json.dumps({"prompt": prompt_ids(n), "max_tokens": 1, "temperature": 0})
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    dt = time.perf_counter() - t0
    c.close()
    if r.status != 200:
        raise RuntimeError(f"/v1/completions {r.status}: {data[:200]!r}")
    return dt


def llama_prefill(lcdir, path, threads, lens):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_llamacpp_prefill.mjs")
    local = os.path.join(lcdir, "model_llamacpp_prefill.mjs")
    with open(script) as f, open(local, "w") as g:
        g.write(f.read())  # node resolves node-llama-cpp next to the script
    r = subprocess.run(["node", local, path, str(threads), "1", ",".join(map(str, lens))],
                       capture_output=True, text=True, timeout=1800, cwd=lcdir)
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip()[-500:])
    return {int(k): v for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


def stream(port, n, out, i, started):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    body = json.dumps({"inputs": "hello world, the model server is a GPU data time text",
                       "parameters": {"max_new_tokens": n, "ignore_eos": True}})
    c.request("POST", "/generate_stream", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    times = out[i]
    for line in r:
        if line.startswith(b"data: "):
            times.append(time.perf_counter())
            if len(times) == 4:
                started.release()
    c.close()


def pct(v, p):
    if not v:
        return float("nan")
    s = sorted(v)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def latency_run(port, k, n_tokens, long_n):
    """k streams of n_tokens; the long prompt (none when long_n is 0) arrives
    once every stream has 4 tokens.  Returns the gaps before / during the
    prompt, its TTFT, whether every stream was still running when the prompt's
    first token came, the (stream, token index) of each gap during it, and the
    streams' token times."""
    out = [[] for _ in range(k)]
    started = threading.Semaphore(0)
    ts = [threading.Thread(target=stream, args=(port, n_tokens, out, i, started)) for i in range(k)]
    for t in ts:
        t.start()
    for _ in range(k):
        started.acquire()
    time.sleep(0.5)  # a baseline window of steady decoding
    t_sub = time.perf_counter()
    ttft = completion(port, long_n) if long_n else 0.0
    t_end = t_sub + ttft
    for t in ts:
        t.join()
    before, during, idx = [], [], []
    outlived = all(times and times[-1] > t_end for times in out)
    for i, times in enumerate(out):
        for j in range(1, len(times)):
            a, b = times[j - 1], times[j]
            if b <= t_sub:
                before.append(b - a)
            elif b <= t_end + 0.05:  # gaps ending while the prompt is processed
                during.append(b - a)
                idx.append((i, j))
    return before, during, ttft, outlived, idx, out


def same_tokens(idx, control_out):
    """The control run's gaps (same streams, no long prompt) at the token
    positions of the gaps during the prompt: a stream's step time grows with
    its context (its KV cache reads), so "without the prompt" is compared at
    the same tokens, not only against the short-context steps before it."""
    gaps = []
    for i, j in idx:
        ctl = control_out[i % len(control_out)]
        if j < len(ctl):
            gaps.append(ctl[j] - ctl[j - 1])
    return gaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--types", default="q8_0,f16,q4_k_m")
    ap.add_argument("--lens", default="128,512,2048")
    ap.add_argument("--chunks", default="0,128,256,512")
    ap.add_argument("--ratios", default="0,1.8")
    ap.add_argument("--long", type=int, default=2048)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--stream-tokens", type=int, default=500)
    ap.add_argument("--latency-type", default="q8_0")
    ap.add_argument("--llamacpp-dir", default="")
    ap.add_argument("--skip-prefill", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    lens = [int(x) for x in a.lens.split(",")]
    types = a.types.split(",")
    paths = {}
    for ty in set(types + [a.latency_type]):
        path = os.path.join(a.workdir, f"bench-125m-ctx4k-{ty}.gguf")
        if not os.path.exists(path):
            subprocess.run([MODEL, "init-tiny", path, "--type", ty, "--seed", "1", *SHAPE],
                           check=True)
        paths[ty] = path
    print(f"threads={a.threads} reps={a.reps} load average {os.getloadavg()[0]:.1f}", flush=True)

    rows = []
    if not a.skip_prefill:
        for ty in types:
            p, port = start_server(paths[ty], a.threads, 16, 0)
            sg = {n: [] for n in lens}
            lc = {n: [] for n in lens}
            lc_err = None
            try:
                completion(port, 64)  # warm-up: page in the weights
                for _ in range(a.reps):
                    for n in lens:
                        sg[n].append(completion(port, n))
                    if a.llamacpp_dir and lc_err is None:
                        try:
                            r = llama_prefill(a.llamacpp_dir, paths[ty], a.threads, lens)
                            for n in lens:
                                lc[n] += r[n]
                        except Exception as e:  # reported; sgpu numbers still printed
                            lc_err = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                    print(f"  {ty}: sgpu " + " ".join(f"{n}:{sg[n][-1]:.3f}s" for n in lens) +
                          " | llama.cpp " + " ".join(f"{n}:{lc[n][-1]:.3f}s" if lc[n] else f"{n}:-"
                                                     for n in lens), flush=True)
            finally:
                p.terminate()
                p.wait()
            rows.append((ty, sg, lc, lc_err))
        print()
        print("Prefill (best of the reps; TTFT = prompt of N tokens to its first token, "
              "whole prompt in one step)")
        print()
        print("| model | prompt | sgpu TTFT (s) | llama.cpp TTFT (s) | sgpu prefill tok/s | "
              "llama.cpp prefill tok/s | sgpu / llama.cpp |")
        print("|---|---|---|---|---|---|---|")
        for ty, sg, lc, lc_err in rows:
            for n in lens:
                s = min(sg[n])
                l = min(lc[n]) if lc[n] else None
                print(f"| 125M {ty.upper()} | {n} | {s:.3f} | {'' if l is None else f'{l:.3f}'} | "
                      f"{n / s:.0f} | {'' if l is None else f'{n / l:.0f}'} | "
                      f"{'' if l is None else f'{l / s:.2f}x'} |")
            if lc_err:
                print(f"| 125M {ty.upper()} | llama.cpp error: {lc_err[:150]} | | | | | |")
        print(flush=True)

    if not a.skip_latency:
        print(f"Decode step latency of {a.streams} streams while a {a.long}-token prompt arrives "
              f"({a.latency_type.upper()}; gaps between streamed tokens at the client)")
        print()
        print("| --prefill-chunk | --prefill-step-ratio | p50 before (ms) | p99 before (ms) | "
              "p50 during (ms) | p99 during (ms) | p99 during / p99 before | "
              "p99 same tokens without the prompt (ms) | p99 during / without | "
              "long prompt TTFT (s) | stream tokens during it |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        # the streams alone (no long prompt), once: decode-only steps do not depend on the
        # chunk options
        p, port = start_server(paths[a.latency_type], a.threads, a.streams + 1, 0, 0)
        try:
            completion(port, 64)
            control = latency_run(port, a.streams, a.stream_tokens, 0)[5]
        finally:
            p.terminate()
            p.wait()
        runs = [(int(c), float(r)) for c in a.chunks.split(",") for r in a.ratios.split(",")]
        for ch, ratio in runs:
            p, port = start_server(paths[a.latency_type], a.threads, a.streams + 1, ch, ratio)
            try:
                completion(port, 64)  # warm-up
                best = None
                for _ in range(a.reps):
                    # enough tokens that the streams outlive the long prompt
                    r = latency_run(port, a.streams, a.stream_tokens, a.long)
                    if best is None or pct(r[1], 99) < pct(best[1], 99):
                        best = r
                before, during, ttft, outlived, idx, _ = best
                b50, b99, d50, d99 = (pct(before, 50) * 1e3, pct(before, 99) * 1e3,
                                      pct(during, 50) * 1e3, pct(during, 99) * 1e3)
                w99 = pct(same_tokens(idx, control), 99) * 1e3
                mark = "" if outlived else " (streams ended first)"
                print(f"| {ch} | {ratio:g} | {b50:.1f} | {b99:.1f} | {d50:.1f} | {d99:.1f} | "
                      f"{d99 / b99:.2f}x | {w99:.1f} | {d99 / w99:.2f}x | {ttft:.2f}{mark} | "
                      f"{len(during)} |", flush=True)
            finally:
                p.terminate()
                p.wait()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
