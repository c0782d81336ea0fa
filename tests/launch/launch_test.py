"""sgpu-launch integration tests: real launcher processes supervising small
stand-in programs.

The worker here is a fake (a Python script written to a temp dir, passed with
--worker-bin) that records its start / SIGTERM / exit in an events file; the
model server is a small shell command or a fake `sgpu-model` script.  The real
worker + model server run under the launcher in tests/e2e/stack_test.py.

Every process is started in its own session and killed (whole group) in
tearDown.  Ports are ephemeral.  No timing assertions: only order and content.
"""
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = os.environ.get("SGPU_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "bin")
LAUNCH = os.path.join(BIN, "sgpu-launch")

FAKE_WORKER = r'''#!/usr/bin/python3
# Fake sgpu-worker: records lifecycle events, drains for FAKE_DRAIN_S on SIGTERM.
import os, signal, sys, time, json
ev = os.environ["FAKE_EVENTS"]
def note(what):
    with open(ev, "a") as f:
        f.write("%s worker %d %.6f\n" % (what, os.getpid(), time.monotonic()))
        f.flush()
def on_term(sig, frm):
    note("term")
    time.sleep(float(os.environ.get("FAKE_DRAIN_S", "0")))
    note("exit")
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if os.environ.get("FAKE_ENV_DUMP"):
    with open(os.environ["FAKE_ENV_DUMP"], "w") as f:
        json.dump(dict(os.environ), f)
print("fake worker up pid=%d cwd=%s args=%s" % (os.getpid(), os.getcwd(), sys.argv[1:]), flush=True)
note("start")
while True:
    time.sleep(0.05)
'''

# Model server stand-in: logs the load line, ticks, records SIGTERM.
MODEL_CMD = (
    'trap \'echo "term model $$ $(cat /proc/uptime | cut -d" " -f1)" >> "$FAKE_EVENTS"; exit 0\' TERM; '
    'echo "start model $$" >> "$FAKE_EVENTS"; '
    'echo event=model_loaded; while :; do echo tick; sleep 0.1; done'
)

# Fake `sgpu-model` for the default command (`<model-bin> serve --port N`).
FAKE_MODEL_BIN = r'''#!/bin/sh
echo "fake model args: $*"
echo "model_args $*" >> "$FAKE_EVENTS"
echo event=model_loaded
trap 'exit 0' TERM
while :; do sleep 0.1; done
'''


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# Waits are for events; a deadline only ends a test that would otherwise hang. A loaded 2-core
# machine (or a sanitizer build) can be many times slower than an idle one, so no wait gives up
# before WAIT_FLOOR_S, whatever budget its caller passed; a wait that succeeds returns at once.
WAIT_FLOOR_S = float(os.environ.get("SGPU_TEST_WAIT_FLOOR_S", "120"))


def wait_for(pred, timeout=15.0, what="condition"):
    end = time.monotonic() + max(timeout, WAIT_FLOOR_S)
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


class Sink(http.server.ThreadingHTTPServer):
    """Collects POSTed bodies (error reports, CSRs)."""

    daemon_threads = True

    def __init__(self, answer=b"ok", status=200):
        self.posts = []
        self.answer = answer
        self.status = status
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()


class SinkHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with self.server.lock:
            self.server.posts.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, *a):
        pass


class LaunchBase(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sgpu-launch-test-")
        self.ws = os.path.join(self.tmp, "ws")
        self.events = os.path.join(self.tmp, "events")
        self.worker = os.path.join(self.tmp, "fake-worker")
        with open(self.worker, "w") as f:
            f.write(FAKE_WORKER)
        os.chmod(self.worker, 0o755)
        self.procs = []
        self.sinks = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            p.wait()
            for f in (p.stdout, p.stderr):
                if f:
                    f.close()
        # children live in their own groups; their pids are in the events file
        for line in read(self.events).splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "start":
                for kill in (os.killpg, os.kill):
                    try:
                        kill(int(parts[2]), signal.SIGKILL)
                    except (ProcessLookupError, PermissionError, ValueError):
                        pass
        for s in self.sinks:
            s.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self, **kw):
        e = dict(os.environ)
        e.update({"FAKE_EVENTS": self.events, "WORKER_PORT": str(free_port())})
        for k in ("REPORT_ADDR", "USE_SSL", "MODEL_LOG", "MODEL_SERVER_URL", "WORKSPACE_DIR",
                  "SGPU_TLS_CERT", "SGPU_TLS_KEY", "BACKEND"):
            e.pop(k, None)
        e.update({k: str(v) for k, v in kw.items()})
        return e

    def launch(self, *args, env=None, ws=None, model_cmd=MODEL_CMD, wait=False):
        cmd = [LAUNCH, "--workspace", ws or self.ws, "--worker-bin", self.worker]
        if model_cmd is not None:
            cmd += ["--model-cmd", model_cmd]
        cmd += list(args)
        p = subprocess.Popen(cmd, env=env or self.env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        self.procs.append(p)
        if wait:
            out, err = p.communicate(timeout=120)
            return p.returncode, out.decode(), err.decode()
        return p

    def events_of(self, kind, who="worker"):
        return [l.split() for l in read(self.events).splitlines()
                if l.startswith(kind + " " + who)]

    def wait_worker_started(self, n=1):
        return wait_for(lambda: len(self.events_of("start")) >= n and self.events_of("start"),
                        what="worker start #%d" % n)

    def stop(self, p, sig=signal.SIGTERM):
        p.send_signal(sig)
        p.communicate(timeout=120)
        return p.returncode


class LaunchTest(LaunchBase):
    def test_help_documents_options(self):
        r = subprocess.run([LAUNCH, "--help"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 0)
        for opt in ("--workspace", "--model-cmd", "--model-log", "--model-port", "--worker-bin",
                    "--model-bin", "--max-model-restarts", "--restart-delay", "--stop-timeout",
                    "--cert-sign-url", "SIGHUP", "SIGTERM", "REPORT_ADDR", "MODEL_SERVER_URL",
                    ".old"):
            self.assertIn(opt, r.stdout)
        r = subprocess.run([LAUNCH, "--bogus"], capture_output=True, text=True, timeout=120)
        self.assertEqual(r.returncode, 2)

    def test_log_rotation_keeps_old_content(self):
        os.makedirs(self.ws)
        with open(os.path.join(self.ws, "debug.log"), "w") as f:
            f.write("OLD-DEBUG-LINE\n")
        with open(os.path.join(self.ws, "model.log"), "w") as f:
            f.write("OLD-MODEL-LINE\n")
        with open(os.path.join(self.ws, "model.log.old"), "w") as f:
            f.write("OLDER-MODEL-LINE\n")
        p = self.launch()
        mlog = os.path.join(self.ws, "model.log")
        wait_for(lambda: "event=model_loaded" in read(mlog), what="model load line")
        self.wait_worker_started()
        self.assertNotIn("OLD-MODEL-LINE", read(mlog))
        old = read(mlog + ".old")
        self.assertIn("OLDER-MODEL-LINE", old)  # appended, not replaced
        self.assertIn("OLD-MODEL-LINE", old)
        self.assertLess(old.index("OLDER"), old.index("OLD-MODEL"))
        self.assertIn("OLD-DEBUG-LINE", read(os.path.join(self.ws, "debug.log.old")))
        dlog = read(os.path.join(self.ws, "debug.log"))
        self.assertNotIn("OLD-DEBUG-LINE", dlog)
        self.assertIn("event=launch_start", dlog)
        # the worker's output goes to debug.log, in the workspace as cwd
        wait_for(lambda: "fake worker up" in read(os.path.join(self.ws, "debug.log")),
                 what="worker output in debug.log")
        self.assertIn("cwd=" + os.path.realpath(self.ws),
                      read(os.path.join(self.ws, "debug.log")))
        self.assertEqual(self.stop(p), 0)

    def test_second_launcher_refused(self):
        p = self.launch()
        self.wait_worker_started()
        rc, out, err = self.launch(wait=True)  # same workspace, other WORKER_PORT
        self.assertEqual(rc, 3, err)
        self.assertIn("already running", err)
        self.assertIn(str(p.pid), err)
        self.assertEqual(len(self.events_of("start")), 1)
        self.assertEqual(self.stop(p), 0)

    def test_port_in_use_refused(self):
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        try:
            rc, out, err = self.launch(env=self.env(WORKER_PORT=port), wait=True)
            self.assertEqual(rc, 4, err)
            self.assertIn("port %d (WORKER_PORT)" % port, err)
            rc, out, err = self.launch("--model-port", str(port), wait=True)
            self.assertEqual(rc, 4, err)
            self.assertIn("model port %d" % port, err)
        finally:
            busy.close()
        self.assertEqual(self.events_of("start"), [])

    def test_worker_kill9_is_restarted(self):
        p = self.launch()
        first = self.wait_worker_started()[0]
        os.kill(int(first[2]), signal.SIGKILL)
        starts = self.wait_worker_started(2)
        self.assertNotEqual(starts[0][2], starts[1][2])
        dlog = os.path.join(self.ws, "debug.log")
        wait_for(lambda: "event=worker_crashed" in read(dlog), what="crash log line")
        self.assertIn("killed by signal 9", read(dlog))
        # the model server was not touched
        self.assertEqual(len(self.events_of("start", "model")), 1)
        # kill again: restarted again (after a short back-off)
        os.kill(int(starts[1][2]), signal.SIGKILL)
        self.wait_worker_started(3)
        self.assertEqual(self.stop(p), 0)

    def test_model_crash_loop_reports_error_and_exits(self):
        a, b = Sink(), Sink()
        self.sinks += [a, b]
        env = self.env(REPORT_ADDR="%s,%s/" % (a.url, b.url), CONTAINER_ID="4242",
                       MASTER_TOKEN='tok"en', PUBLIC_IPADDR="10.1.2.3")
        env["VAST_TCP_PORT_" + env["WORKER_PORT"]] = "41000"
        crash = 'echo "start model $$" >> "$FAKE_EVENTS"; echo "loading \\"x\\""; exit 3'
        rc, out, err = self.launch("--max-model-restarts", "2", "--restart-delay", "0.05",
                                   env=env, model_cmd=crash, wait=True)
        self.assertEqual(rc, 1, err)
        self.assertEqual(len(self.events_of("start", "model")), 3)  # first run + 2 restarts
        for sink in (a, b):
            self.assertEqual(len(sink.posts), 1)
            path, ctype, body = sink.posts[0]
            self.assertEqual(path, "/worker_status/")
            self.assertEqual(ctype, "application/json")
            rep = json.loads(body)
            self.assertEqual(rep["id"], 4242)
            self.assertEqual(rep["mtoken"], 'tok"en')
            self.assertEqual(rep["url"], "http://10.1.2.3:41000")
            self.assertIn("model server exited 3 times", rep["error_msg"])
            self.assertIn("exit status 3", rep["error_msg"])
        # every worker started was stopped (drained) before the report
        self.assertEqual(len(self.events_of("term")), len(self.events_of("start")))
        self.assertIn("event=giving_up", read(os.path.join(self.ws, "debug.log")))

    def test_crash_loop_report_url_falls_back_to_worker_port(self):
        """Issue 8 item 19: without VAST_TCP_PORT_<port> the report's url is the worker's own
        (PUBLIC_IPADDR + WORKER_PORT, as sgpu-worker reports it), never ""."""
        sink = Sink()
        self.sinks.append(sink)
        env = self.env(REPORT_ADDR=sink.url, PUBLIC_IPADDR="10.1.2.3")
        env.pop("VAST_TCP_PORT_" + env["WORKER_PORT"], None)
        env.pop("URL", None)
        crash = 'echo "start model $$" >> "$FAKE_EVENTS"; exit 3'
        rc, out, err = self.launch("--max-model-restarts", "0", "--restart-delay", "0.05",
                                   env=env, model_cmd=crash, wait=True)
        self.assertEqual(rc, 1, err)
        (post,) = sink.posts
        self.assertEqual(json.loads(post[2])["url"], "http://10.1.2.3:%s" % env["WORKER_PORT"])

    def test_worker_config_error_is_reported_not_looped(self):
        sink = Sink()
        self.sinks.append(sink)
        bad = os.path.join(self.tmp, "bad-worker")
        with open(bad, "w") as f:
            f.write('#!/bin/sh\necho "worker: invalid FOO value" >&2\nexit 2\n')
        os.chmod(bad, 0o755)
        cmd = [LAUNCH, "--workspace", self.ws, "--worker-bin", bad, "--model-cmd", MODEL_CMD]
        p = subprocess.Popen(cmd, env=self.env(REPORT_ADDR=sink.url), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        self.procs.append(p)
        p.communicate(timeout=120)
        self.assertEqual(p.returncode, 1)
        (post,) = sink.posts
        msg = json.loads(post[2])["error_msg"]
        self.assertIn("Worker Server failed to launch", msg)
        self.assertIn("worker: invalid FOO value", msg)
        self.assertIn("term model", read(self.events))  # the model server was stopped

    def test_model_crash_restarts_pair(self):
        # the model dies once (flag file), then stays up
        flag = os.path.join(self.tmp, "crashed-once")
        cmd = ('if [ ! -e %s ]; then touch %s; echo "start model $$" >> "$FAKE_EVENTS"; '
               'while [ ! -s "$FAKE_EVENTS.w" ]; do sleep 0.05; done; exit 1; fi; '
               % (flag, flag)) + MODEL_CMD
        p = self.launch("--restart-delay", "0.05", model_cmd=cmd)
        self.wait_worker_started(1)
        with open(self.events + ".w", "w") as f:  # now let the first model crash
            f.write("go")
        self.wait_worker_started(2)
        wait_for(lambda: len(self.events_of("start", "model")) >= 2, what="model restart")
        # the first worker was stopped before the new pair came up
        self.assertEqual(len(self.events_of("exit")), 1)
        self.assertIn("event=model_restart_scheduled", read(os.path.join(self.ws, "debug.log")))
        self.assertEqual(self.stop(p), 0)

    def test_sigterm_stops_worker_first(self):
        p = self.launch(env=self.env(FAKE_DRAIN_S="0.3"))
        self.wait_worker_started()
        wait_for(lambda: self.events_of("start", "model"), what="model start")
        self.assertEqual(self.stop(p), 0)
        lines = read(self.events).splitlines()
        order = [l.split()[0] + " " + l.split()[1] for l in lines]
        self.assertIn("term model", order)
        self.assertLess(order.index("start worker"), order.index("term worker"))
        self.assertLess(order.index("term worker"), order.index("exit worker"))
        self.assertLess(order.index("exit worker"), order.index("term model"))
        dlog = read(os.path.join(self.ws, "debug.log"))
        self.assertIn("event=stopped exit=0", dlog)

    def test_group_sigstop_suspends_worker_and_group_sigterm_keeps_order(self):
        # the engine's local provider: SIGSTOP/SIGCONT to the launcher's group
        p = self.launch(env=self.env(FAKE_DRAIN_S="0.2"))
        wpid = int(self.wait_worker_started()[0][2])

        def state(pid):
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0]
        os.killpg(p.pid, signal.SIGSTOP)
        wait_for(lambda: state(wpid) == "T", what="worker stopped")
        os.killpg(p.pid, signal.SIGCONT)
        wait_for(lambda: state(wpid) != "T", what="worker resumed")
        # a supervisor's SIGTERM to the whole group still stops worker before model
        wait_for(lambda: self.events_of("start", "model"), what="model start")
        os.killpg(p.pid, signal.SIGTERM)
        p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0)
        order = [" ".join(l.split()[:2]) for l in read(self.events).splitlines()]
        self.assertLess(order.index("exit worker"), order.index("term model"))

    def test_sighup_reopens_logs(self):
        p = self.launch()
        self.wait_worker_started()
        dlog = os.path.join(self.ws, "debug.log")
        mlog = os.path.join(self.ws, "model.log")
        wait_for(lambda: "tick" in read(mlog), what="model output")
        os.rename(dlog, dlog + ".1")
        os.rename(mlog, mlog + ".1")
        p.send_signal(signal.SIGHUP)
        wait_for(lambda: "event=logs_reopened" in read(dlog), what="new debug.log")
        wait_for(lambda: "tick" in read(mlog), what="model output in the new model.log")
        self.assertNotIn("event=logs_reopened", read(dlog + ".1"))
        self.assertEqual(self.stop(p), 0)
        self.assertIn("event=stopped", read(dlog))

    def test_default_model_command_and_environment(self):
        fake_model = os.path.join(self.tmp, "fake-model")
        with open(fake_model, "w") as f:
            f.write(FAKE_MODEL_BIN)
        os.chmod(fake_model, 0o755)
        dump = os.path.join(self.tmp, "env.json")
        mport = free_port()
        p = self.launch("--model-bin", fake_model, "--model-port", str(mport), "--", "--extra",
                        env=self.env(FAKE_ENV_DUMP=dump), model_cmd=None)
        self.wait_worker_started()
        wait_for(lambda: os.path.exists(dump) and os.path.getsize(dump) > 0, what="env dump")
        time.sleep(0.1)
        env = json.loads(read(dump))
        ws = os.path.realpath(self.ws)
        self.assertEqual(env["MODEL_SERVER_URL"], "http://127.0.0.1:%d" % mport)
        self.assertEqual(env["MODEL_LOG"], ws + "/model.log")
        self.assertEqual(env["MODEL_LOAD_LOG_MSG"], "event=model_loaded")
        self.assertEqual(env["MODEL_ERROR_LOG_MSGS"], "event=fatal")
        self.assertEqual(env["MODEL_HEALTH_ENDPOINT"], "/health")
        self.assertEqual(env["BACKEND"], "tgi")
        self.assertEqual(env["WORKSPACE_DIR"], ws)
        self.assertIn("model_args serve --port %d" % mport, read(self.events))
        wait_for(lambda: "args=['--extra']" in read(os.path.join(self.ws, "debug.log")),
                 what="worker arguments")
        self.assertEqual(self.stop(p), 0)

    def test_written_sgpu_model_command_gets_sgpu_model_defaults(self):
        # A user-written command that runs sgpu-model (e.g. to pass --model F.gguf) gets the
        # same log patterns as the default command; any other model server gets none.
        bindir = os.path.join(self.tmp, "bin")
        os.makedirs(bindir, exist_ok=True)
        for name in ("sgpu-model", "other-server"):
            path = os.path.join(bindir, name)
            with open(path, "w") as f:
                f.write(FAKE_MODEL_BIN)
            os.chmod(path, 0o755)
        for name, expect in (("sgpu-model", True), ("other-server", False)):
            dump = os.path.join(self.tmp, "env-%s.json" % name)
            ws = os.path.join(self.tmp, "ws-" + name)
            cmd = "%s serve --model /nonexistent.gguf --port %d" % (
                os.path.join(bindir, name), free_port())
            p = self.launch(ws=ws, env=self.env(FAKE_ENV_DUMP=dump), model_cmd=cmd)
            wait_for(lambda: os.path.exists(dump) and os.path.getsize(dump) > 0,
                     what="env dump")
            time.sleep(0.1)
            env = json.loads(read(dump))
            if expect:
                self.assertEqual(env.get("MODEL_LOAD_LOG_MSG"), "event=model_loaded")
                self.assertEqual(env.get("MODEL_HEALTH_ENDPOINT"), "/health")
                self.assertEqual(env.get("BACKEND"), "tgi")
            else:
                self.assertNotIn("MODEL_LOAD_LOG_MSG", env)
                self.assertNotIn("BACKEND", env)
            self.assertEqual(self.stop(p), 0)

    def test_tls_self_signed(self):
        dump = os.path.join(self.tmp, "env.json")
        p = self.launch(env=self.env(USE_SSL="true", FAKE_ENV_DUMP=dump))
        self.wait_worker_started()
        wait_for(lambda: os.path.exists(dump) and os.path.getsize(dump) > 0, what="env dump")
        time.sleep(0.1)
        env = json.loads(read(dump))
        key, crt = env["SGPU_TLS_KEY"], env["SGPU_TLS_CERT"]
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, key)  # matching pair, parseable
        self.assertEqual(self.stop(p), 0)

    def test_tls_csr_signed_by_url(self):
        # the "signing service" answers with a certificate made here by openssl
        crt = os.path.join(self.tmp, "signed.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=test", "-keyout", os.path.join(self.tmp, "k"), "-out", crt],
                       check=True, capture_output=True)
        with open(crt, "rb") as f:
            sink = Sink(answer=f.read())
        self.sinks.append(sink)
        p = self.launch(env=self.env(USE_SSL="true", CONTAINER_ID="77"),
                        *["--cert-sign-url", sink.url + "/api/v0/sign_cert/"])
        self.wait_worker_started()
        path, ctype, body = sink.posts[0]
        self.assertEqual(path, "/api/v0/sign_cert/?instance_id=77")
        self.assertEqual(ctype, "application/octet-stream")
        self.assertIn(b"BEGIN CERTIFICATE REQUEST", body)
        self.assertEqual(read(os.path.join(self.ws, "instance.crt")), read(crt))
        self.assertEqual(self.stop(p), 0)


class StatusSink(http.server.ThreadingHTTPServer):
    """A minimal engine stand-in for the real worker: records /worker_status/ bodies,
    serves GET /pubkey/, accepts /delete_requests/."""

    daemon_threads = True

    def __init__(self, pubkey_pem):
        self.reports = []
        self.pubkey = pubkey_pem
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), StatusHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()


class StatusHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self, body, ctype="application/json"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._answer(self.server.pubkey, "text/plain")

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if self.path == "/worker_status/":
            with self.server.lock:
                self.server.reports.append(json.loads(body))
        self._answer(b'{"success": true}')

    def log_message(self, *a):
        pass


REAL = [os.path.join(BIN, b) for b in ("sgpu-worker", "sgpu-model", "sgpu")]


@unittest.skipUnless(all(os.access(b, os.X_OK) for b in REAL), "sgpu-worker/sgpu-model not built")
class LaunchRealTest(LaunchBase):
    """The launcher with the real sgpu-worker and sgpu-model (default model command)."""

    def setUp(self):
        super().setUp()
        subprocess.run([os.path.join(BIN, "sgpu"), "keygen", "--out",
                        os.path.join(self.tmp, "k")], check=True, capture_output=True)
        with open(os.path.join(self.tmp, "k.pub.pem"), "rb") as f:
            self.sink = StatusSink(f.read())
        self.sinks.append(self.sink)

    def real_env(self, **kw):
        e = self.env(REPORT_ADDR=self.sink.url, CONTAINER_ID="5", UNSECURED="true",
                     SGPU_BENCHMARK="false", SGPU_HEALTH_INTERVAL="0.2",
                     SGPU_REPORT_INTERVAL="1", **kw)
        return e

    def launch_real(self, *args, env=None, model_cmd=None):
        cmd = [LAUNCH, "--workspace", self.ws, "--model-port", str(free_port())] + list(args)
        if model_cmd:
            cmd += ["--model-cmd", model_cmd]
        p = subprocess.Popen(cmd, env=env or self.real_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        self.procs.append(p)
        return p

    def ready_reports(self):
        with self.sink.lock:
            return [r for r in self.sink.reports if r.get("max_perf", 0) > 0 and
                    not r.get("error_msg")]

    def worker_pids(self, lpid):
        try:
            with open("/proc/%d/task/%d/children" % (lpid, lpid)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            return []
        out = []
        for k in kids:
            try:
                with open("/proc/%d/cmdline" % k, "rb") as f:
                    if f.read().split(b"\0")[0].endswith(b"sgpu-worker"):
                        out.append(k)
            except OSError:
                pass
        return out

    def test_real_pair_serves_heals_and_stops_in_order(self):
        env = self.real_env()
        p = self.launch_real(env=env)
        wait_for(self.ready_reports, what="a ready report from the real worker")
        port = env["WORKER_PORT"]
        auth = {"cost": 100.0, "endpoint": "e", "reqnum": 1, "request_idx": 1,
                "signature": "", "url": "http://127.0.0.1:%s" % port}  # UNSECURED=true
        body = json.dumps({"auth_data": auth, "payload": {"inputs": "Hi",
                           "parameters": {"max_new_tokens": 4}}}).encode()
        import urllib.request
        req = urllib.request.Request("http://127.0.0.1:%s/generate" % port, data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            self.assertIn("generated_text", json.loads(r.read()))
        (wpid,) = wait_for(lambda: self.worker_pids(p.pid), what="worker pid")
        n = len(self.ready_reports())
        os.kill(wpid, signal.SIGKILL)
        wait_for(lambda: [x for x in self.worker_pids(p.pid) if x != wpid], what="new worker")
        wait_for(lambda: len(self.ready_reports()) > n, what="ready again after the restart")
        self.assertEqual(self.stop(p), 0)
        dlog = read(os.path.join(self.ws, "debug.log"))
        self.assertIn("comp=worker event=draining", dlog)
        self.assertLess(dlog.rindex("event=worker_exited"), dlog.rindex("event=stopping child=model"))
        self.assertIn("event=model_exited", dlog)

    def test_real_worker_serves_tls_with_generated_certificate(self):
        env = self.real_env(USE_SSL="true")
        p = self.launch_real(env=env)
        rep = wait_for(self.ready_reports, what="a ready report")[-1]
        port = env["WORKER_PORT"]
        self.assertTrue(rep["url"].startswith("https://"), rep)
        # the self-signed certificate verifies for 127.0.0.1 when trusted as its own CA
        ctx = ssl.create_default_context(cafile=os.path.join(self.ws, "instance.crt"))
        auth = {"cost": 100.0, "endpoint": "e", "reqnum": 1, "request_idx": 1,
                "signature": "", "url": "https://127.0.0.1:%s" % port}
        body = json.dumps({"auth_data": auth, "payload": {"inputs": "Hi",
                           "parameters": {"max_new_tokens": 2}}}).encode()
        import urllib.request
        req = urllib.request.Request("https://127.0.0.1:%s/generate" % port, data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            self.assertIn("generated_text", json.loads(r.read()))
        self.assertEqual(self.stop(p), 0)

    def test_real_model_failure_is_reported(self):
        bad = "%s serve --model %s --port %d" % (os.path.join(BIN, "sgpu-model"),
                                                 os.path.join(self.tmp, "missing.gguf"),
                                                 free_port())
        p = self.launch_real("--max-model-restarts", "1", "--restart-delay", "0.05",
                             model_cmd=bad)
        p.communicate(timeout=120)
        self.assertEqual(p.returncode, 1)
        with self.sink.lock:
            errs = [r for r in self.sink.reports if "model server exited" in r.get("error_msg", "")]
        self.assertEqual(len(errs), 1)
        self.assertEqual(errs[0]["id"], 5)
        self.assertIn("missing.gguf", read(os.path.join(self.ws, "model.log")) +
                      read(os.path.join(self.ws, "model.log.old")))


if __name__ == "__main__":
    unittest.main()
