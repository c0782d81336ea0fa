"""Shared helpers for the sgpu-worker integration tests (stdlib + Cryptodome only).

- Stub: runs bin/fixtures/stub_model on an ephemeral port.
- Sink: a tiny engine stand-in (http.server) that records /worker_status/ and
  /delete_requests/ bodies and serves /pubkey/.
- Worker: runs bin/sgpu-worker with a clean environment, finds its port, talks HTTP.
- Grants: RSA keys and signatures made exactly like the reference engine
  (json.dumps(..., indent=4[, sort_keys=True]), PKCS#1 v1.5, SHA-256, base64).
"""
import base64
import http.client
import http.server
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time

from Cryptodome.Hash import SHA256
from Cryptodome.PublicKey import RSA
Cryptodome_RSA = RSA
from Cryptodome.Signature import pkcs1_15

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("SGPU_BIN") or os.path.join(ROOT, "bin")
WORKER_BIN = os.path.join(BIN, "sgpu-worker")
STUB_BIN = os.path.join(BIN, "fixtures", "stub_model")
if not os.path.exists(STUB_BIN):  # sanitizer runs build fixtures under build/san/bin too
    STUB_BIN = os.path.join(ROOT, "bin", "fixtures", "stub_model")


# Waits are for events; a deadline only ends a test that would otherwise hang. A loaded 2-core
# machine (or a sanitizer build) can be many times slower than an idle one, so no wait gives up
# before WAIT_FLOOR_S, whatever budget its caller passed; a wait that succeeds returns at once.
WAIT_FLOOR_S = float(os.environ.get("SGPU_TEST_WAIT_FLOOR_S", "120"))


def wait_for(pred, timeout=10.0, interval=0.02, what="condition"):
    end = time.monotonic() + max(timeout, WAIT_FLOOR_S)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for %s" % what)
        time.sleep(interval)


# ---------------------------------------------------------------- keys, grants

_KEY = None


def test_key():
    global _KEY
    if _KEY is None:
        _KEY = RSA.generate(2048)
    return _KEY


def pubkey_pem(key=None):
    return (key or test_key()).publickey().export_key("PEM")


# The url a test worker reports (WorkerTestCase.start sets PUBLIC_IPADDR and VAST_TCP_PORT_0 to
# match; tests use WORKER_PORT=0): a worker accepts only grants issued for its own url.
GRANT_URL = "http://203.0.113.7:41234"
URL_ENV = {"PUBLIC_IPADDR": "203.0.113.7", "VAST_TCP_PORT_0": "41234"}

V1_KEYS = ["cost", "endpoint", "reqnum", "url"]
V2_KEYS = ["cost", "endpoint", "reqnum", "request_idx", "url"]


def message(scheme, auth):
    """The signed text, as the reference engine builds it (docs/protocol.md §3.4)."""
    if scheme == "fields-v1":
        return json.dumps({k: auth[k] for k in V1_KEYS}, indent=4)
    if scheme == "fields-v2":
        return json.dumps({k: auth[k] for k in V2_KEYS}, indent=4, sort_keys=True)
    return json.dumps({"url": auth["url"]}, indent=4, sort_keys=True)


def sign(msg, key=None):
    h = SHA256.new(msg.encode("utf-8"))
    return base64.b64encode(pkcs1_15.new(key or test_key()).sign(h)).decode()


def grant(scheme, url, reqnum=1, cost=256.0, endpoint="my-endpoint", request_idx=1, key=None,
          extra=None):
    auth = {"cost": cost, "endpoint": endpoint, "reqnum": reqnum, "url": url,
            "request_idx": request_idx, "__request_id": "r-%s" % (reqnum,)}
    if extra:
        auth.update(extra)
    auth["signature"] = sign(message(scheme, auth), key)
    return auth


def sign_no_null_digestinfo(msg, key=None):
    """PKCS#1 v1.5 signature whose DigestInfo omits the NULL parameters
    (pycryptodome accepts both encodings; so must the worker)."""
    key = key or test_key()
    digest = SHA256.new(msg.encode("utf-8")).digest()
    di = bytes.fromhex("302f300b0609608648016503040201") + b"\x04\x20" + digest
    k = key.size_in_bytes()
    em = b"\x00\x01" + b"\xff" * (k - len(di) - 3) + b"\x00" + di
    s = pow(int.from_bytes(em, "big"), key.d, key.n)
    return base64.b64encode(s.to_bytes(k, "big")).decode()


# ---------------------------------------------------------------- processes

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Stub:
    def __init__(self, log=None, load_delay_ms=0, load_msg=None):
        args = [STUB_BIN, "--port", "0"]
        if log:
            args += ["--log", log]
        if load_delay_ms:
            args += ["--load-delay-ms", str(load_delay_ms)]
        if load_msg is not None:
            args += ["--load-msg", load_msg]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"PORT=(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError("stub_model did not start: %r" % line)
        self.port = int(m.group(1))
        self.url = "http://127.0.0.1:%d" % self.port

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, body

    def stats(self):
        return json.loads(self.get("/stats")[1])

    def ack(self, hs, n):
        return self.get("/ack?id=%s&n=%d" % (hs, n))[0]

    def control(self, obj):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("POST", "/control", json.dumps(obj))
        r = c.getresponse()
        r.read()
        c.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _send(self, status, body=b"", ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        s = self.server.sink
        if self.path.rstrip("/").endswith("/pubkey"):
            with s.lock:
                s.pubkey_hits += 1
                st, pem = s.pubkey_status, s.pubkey
            self._send(st, pem if st == 200 else b"nope", "text/plain")
            return
        self._send(404, b"{}")

    def do_POST(self):
        s = self.server.sink
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        with s.lock:
            st = s.fail.get(self.path, 200)
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
            s.posts.append({"path": self.path, "raw": raw, "json": obj, "t": time.monotonic(),
                            "status": st, "ctype": self.headers.get("Content-Type")})
        self._send(st, b"{}")


class Sink:
    """Records engine-bound POSTs; serves /pubkey/.  fail[path] = status forces errors."""

    def __init__(self, pubkey=None):
        self.lock = threading.Lock()
        self.posts = []
        self.fail = {}
        self.pubkey = pubkey if pubkey is not None else pubkey_pem()
        self.pubkey_status = 200
        self.pubkey_hits = 0
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SinkHandler)
        self.srv.daemon_threads = True
        self.srv.sink = self
        self.port = self.srv.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def reports(self, path="/worker_status/", ok_only=False):
        with self.lock:
            return [p for p in self.posts if p["path"] == path and (not ok_only or p["status"] == 200)]

    def clear(self):
        with self.lock:
            self.posts = []

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


class Worker:
    """sgpu-worker in a temp dir.  env: extra variables (strings)."""

    def __init__(self, env=None, args=None, cwd=None, wait_ready=False, timeout=None, preexec_fn=None):
        if timeout is None:
            timeout = 60 if os.environ.get("SGPU_TEST_WRAPPER") else 15
        self.tmp = tempfile.TemporaryDirectory(prefix="sgpu-worker-test-")
        self.cwd = cwd or self.tmp.name
        self.logpath = os.path.join(self.tmp.name, "worker.log")
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WORKER_PORT": "0",
             "SGPU_LOG_LEVEL": "debug", "SGPU_REPORT_INTERVAL": "10",
             "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1"),
             "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1")}
        e.update({k: str(v) for k, v in (env or {}).items()})
        self.env = e
        self.logf = open(self.logpath, "wb")
        wrapper = shlex.split(os.environ.get("SGPU_TEST_WRAPPER", ""))  # e.g. valgrind
        self.proc = subprocess.Popen(wrapper + [WORKER_BIN] + list(args or []), env=e, cwd=self.cwd,
                                     stdout=self.logf, stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
        self.port = wait_for(self._find_port, timeout, what="worker to listen")
        if wait_ready:
            self.wait_phase("ready", timeout)

    def _find_port(self):
        if self.proc.poll() is not None:
            raise AssertionError("worker exited (%s): %s" % (self.proc.returncode, self.log()))
        m = re.search(r"event=listening port=(\d+)", self.log())
        return int(m.group(1)) if m else None

    def log(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=30):
        c = self.conn(timeout)
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return Response(r.status, r.getheaders(), data)

    def post(self, path, obj, **kw):
        return self.request("POST", path, obj, **kw)

    def status(self):
        return self.request("GET", "/status").json()

    def wait_phase(self, phase, timeout=15):
        if os.environ.get("SGPU_TEST_WRAPPER"):
            timeout *= 4
        return wait_for(lambda: self.status()["phase"] == phase, timeout, what="phase " + phase)

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        rc = self.proc.returncode
        self.final_log = self.log()
        self.tmp.cleanup()
        return rc

    def sanitizer_errors(self):
        t = getattr(self, "final_log", None) or self.log()
        bad = [l for l in t.splitlines() if "ERROR: AddressSanitizer" in l or
               "runtime error:" in l or "ERROR: LeakSanitizer" in l]
        bad += [l for l in t.splitlines() if re.search(r"ERROR SUMMARY: [1-9]", l) or
                re.search(r"definitely lost: [1-9]", l) or
                re.search(r"==\d+== (Invalid (read|write|free)|Conditional jump|Syscall param)", l)]
        return bad


def _complete(buf, n):
    """True when buf holds n complete HTTP responses (Content-Length or chunked)."""
    pos = 0
    for _ in range(n):
        h = buf.find(b"\r\n\r\n", pos)
        if h < 0:
            return False
        head = buf[pos:h].lower()
        body = h + 4
        m = re.search(rb"content-length:\s*(\d+)", head)
        if m:
            end = body + int(m.group(1))
            if len(buf) < end:
                return False
            pos = end
        elif b"transfer-encoding: chunked" in head:
            e = buf.find(b"\r\n0\r\n\r\n", body - 2)
            if e < 0:
                return False
            pos = e + 7
        else:
            return False  # close-delimited: read to EOF
    return True


def raw_request(port, data, timeout=5.0, read_all=True, responses=1):
    """Send raw bytes; return what comes back until `responses` complete responses
    arrived, the peer closed, or the timeout passed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not b:
                break
            out += b
            if _complete(out, responses) or (not read_all and b"\r\n\r\n" in out):
                break
        return out
    finally:
        s.close()


def envelope(auth, payload, **extra):
    d = {"auth_data": auth, "payload": payload}
    d.update(extra)
    return d


def tgi_payload(tokens=4, **kw):
    p = {"inputs": "hello", "parameters": {"max_new_tokens": tokens}}
    p.update(kw)
    return p


class WorkerTestCase:
    """Mixin: self.stub, self.sink, self.worker; everything killed in tearDown."""

    def start(self, env=None, stub=True, stub_log=True, load_delay_ms=0, wait_ready=True,
              pubkey=None, args=None, load_msg=None):
        self._tmp = tempfile.TemporaryDirectory(prefix="sgpu-wt-")
        self.model_log = os.path.join(self._tmp.name, "model.log")
        self.stub = Stub(log=self.model_log if stub_log else None, load_delay_ms=load_delay_ms,
                         load_msg=load_msg) if stub else None
        self.sink = Sink(pubkey=pubkey)
        e = {"BACKEND": "tgi", "REPORT_ADDR": self.sink.url, "SGPU_BENCHMARK_RUNS": "1",
             "SGPU_BENCHMARK_FILE": os.path.join(self._tmp.name, ".has_benchmark")}
        e.update(URL_ENV)
        if self.stub:
            e["MODEL_SERVER_URL"] = self.stub.url
            if stub_log:
                e["MODEL_LOG"] = self.model_log
        e.update(env or {})
        self.worker = Worker(e, args=args, wait_ready=wait_ready)
        return self.worker

    def tearDown(self):
        w = getattr(self, "worker", None)
        if w:
            w.stop()
            if os.environ.get("SGPU_TEST_KEEP_LOG"):
                with open(os.environ["SGPU_TEST_KEEP_LOG"], "a") as f:
                    f.write("==== %s\n%s\n" % (self.id(), w.final_log))
            errs = w.sanitizer_errors()
            if errs:
                raise AssertionError("sanitizer: %s" % errs[:5])
        if getattr(self, "stub", None):
            self.stub.stop()
        if getattr(self, "sink", None):
            self.sink.stop()
        if getattr(self, "_tmp", None):
            self._tmp.cleanup()
