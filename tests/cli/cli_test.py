"""`sgpu` client CLI against a FAKE engine and FAKE workers (small Python HTTP
servers on loopback).

These fakes only script the answers the client must cope with (waiting answers,
429-then-200, refused connections, broken streams); they do not implement the
engine.  The real sgpu-engine is tested in tests/engine, and the whole stack
(engine -> launcher -> worker + model -> this CLI) in tests/e2e; the class
RealEngineTest at the end runs the CLI against a real sgpu-engine when it is
built.
"""
import http.server
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import unittest

BIN = os.environ.get("SGPU_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "bin")
SGPU = os.path.join(BIN, "sgpu")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler):
        self.calls = []  # (method, path, headers, body)
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()


class Base(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def body(self):
        n = int(self.headers.get("Content-Length", "0"))
        b = self.rfile.read(n)
        with self.server.lock:
            self.server.calls.append((self.command, self.path, dict(self.headers), b))
        return b

    def reply(self, status, obj, ctype="application/json"):
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class FakeEngine(Base):
    """POST /route/ answers from server.script: list of ("wait", None) |
    ("grant", worker_url) | ("status", code); the last entry repeats.
    Management routes answer canned objects."""

    def do_POST(self):
        b = self.body()
        srv = self.server
        if self.path == "/route/":
            req = json.loads(b)
            with srv.lock:
                step = srv.script[min(srv.step, len(srv.script) - 1)]
                srv.step += 1
            idx = req.get("request_idx") or 42
            kind, arg = step
            if kind == "wait":
                return self.reply(200, {"endpoint": req["endpoint"], "status": {"loading": 1},
                                        "request_idx": idx})
            if kind == "status":
                return self.reply(arg, {"success": False, "error": "x", "msg": "scripted"})
            if kind == "failing":  # the engine's breaker answer (docs/engine.md /route/)
                return self.reply(503, {"success": False, "error": "workergroup_failing",
                                        "msg": arg, "endpoint": req["endpoint"],
                                        "workergroup_id": 3, "failures": 5, "last_error": arg})
            # raw text with a float cost kept as written (the client must pass it verbatim)
            raw = ('{"endpoint": "%s", "url": "%s", "cost": 100.0, "reqnum": %d, '
                   '"signature": "c2ln", "request_idx": %d, "__request_id": "u-%d"}'
                   % (req["endpoint"], arg, srv.step, idx, srv.step))
            return self.reply(200, raw.encode())
        if self.path == "/api/v0/endptjobs/":
            return self.reply(200, {"success": True, "result": 7})
        if self.path == "/api/v0/workergroups/":
            return self.reply(200, {"success": True, "result": 3})
        if self.path == "/api/v0/workergroups/3/retry/":
            return self.reply(200, {"success": True})
        self.reply(404, {"success": False, "error": "not_found", "msg": "no route"})

    def do_GET(self):
        self.body()
        if self.path.startswith("/api/v0/endptjobs/"):
            return self.reply(200, {"success": True, "results": [
                {"id": 7, "endpoint_name": "demo", "endpoint_state": "active",
                 "cold_workers": 0, "max_workers": 2, "target_util": 0.9,
                 "sig_scheme": "url", "api_key": "ek"}]})
        if self.path.startswith("/api/v0/workers/"):
            return self.reply(200, {"success": True, "results": [
                {"id": 1, "endpoint_id": 7, "status": "idle", "url": "http://127.0.0.1:9",
                 "cur_load": 0.0, "measured_perf": 123.5, "reqs_working": 0, "error_msg": ""}]})
        if self.path.startswith("/api/v0/events/"):
            return self.reply(200, {"success": True, "results": [
                {"id": 1, "ts": 1700000000.5, "endpoint": "demo", "worker_id": 1,
                 "kind": "create", "reason": "scale_up", "inputs": {"A": 1}}]})
        self.reply(404, {"success": False, "error": "not_found", "msg": "no route"})

    def do_PUT(self):
        self.body()
        self.reply(200, {"success": True})

    def do_DELETE(self):
        self.body()
        self.reply(200, {"success": True})


class FakeWorker(Base):
    """server.mode: "ok" | "429-then-ok" | "stream" | "break" | "500"."""

    def do_POST(self):
        b = self.body()
        srv = self.server
        env = json.loads(b)
        with srv.lock:
            srv.n += 1
            n = srv.n
        if srv.mode == "500" or (srv.mode == "429-then-ok" and n <= 2):
            return self.reply(500 if srv.mode == "500" else 429, b"")
        if srv.mode in ("stream", "break"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(3):
                data = ("data: token-%d\n\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
                if srv.mode == "break":
                    # die after the first chunk, without the terminating chunk
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                # next chunk only after the test has seen this one on stdout
                if not srv.release[i].wait(10):
                    return
            self.wfile.write(b"0\r\n\r\n")
            return
        self.reply(200, {"generated_text": "hello", "echo": env["payload"],
                         "grant": env["auth_data"]["url"], "worker": srv.name})


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sgpu-cli-test-")
        self.servers = []
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def engine(self, script):
        e = Server(FakeEngine)
        e.script, e.step = script, 0
        self.servers.append(e)
        return e

    def worker(self, mode="ok", name="w1"):
        w = Server(FakeWorker)
        w.mode, w.n, w.name = mode, 0, name
        w.release = [threading.Event() for _ in range(3)]
        self.servers.append(w)
        return w

    def sgpu(self, *args, engine=None, timeout=60, env=None):
        e = dict(os.environ)
        e.pop("SGPU_ENGINE", None)
        e.pop("SGPU_API_KEY", None)
        e["SGPU_DATA_DIR"] = os.path.join(self.tmp, "nodata")
        if env:
            e.update(env)
        cmd = [SGPU] + (["--engine", engine.url] if engine else []) + list(args)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e,
                           cwd=self.tmp)
        return r

    def routes(self, e):
        return [json.loads(c[3]) for c in e.calls if c[1] == "/route/"]

    # ---- call ----------------------------------------------------------------

    def test_call_routes_then_calls_worker(self):
        w = self.worker()
        e = self.engine([("grant", w.url)])
        r = self.sgpu("call", "--endpoint", "demo", "--api-key", "K", "--data",
                      '{"inputs": "hi", "parameters": {"max_new_tokens": 4}}', engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)
        self.assertEqual(out["echo"], {"inputs": "hi", "parameters": {"max_new_tokens": 4}})
        self.assertEqual(out["grant"], w.url)
        (route,) = self.routes(e)
        self.assertEqual(route["endpoint"], "demo")
        self.assertEqual(route["api_key"], "K")
        self.assertEqual(route["cost"], 100.0)
        self.assertEqual(route["request_idx"], 0)
        self.assertEqual(e.calls[0][2].get("Authorization"), "Bearer K")
        # the worker got the route answer verbatim as auth_data, and the default route
        (call,) = w.calls
        self.assertEqual(call[1], "/generate")
        self.assertIn(b'"auth_data": {"endpoint": "demo", "url": "%s", "cost": 100.0,'
                      % w.url.encode(), call[3])

    def test_call_polls_while_waiting_with_same_request_idx(self):
        w = self.worker()
        e = self.engine([("wait", None), ("wait", None), ("grant", w.url)])
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{}", "-v", "--show-worker",
                      engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        idxs = [x["request_idx"] for x in self.routes(e)]
        self.assertEqual(idxs, [0, 42, 42])
        self.assertIn("waiting", r.stderr)
        self.assertIn("waits=2", r.stderr)

    def test_call_retries_429_then_succeeds(self):
        w = self.worker("429-then-ok")
        e = self.engine([("grant", w.url)])
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{}", "-v", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["generated_text"], "hello")
        self.assertEqual(len(w.calls), 3)
        self.assertEqual(len(self.routes(e)), 3)  # re-routed for every retry
        self.assertEqual({x["request_idx"] for x in self.routes(e)[1:]}, {42})

    def test_call_gives_up_after_max_attempts(self):
        w = self.worker("500")
        e = self.engine([("grant", w.url)])
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{}", "--max-attempts", "2",
                      engine=e)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(w.calls), 2)
        self.assertIn("HTTP 500", r.stderr)

    def test_connection_refused_reroutes(self):
        w = self.worker()
        dead = "http://127.0.0.1:%d" % free_port()
        e = self.engine([("grant", dead), ("grant", w.url)])
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{}", "-v", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["grant"], w.url)
        self.assertEqual([x["request_idx"] for x in self.routes(e)], [0, 42])
        self.assertIn("reroute", r.stderr)

    def test_worker_answering_garbage_gets_a_precise_error(self):
        """Issue 8 item 20: a worker that answers something that is not HTTP is named as such,
        not with a stale errno ("Operation now in progress")."""
        lst = socket.socket()
        lst.bind(("127.0.0.1", 0))
        lst.listen(16)
        stop = threading.Event()

        def serve():
            lst.settimeout(0.2)
            while not stop.is_set():
                try:
                    c, _ = lst.accept()
                except (socket.timeout, OSError):
                    continue
                try:
                    c.settimeout(5)
                    c.recv(65536)
                    c.sendall(b"this is not HTTP at all\r\n\r\n")
                except OSError:
                    pass
                c.close()
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            url = "http://127.0.0.1:%d" % lst.getsockname()[1]
            e = self.engine([("grant", url)])
            r = self.sgpu("call", "--endpoint", "demo", "--data", "{}", "--max-attempts", "2",
                          "--max-time", "30", engine=e)
        finally:
            stop.set()
            t.join()
            lst.close()
        self.assertNotEqual(r.returncode, 0)
        self.assertNotIn("Operation now in progress", r.stderr)
        self.assertIn("not a valid HTTP response", r.stderr)

    def test_stream_arrives_in_order_as_sent(self):
        w = self.worker("stream")
        e = self.engine([("grant", w.url)])
        p = subprocess.Popen([SGPU, "--engine", e.url, "call", "--endpoint", "demo", "--stream",
                              "--data", '{"inputs": "x"}'], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        self.procs.append(p)
        got = b""
        for i in range(3):
            # chunk i must reach our stdout before the worker sends chunk i+1
            want = b"data: token-%d\n\n" % i
            end = time.monotonic() + 120
            while want not in got and time.monotonic() < end:
                r, _, _ = select.select([p.stdout], [], [], 0.5)
                if r:
                    got += os.read(p.stdout.fileno(), 4096)
            self.assertIn(want, got)
            self.assertNotIn(b"token-%d" % (i + 1), got)
            w.release[i].set()
        p.wait(timeout=120)
        got += p.stdout.read()
        self.assertEqual(p.returncode, 0, p.stderr.read())
        self.assertEqual(got, b"data: token-0\n\ndata: token-1\n\ndata: token-2\n\n")
        self.assertEqual(w.calls[0][1], "/generate_stream")

    def test_midstream_failure_not_retried(self):
        w = self.worker("break")
        e = self.engine([("grant", w.url)])
        r = self.sgpu("call", "--endpoint", "demo", "--stream", "--data", "{}", engine=e)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("token-0", r.stdout)
        self.assertIn("not retried", r.stderr)
        self.assertEqual(len(w.calls), 1)
        self.assertEqual(len(self.routes(e)), 1)

    def test_engine_refusal_and_bad_data(self):
        e = self.engine([("status", 404)])
        r = self.sgpu("call", "--endpoint", "nope", "--data", "{}", engine=e)
        self.assertEqual(r.returncode, 1)
        self.assertIn("HTTP 404", r.stderr)
        self.assertIn("scripted", r.stderr)
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{bad", engine=e)
        self.assertEqual(r.returncode, 2)
        self.assertIn("not valid JSON", r.stderr)

    def test_engine_unreachable(self):
        r = self.sgpu("--engine", "http://127.0.0.1:%d" % free_port(), "call", "--endpoint", "d",
                      "--data", "{}", "--max-time", "2")
        self.assertEqual(r.returncode, 4)
        self.assertIn("last problem: engine", r.stderr)

    def test_waiting_forever_times_out(self):
        e = self.engine([("wait", None)])
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{}", "--max-time", "1.5",
                      engine=e)
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("--max-time", r.stderr)

    def test_env_fallbacks(self):
        w = self.worker()
        e = self.engine([("grant", w.url)])
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{}",
                      env={"SGPU_ENGINE": e.url, "SGPU_API_KEY": "envkey"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.routes(e)[0]["api_key"], "envkey")

    def test_tls_worker_verified_with_cacert(self):
        crt, key = os.path.join(self.tmp, "w.crt"), os.path.join(self.tmp, "w.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=worker", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", crt], check=True, capture_output=True)
        w = self.worker()
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)
        w.socket = ctx.wrap_socket(w.socket, server_side=True)
        url = "https://127.0.0.1:%d" % w.server_address[1]
        e = self.engine([("grant", url)])
        r = self.sgpu("--cacert", crt, "call", "--endpoint", "demo", "--data", "{}", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["grant"], url)
        # not trusted: refused (never sent), after the bounded attempts
        n = len(w.calls)
        r = self.sgpu("call", "--endpoint", "demo", "--data", "{}", "--max-attempts", "2",
                      engine=e)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("TLS certificate verification failed", r.stderr)
        self.assertEqual(len(w.calls), n)
        r = self.sgpu("--insecure", "call", "--endpoint", "demo", "--data", "{}", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)

    # ---- load ----------------------------------------------------------------

    def test_load_spreads_and_summarises(self):
        w1, w2 = self.worker(name="w1"), self.worker(name="w2")
        e = self.engine([("grant", w1.url), ("grant", w2.url)] * 10)
        r = self.sgpu("load", "--endpoint", "demo", "-n", "20", "--rps", "100", "--data", "{}",
                      "--json", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        s = json.loads(r.stdout)
        self.assertEqual((s["sent"], s["ok"], s["errors"]), (20, 20, 0))
        self.assertEqual(sum(s["workers"].values()), 20)
        self.assertEqual(set(s["workers"]), {w1.url, w2.url})
        self.assertIn("sent 20/20", r.stderr)  # progress line
        self.assertGreater(s["latency_s"]["p99"], 0)

    def test_load_counts_errors(self):
        w = self.worker("500")
        e = self.engine([("grant", w.url)])
        r = self.sgpu("load", "--endpoint", "demo", "-n", "4", "--rps", "50", "--data", "{}",
                      "--max-attempts", "1", engine=e)
        self.assertEqual(r.returncode, 1)
        self.assertIn("errors 4", r.stderr)
        self.assertIn("worker status 4", r.stderr)

    # ---- management ------------------------------------------------------------

    def test_endpoint_commands(self):
        e = self.engine([("wait", None)])
        r = self.sgpu("--api-key", "ADMIN", "endpoint", "create", "demo", "cold_workers=0",
                      "max_workers=2", "target_util=0.9", "sig_scheme=url", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("id=7", r.stdout)
        m, path, h, b = e.calls[-1]
        self.assertEqual((m, path), ("POST", "/api/v0/endptjobs/"))
        self.assertEqual(h["Authorization"], "Bearer ADMIN")
        self.assertEqual(json.loads(b), {"endpoint_name": "demo", "cold_workers": 0,
                                         "max_workers": 2, "target_util": 0.9,
                                         "sig_scheme": "url"})
        r = self.sgpu("--api-key", "ADMIN", "endpoint", "list", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("demo", r.stdout)
        r = self.sgpu("--api-key", "ADMIN", "endpoint", "update", "demo", "max_workers=3",
                      engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.calls[-1][:2], ("PUT", "/api/v0/endptjobs/7/"))
        self.assertEqual(json.loads(e.calls[-1][3]), {"max_workers": 3})
        r = self.sgpu("--api-key", "ADMIN", "endpoint", "delete", "7", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.calls[-1][:2], ("DELETE", "/api/v0/endptjobs/7/"))

    def test_workergroup_worker_events_commands(self):
        e = self.engine([("wait", None)])
        r = self.sgpu("--api-key", "A", "workergroup", "create", "--endpoint", "demo",
                      "--model-cmd", "sgpu-model serve --port {model_port}", "test_workers=1",
                      engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(e.calls[-1][3]), {
            "endpoint_name": "demo", "provider": "local",
            "launch": {"model_cmd": "sgpu-model serve --port {model_port}"}, "test_workers": 1})
        r = self.sgpu("--api-key", "A", "worker", "list", "--endpoint", "demo", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.calls[-1][1], "/api/v0/workers/?endpoint=demo")
        self.assertIn("idle", r.stdout)
        self.assertIn("123.5", r.stdout)
        r = self.sgpu("--api-key", "A", "events", "--endpoint", "demo", "--limit", "5", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.calls[-1][1], "/api/v0/events/?limit=5&endpoint=demo")
        self.assertIn("scale_up", r.stdout)
        self.assertIn("2023-11-14T22:13:20Z", r.stdout)

    def test_failing_workergroup_ends_the_call_at_once(self):
        e = self.engine([("wait", None), ("failing", "model server exited 4 times")])
        r = self.sgpu("--api-key", "A", "call", "--endpoint", "demo", "--data", "{}",
                      "--max-time", "120", engine=e)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("workergroup_failing", r.stderr)
        self.assertIn("model server exited 4 times", r.stderr)
        self.assertEqual(len([c for c in e.calls if c[1] == "/route/"]), 2)  # not retried
        r = self.sgpu("--api-key", "A", "workergroup", "retry", "3", engine=e)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(e.calls[-1][:2], ("POST", "/api/v0/workergroups/3/retry/"))

    def test_management_error_is_reported(self):
        e = self.engine([("wait", None)])
        r = self.sgpu("--api-key", "A", "workergroup", "delete", "99", engine=e)
        self.assertEqual(r.returncode, 0)  # fake answers success; now a real 404:
        r = self.sgpu("--api-key", "A", "endpoint", "update", "nosuch", "x=1", engine=e)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no endpoint named 'nosuch'", r.stderr)

    def test_keygen(self):
        prefix = os.path.join(self.tmp, "k")
        r = self.sgpu("keygen", "--out", prefix)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(prefix + ".pem").st_mode), 0o600)
        from Cryptodome.PublicKey import RSA
        with open(prefix + ".pem") as f:
            priv = RSA.import_key(f.read())
        with open(prefix + ".pub.pem") as f:
            pub = RSA.import_key(f.read())
        self.assertEqual(priv.n, pub.n)
        self.assertEqual(priv.size_in_bits(), 2048)

    def test_help(self):
        r = self.sgpu("--help")
        self.assertEqual(r.returncode, 0)
        for w in ("call", "load", "endpoint", "workergroup", "worker", "events", "keygen",
                  "SGPU_ENGINE", "SGPU_API_KEY"):
            self.assertIn(w, r.stdout)
        r = self.sgpu("call", "--help")
        self.assertIn("--stream", r.stdout)
        self.assertEqual(self.sgpu("frobnicate").returncode, 2)


@unittest.skipUnless(os.access(os.path.join(BIN, "sgpu-engine"), os.X_OK), "no sgpu-engine")
class RealEngineTest(unittest.TestCase):
    """The CLI against a real sgpu-engine (no workergroup: nothing is started)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sgpu-cli-real-")
        self.data = os.path.join(self.tmp, "data")
        self.log = open(os.path.join(self.tmp, "engine.log"), "w")
        self.engine = subprocess.Popen(
            [os.path.join(BIN, "sgpu-engine"), "--data-dir", self.data, "--listen",
             "127.0.0.1:0", "--tick-ms", "100"], stdout=self.log, stderr=subprocess.STDOUT)
        addr = os.path.join(self.data, "engine.addr")
        end = time.monotonic() + 120
        while not (os.path.exists(addr) and os.path.getsize(addr)) and time.monotonic() < end:
            time.sleep(0.02)
        self.env = dict(os.environ, SGPU_DATA_DIR=self.data)
        self.env.pop("SGPU_ENGINE", None)
        self.env.pop("SGPU_API_KEY", None)

    def tearDown(self):
        self.engine.send_signal(signal.SIGTERM)
        try:
            self.engine.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.engine.kill()
            self.engine.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def sgpu(self, *args):
        return subprocess.run([SGPU] + list(args), capture_output=True, text=True, timeout=60,
                              env=self.env)

    def test_management_round_trip_and_waiting_call(self):
        r = self.sgpu("endpoint", "create", "real", "cold_workers=0", "max_workers=2",
                      "sig_scheme=fields-v2")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.sgpu("endpoint", "list", "--json")
        (ep,) = json.loads(r.stdout)
        self.assertEqual((ep["endpoint_name"], ep["max_workers"], ep["sig_scheme"]),
                         ("real", 2, "fields-v2"))
        r = self.sgpu("endpoint", "update", "real", "max_workers=3")
        self.assertEqual(r.returncode, 0, r.stderr)
        (ep,) = json.loads(self.sgpu("endpoint", "list", "--json").stdout)
        self.assertEqual(ep["max_workers"], 3)
        # bad value: the engine's precise error reaches the user
        r = self.sgpu("endpoint", "update", "real", "target_util=7")
        self.assertEqual(r.returncode, 1)
        self.assertIn("target_util", r.stderr)
        # no workergroup: the request waits in the global queue until --max-time
        r = self.sgpu("call", "--endpoint", "real", "--data", "{}", "--max-time", "2", "-v")
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("waiting", r.stderr)
        # the endpoint's own key is accepted for /route/, a wrong key is refused
        r = self.sgpu("--api-key", "wrong", "call", "--endpoint", "real", "--data", "{}")
        self.assertEqual(r.returncode, 1)
        self.assertIn("HTTP 401", r.stderr)
        r = self.sgpu("--api-key", ep["api_key"], "call", "--endpoint", "real", "--data", "{}",
                      "--max-time", "1.5")
        self.assertEqual(r.returncode, 4, r.stderr)
        r = self.sgpu("endpoint", "delete", "real")
        self.assertEqual(r.returncode, 0, r.stderr)
        rows = json.loads(self.sgpu("endpoint", "list", "--json").stdout)
        self.assertTrue(rows == [] or rows[0]["endpoint_state"] == "deleting", rows)


if __name__ == "__main__":
    unittest.main()
