"""Starts the stack for bench/gateway_clients.mjs and runs it (see bench/gateway_clients.sh).

sgpu-engine with the `local` provider (sgpu-launch + the embedded tiny sgpu-model + sgpu-worker
serving both the TGI and the OpenAI routes), one endpoint `demo`, and sgpu-gateway; then
`node gateway_clients.mjs` with GW (gateway URL), KEY (the endpoint's key) and WORKER (the
worker's URL, for its metrics).  Exit status: node's."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "gateway"))
import gwlib as gl  # noqa: E402

el = gl.el


def main():
    npm_dir = sys.argv[1]
    eng = el.Engine(tick_ms=200)
    gw = None
    try:
        _, key = gl.create_endpoint(eng, "demo", min_load=1, max_workers=1)
        eng.create_group("demo", "local", {"env": {
            "SGPU_CONFIG": gl.handlers_file(eng.dir), "SGPU_BENCHMARK": "false",
            "SGPU_MAX_PERF": "1000", "SGPU_REPORT_INTERVAL": "1"}})
        el.wait_for(lambda: any(w["status"] == "idle" for w in eng.workers("demo")), timeout=120,
                    what="a ready worker")
        worker = [w for w in eng.workers("demo") if w["status"] == "idle"][0]["url"]
        gw = gl.Gateway(eng.url, workdir=eng.dir)
        env = dict(os.environ, GW=gw.url, KEY=key, WORKER=worker)
        r = subprocess.run(["node", "gateway_clients.mjs"], cwd=npm_dir, env=env, timeout=300)
        return r.returncode
    finally:
        if gw:
            gw.close()
        eng.close()


if __name__ == "__main__":
    sys.exit(main())
