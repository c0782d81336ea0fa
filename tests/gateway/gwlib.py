"""Helpers for the sgpu-gateway integration tests (stdlib only).

Stack: a real sgpu-engine (tests/engine/enginelib.py) whose `local` provider starts sgpu-launch
-> sgpu-worker in front of bin/fixtures/stub_model (or the embedded tiny model), and a real
sgpu-gateway pointed at it.  The worker serves both the TGI and the OpenAI routes (SGPU_CONFIG
handlers below), so one endpoint answers every client protocol the gateway speaks.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine"))
import enginelib as el  # noqa: E402

BIN = el.BIN
wait_for = el.wait_for

# TGI and OpenAI routes on one worker, with the presets' workload rules; any other POST path
# goes to the model server as is (generic, constant workload).
HANDLERS = {"handlers": [
    {"route": "/generate", "workload": "tgi", "payload": "tgi"},
    {"route": "/generate_stream", "workload": "tgi", "payload": "tgi"},
    {"route": "/v1/chat/completions", "workload": "openai"},
    {"route": "/v1/completions", "workload": "openai"},
    {"route": "*", "workload": {"constant": 100}},
]}


def handlers_file(workdir):
    path = os.path.join(workdir, "handlers.json")
    with open(path, "w") as f:
        json.dump(HANDLERS, f)
    return path


def stub_launch(workdir, extra_env=None):
    stub = el.binpath("fixtures/stub_model")
    env = {"SGPU_CONFIG": handlers_file(workdir), "SGPU_BENCHMARK": "false",
           "SGPU_MAX_PERF": "1000", "SGPU_REPORT_INTERVAL": "1", "SGPU_HEALTH_INTERVAL": "1",
           "SGPU_LOG_LEVEL": "info", "SGPU_DRAIN_TIMEOUT": "2"}
    env.update(extra_env or {})
    return {"model_cmd": stub + " --port {model_port} --log \"$MODEL_LOG\"", "env": env,
            "args": ["--stop-timeout", "5"]}


def create_endpoint(eng, name, **params):
    body = {"endpoint_name": name, "min_load": 0, "cold_workers": 1, "max_workers": 1,
            "cold_mult": 1, "target_util": 1.0, "target_queue_time": 0}
    body.update(params)
    st, r = eng.call("POST", "/api/v0/endptjobs/", body)
    assert st == 200, (st, r)
    return r["result"], r["api_key"]


class Gateway:
    def __init__(self, engine_url, *extra, workdir):
        self.dir = workdir
        self.addr_file = os.path.join(workdir, "gateway.addr")
        if os.path.exists(self.addr_file):
            os.unlink(self.addr_file)
        self.logpath = os.path.join(workdir, "gateway.log")
        self.log = open(self.logpath, "ab")
        args = [el.binpath("sgpu-gateway"), "--engine", engine_url, "--listen", "127.0.0.1:0",
                "--addr-file", self.addr_file] + list(extra)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: os.path.exists(self.addr_file) or self.proc.poll() is not None,
                 timeout=30, what="gateway address")
        if self.proc.poll() is not None:
            raise RuntimeError("gateway exited: " + self.logtext()[-2000:])
        with open(self.addr_file) as f:
            self.url = f.read().strip()
        self.host, self.port = self.url.split("//")[1].split(":")
        self.port = int(self.port)

    def logtext(self):
        with open(self.logpath, errors="replace") as f:
            return f.read()

    def conn(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method, path, body=None, key=None, headers=None, timeout=60):
        """(status, headers dict (lower-case names), body bytes)"""
        h = {"Content-Type": "application/json"}
        if key:
            h["Authorization"] = "Bearer " + key
        h.update(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def json(self, method, path, body=None, key=None, **kw):
        st, h, data = self.request(method, path, body, key, **kw)
        try:
            return st, json.loads(data)
        except ValueError:
            return st, data

    def metrics(self):
        st, _, data = self.request("GET", "/metrics")
        assert st == 200
        out = {}
        for ln in data.decode().splitlines():
            if ln and not ln.startswith("#"):
                k, v = ln.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def sanitizer_errors(self):
        pats = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
        return [ln for ln in self.logtext().splitlines() if any(p in ln for p in pats)]

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        errs = self.sanitizer_errors()
        if errs:
            raise AssertionError("sanitizer errors in %s: %s" % (self.logpath, errs[:5]))


def sse_events(resp):
    """Yield the `data:` payloads of an SSE response as they arrive (str)."""
    buf = b""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data:"):
            buf = line[5:].strip()
            yield buf.decode()
