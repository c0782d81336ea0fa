#!/usr/bin/env bash
# `make run`: the whole stack on this machine.
#   sgpu-engine (local provider) -> sgpu-launch -> sgpu-model (embedded tiny model) + sgpu-worker
# Creates an endpoint + workergroup, waits for a ready worker, streams one request through
# `sgpu call` so the tokens can be seen arriving, starts sgpu-gateway (OpenAI/TGI front door) and
# sends one OpenAI chat request through it, prints how to send your own requests (sgpu, curl,
# Python `openai`) and how to serve a real GGUF model, then keeps serving until Ctrl-C and shuts
# everything down.
#
# Environment: SGPU_BIN (programs, default ./bin), SGPU_DEMO_DIR (state, default ./.run/demo,
# recreated on every run), SGPU_DEMO_LISTEN (default 127.0.0.1:8080, or an ephemeral port
# when 8080 is taken), SGPU_DEMO_GATEWAY_LISTEN (default 127.0.0.1:8000, or an ephemeral port when
# 8000 is taken or SGPU_DEMO_LISTEN is set), SGPU_DEMO_EXIT_AFTER_CALL=1 (stop after the first
# calls; used by tests).
set -u
cd "$(dirname "$0")/.."
BIN=${SGPU_BIN:-$PWD/bin}
DIR=${SGPU_DEMO_DIR:-$PWD/.run/demo}
DATA=$DIR/data
SGPU="$BIN/sgpu"

bold() { if [ -t 1 ]; then printf '\033[1m%s\033[0m\n' "$*"; else printf '%s\n' "$*"; fi; }
say() { printf '%s\n' "$*"; }

for p in sgpu-engine sgpu-launch sgpu-worker sgpu-model sgpu sgpu-gateway; do
    if [ ! -x "$BIN/$p" ]; then
        say "run-demo: $BIN/$p is missing; run 'make' first" >&2
        exit 1
    fi
done

listen=${SGPU_DEMO_LISTEN:-}
if [ -z "$listen" ]; then
    if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
        listen=127.0.0.1:0 # 8080 is taken: let the engine pick a port
    else
        listen=127.0.0.1:8080
    fi
fi

rm -rf "$DIR"
mkdir -p "$DIR"
engine_pid=
gateway_pid=
cleanup() {
    trap - INT TERM EXIT
    if [ -n "$gateway_pid" ] && kill -0 "$gateway_pid" 2>/dev/null; then
        kill -TERM "$gateway_pid" 2>/dev/null
        wait "$gateway_pid" 2>/dev/null
    fi
    if [ -n "$engine_pid" ] && kill -0 "$engine_pid" 2>/dev/null; then
        say ""
        bold "Shutting down: the engine drains and stops its instances (worker first, then model)..."
        kill -TERM "$engine_pid" 2>/dev/null
        wait "$engine_pid" 2>/dev/null
        say "Stopped. Logs: $DIR/engine.log and $DATA/workers/*/{debug,model}.log"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bold "== Starting sgpu-engine (local provider), state in $DATA"
"$BIN/sgpu-engine" --data-dir "$DATA" --listen "$listen" >"$DIR/engine.log" 2>&1 &
engine_pid=$!
for _ in $(seq 1 100); do
    [ -s "$DATA/engine.addr" ] && break
    if ! kill -0 "$engine_pid" 2>/dev/null; then
        say "run-demo: sgpu-engine exited; see $DIR/engine.log:" >&2
        tail -5 "$DIR/engine.log" >&2
        exit 1
    fi
    sleep 0.1
done
ENGINE=$(cat "$DATA/engine.addr")
export SGPU_DATA_DIR=$DATA # lets `sgpu` find the engine address and the admin key
say "engine at $ENGINE (admin key in $DATA/api_key)"

bold "== Creating endpoint 'demo' and a workergroup serving the embedded tiny model"
# Small explicit values: the API's defaults are Vast's (cold_workers=5, max_workers=20), which
# would start five model servers on this machine.  One loaded worker (parked until the first
# request, which wakes it at once), at most two, no extra parked capacity (cold_mult=1).
"$SGPU" endpoint create demo min_load=0 cold_workers=1 cold_mult=1 max_workers=2 target_util=0.9 ||
    exit 1
# The worker serves both the TGI and the OpenAI routes of the model (sgpu-gateway sends each
# client protocol to its own route; docs/gateway.md), with one benchmark round instead of three:
# the demo is ready sooner on a small machine.
cat >"$DIR/handlers.json" <<'JSON'
{"handlers": [
  {"route": "/generate", "workload": "tgi", "payload": "tgi",
   "benchmark": {"inputs": "hello", "parameters": {"max_new_tokens": 64}}},
  {"route": "/generate_stream", "workload": "tgi", "payload": "tgi"},
  {"route": "/v1/chat/completions", "workload": "openai"},
  {"route": "/v1/completions", "workload": "openai"}]}
JSON
"$SGPU" workergroup create --endpoint demo \
    --launch "{\"env\": {\"SGPU_BENCHMARK_RUNS\": \"1\", \"SGPU_CONFIG\": \"$DIR/handlers.json\"}}" ||
    exit 1

bold "== Waiting for a worker: the engine starts sgpu-launch, which starts sgpu-model + sgpu-worker"
t0=$(date +%s)
last=
while :; do
    states=$("$SGPU" worker list --json 2>/dev/null |
        /usr/bin/python3 -c 'import json,sys; print(" ".join(sorted(w["status"] for w in json.load(sys.stdin))))' 2>/dev/null)
    if [ "$states" != "$last" ]; then
        say "  $(($(date +%s) - t0))s: workers: ${states:-(none yet)}"
        last=$states
    fi
    case " $states " in *" idle "* | *" stopped "*) break ;; esac
    if ! kill -0 "$engine_pid" 2>/dev/null; then
        say "run-demo: the engine stopped; see $DIR/engine.log" >&2
        exit 1
    fi
    if [ $(($(date +%s) - t0)) -gt 180 ]; then
        say "run-demo: no worker became ready in 180 s; see $DATA/workers/*/debug.log" >&2
        exit 1
    fi
    sleep 0.5
done
"$SGPU" worker list

bold "== A streamed request through the engine: sgpu call --endpoint demo --stream ..."
say "(the tiny model has random weights: expect gibberish, arriving token by token)"
printf '  > '
"$SGPU" call --endpoint demo --stream --show-worker 2>"$DIR/call.err" \
    --data '{"inputs": "Once upon a time", "parameters": {"max_new_tokens": 48}}' |
    /usr/bin/python3 -u -c '
import json, sys
for line in sys.stdin:
    if line.startswith("data:"):
        ev = json.loads(line[5:])
        tok = (ev.get("token") or {}).get("text", "")
        sys.stdout.write(tok)
        sys.stdout.flush()
print()
'
rc=${PIPESTATUS[0]}
sed 's/^sgpu: /  /' "$DIR/call.err"
[ "$rc" -ne 0 ] && say "run-demo: the call failed (exit $rc)" >&2

bold "== Starting sgpu-gateway: one OpenAI/TGI URL for the endpoint (docs/gateway.md)"
glisten=${SGPU_DEMO_GATEWAY_LISTEN:-}
if [ -z "$glisten" ]; then
    if [ -n "${SGPU_DEMO_LISTEN:-}" ] || (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null; then
        glisten=127.0.0.1:0
    else
        glisten=127.0.0.1:8000
    fi
fi
"$BIN/sgpu-gateway" --engine "$ENGINE" --listen "$glisten" --addr-file "$DIR/gateway.addr" \
    >"$DIR/gateway.log" 2>&1 &
gateway_pid=$!
for _ in $(seq 1 100); do
    [ -s "$DIR/gateway.addr" ] && break
    kill -0 "$gateway_pid" 2>/dev/null || break
    sleep 0.1
done
GATEWAY=$(cat "$DIR/gateway.addr" 2>/dev/null)
KEY=$("$SGPU" endpoint list --json | /usr/bin/python3 -c \
    'import json,sys; print([e["api_key"] for e in json.load(sys.stdin) if e["endpoint_name"] == "demo"][0])')
if [ -z "$GATEWAY" ]; then
    say "run-demo: sgpu-gateway did not start; see $DIR/gateway.log" >&2
    rc=1
else
    say "gateway at $GATEWAY (the key is the endpoint's api_key: $KEY)"
    say "POST $GATEWAY/v1/chat/completions {\"model\": \"demo\", ...}:"
    GATEWAY=$GATEWAY KEY=$KEY /usr/bin/python3 -c '
import json, os, urllib.request
req = urllib.request.Request(os.environ["GATEWAY"] + "/v1/chat/completions", method="POST",
    data=json.dumps({"model": "demo", "max_tokens": 16,
                     "messages": [{"role": "user", "content": "Hello"}]}).encode(),
    headers={"Authorization": "Bearer " + os.environ["KEY"], "Content-Type": "application/json"})
r = json.load(urllib.request.urlopen(req, timeout=60))
print("  > " + json.dumps(r["choices"][0]["message"]["content"]))
print("  gateway chat: ok")
' || { say "run-demo: the call through the gateway failed; see $DIR/gateway.log" >&2; rc=1; }
fi
[ "${SGPU_DEMO_EXIT_AFTER_CALL:-0}" = 1 ] && exit "$rc"

cat <<EOF

$(bold "== Serving. Try it yourself (in another terminal):")
  export SGPU_DATA_DIR=$DATA      # or: --engine $ENGINE --api-key \$(cat $DATA/api_key)
  $BIN/sgpu call --endpoint demo --data '{"inputs": "Hello", "parameters": {"max_new_tokens": 16}}'
  $BIN/sgpu call --endpoint demo --stream --data '{"inputs": "Hello"}'
  $BIN/sgpu load --endpoint demo -n 200 --rps 20 --data '{"inputs": "Hi", "parameters": {"max_new_tokens": 8}}'
  $BIN/sgpu worker list;  $BIN/sgpu events --endpoint demo

$(bold "== Any OpenAI or TGI client, through sgpu-gateway at $GATEWAY:")
  curl -s $GATEWAY/v1/models -H "Authorization: Bearer $KEY"
  curl -sN $GATEWAY/v1/chat/completions -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
      -d '{"model": "demo", "stream": true, "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}'
  curl -s $GATEWAY/endpoints/demo/generate -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
      -d '{"inputs": "Hello", "parameters": {"max_new_tokens": 16}}'
  python3 -c 'from openai import OpenAI  # pip install openai
c = OpenAI(base_url="$GATEWAY/v1", api_key="$KEY")
for ch in c.chat.completions.create(model="demo", stream=True, max_tokens=32,
                                    messages=[{"role": "user", "content": "Hi"}]):
    print(ch.choices[0].delta.content or "", end="", flush=True)'

$(bold "== Serve a real GGUF model (Llama family, F16/Q8_0) instead of the tiny one:")
  $BIN/sgpu endpoint create mymodel cold_workers=1 cold_mult=1 max_workers=2
  $BIN/sgpu workergroup create --endpoint mymodel \\
      --model-cmd "$BIN/sgpu-model serve --model /path/to/model.gguf --port {model_port}"
  $BIN/sgpu call --endpoint mymodel --stream --data '{"inputs": "Hello", "parameters": {"max_new_tokens": 64}}'

Press Ctrl-C to stop everything.
EOF
wait "$engine_pid"
