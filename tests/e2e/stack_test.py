"""End to end with real processes: sgpu-engine (local provider) -> sgpu-launch
-> sgpu-model (embedded tiny model) + sgpu-worker -> the `sgpu` client.

  - scale from zero: the first request waits in the engine's queue while an
    instance is created, loads and reports ready, then is served;
  - kill -9 of a worker is healed by its launcher (same instance, same worker id);
  - a model server that keeps crashing ends as `error` at the engine (the
    launcher's report) and the instance is replaced;
  - SIGTERM of the engine drains its pool without losing an accepted request.

The worker's benchmark is turned off through the workergroup's env
(SGPU_BENCHMARK=false) so that an instance is ready in about a second on this
2-core machine; cold start with the benchmark is measured by bench/launch.sh.
"""
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

BIN = os.environ.get("SGPU_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "bin")
NEEDED = ["sgpu-engine", "sgpu-launch", "sgpu-worker", "sgpu-model", "sgpu"]
MISSING = [b for b in NEEDED if not os.access(os.path.join(BIN, b), os.X_OK)]

FAST_ENV = {"SGPU_BENCHMARK": "false", "SGPU_MAX_PERF": "100", "SGPU_HEALTH_INTERVAL": "1",
            "SGPU_REPORT_INTERVAL": "1"}


# Waits are for events; a deadline only ends a test that would otherwise hang. A loaded 2-core
# machine (or a sanitizer build) can be many times slower than an idle one, so no wait gives up
# before WAIT_FLOOR_S, whatever budget its caller passed; a wait that succeeds returns at once.
WAIT_FLOOR_S = float(os.environ.get("SGPU_TEST_WAIT_FLOOR_S", "120"))


def wait_for(pred, timeout=30.0, what="condition", step=0.05):
    end = time.monotonic() + max(timeout, WAIT_FLOOR_S)
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out waiting for " + what)


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode()
    except OSError:
        return ""


@unittest.skipIf(MISSING, "not built: %s" % MISSING)
class StackTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="sgpu-e2e-")
        self.data = os.path.join(self.tmp, "data")
        self.elog = open(os.path.join(self.tmp, "engine.log"), "w")
        self.engine = subprocess.Popen(
            [os.path.join(BIN, "sgpu-engine"), "--data-dir", self.data, "--listen",
             "127.0.0.1:0", "--tick-ms", "100", "--scale-down-delay-s", "5",
             "--drain-grace-s", "0.5"],
            stdout=self.elog, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: os.path.exists(os.path.join(self.data, "engine.addr")) and
                 os.path.getsize(os.path.join(self.data, "engine.addr")) > 0,
                 what="engine address")
        self.env = dict(os.environ, SGPU_DATA_DIR=self.data)
        for k in ("SGPU_ENGINE", "SGPU_API_KEY"):
            self.env.pop(k, None)
        self.bg = []

    def tearDown(self):
        for p in self.bg:
            if p.poll() is None:
                p.kill()
            p.communicate()
        if self.engine.poll() is None:
            self.engine.send_signal(signal.SIGTERM)
            try:
                self.engine.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the instances (launchers lead their process groups)
        wdir = os.path.join(self.data, "workers")
        for w in (os.listdir(wdir) if os.path.isdir(wdir) else []):
            try:
                with open(os.path.join(wdir, w, "sgpu-launch.lock")) as f:
                    pid = int(f.read().strip() or 0)
            except (OSError, ValueError):
                continue
            if pid > 0 and "sgpu-launch" in cmdline(pid):
                for c in children(pid):
                    for kill in (os.killpg, os.kill):
                        try:
                            kill(c, signal.SIGKILL)
                        except OSError:
                            pass
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self.engine.poll() is None:
            os.killpg(self.engine.pid, signal.SIGKILL)
            self.engine.wait()
        self.elog.close()
        if os.environ.get("SGPU_KEEP_TEST_DIR"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def sgpu(self, *args, timeout=60):
        r = subprocess.run([os.path.join(BIN, "sgpu")] + list(args), capture_output=True,
                           text=True, timeout=timeout, env=self.env)
        return r

    def ok(self, *args, timeout=60):
        r = self.sgpu(*args, timeout=timeout)
        self.assertEqual(r.returncode, 0, "sgpu %s\nstdout: %s\nstderr: %s" % (args, r.stdout,
                                                                              r.stderr))
        return r

    def workers(self):
        r = self.ok("worker", "list", "--json")
        return json.loads(r.stdout)

    def events(self):
        r = self.ok("events", "--json", "--limit", "1000")
        return json.loads(r.stdout)

    def setup_endpoint(self, cold=0, max_workers=1, model_cmd=None, args=None, env=None):
        self.ok("endpoint", "create", "e2e", "cold_workers=%d" % cold,
                "max_workers=%d" % max_workers, "inactivity_timeout=-1")
        launch = {"env": dict(FAST_ENV, **(env or {}))}
        if model_cmd:
            launch["model_cmd"] = model_cmd
        if args:
            launch["args"] = args
        self.ok("workergroup", "create", "--endpoint", "e2e", "--launch", json.dumps(launch))

    def launcher_pid(self, wid):
        path = os.path.join(self.data, "workers", str(wid), "sgpu-launch.lock")
        return wait_for(lambda: read(path).strip() and int(read(path).strip()),
                        what="launcher of worker %s" % wid)

    def worker_child(self, lpid):
        return [c for c in children(lpid) if cmdline(c).endswith("sgpu-worker")]

    # ---- tests ------------------------------------------------------------------

    def test_scale_from_zero_then_kill9_healed_by_launcher(self):
        self.setup_endpoint(cold=0)
        self.assertEqual(self.workers(), [])  # zero workers before the first request
        r = self.ok("call", "--endpoint", "e2e", "--data",
                    '{"inputs": "Hello", "parameters": {"max_new_tokens": 8}}', "--show-worker",
                    "--max-time", "50")
        self.assertIn("generated_text", json.loads(r.stdout))
        self.assertIn("waits=", r.stderr)
        ws = self.workers()
        self.assertEqual(len(ws), 1)
        wid = ws[0]["id"]
        lpid = self.launcher_pid(wid)
        (wpid,) = wait_for(lambda: self.worker_child(lpid), what="worker process")
        os.kill(wpid, signal.SIGKILL)
        (wpid2,) = wait_for(lambda: [p for p in self.worker_child(lpid) if p != wpid],
                            what="worker restarted by its launcher")
        self.assertNotEqual(wpid, wpid2)
        # served again by the same instance (healed, not replaced)
        r = self.ok("call", "--endpoint", "e2e", "--data",
                    '{"inputs": "again", "parameters": {"max_new_tokens": 4}}', "--max-time", "50")
        self.assertIn("generated_text", json.loads(r.stdout))
        self.assertEqual([w["id"] for w in self.workers()], [wid])
        dlog = read(os.path.join(self.data, "workers", str(wid), "debug.log"))
        self.assertIn("event=worker_crashed", dlog)

    def test_model_crash_loop_is_error_at_engine_and_replaced(self):
        self.setup_endpoint(cold=1, model_cmd="echo loading; exit 3",
                            args=["--max-model-restarts", "1", "--restart-delay", "0.05"])

        def replaced():
            # a create event for another worker (the replacement lives only until it crashes
            # too, and the workergroup's back-off spaces the creates: count events, not the
            # current worker list)
            evs = self.events()
            errored = [e for e in evs if "model server exited" in json.dumps(e)]
            return errored and any(e["kind"] == "create" and
                                   e.get("worker_id") != errored[0].get("worker_id")
                                   for e in evs) and errored
        errored = wait_for(replaced, timeout=40, what="error at the engine + replacement",
                           step=0.3)
        first = errored[0]["worker_id"]
        self.assertIsNotNone(first)
        dlog = read(os.path.join(self.data, "workers", str(first), "debug.log"))
        self.assertIn("event=error_reported", dlog)
        self.assertIn("event=giving_up", dlog)

    def test_engine_sigterm_drains_accepted_request(self):
        self.setup_endpoint(cold=1)
        wait_for(lambda: any(w["status"] == "idle" for w in self.workers()), timeout=40,
                 what="a ready worker", step=0.2)
        p = subprocess.Popen(
            [os.path.join(BIN, "sgpu"), "call", "--endpoint", "e2e", "--stream", "--data",
             '{"inputs": "a long story", "parameters": {"max_new_tokens": 400}}'],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env)
        self.bg.append(p)
        # accepted: the first token has reached the client
        r, _, _ = select.select([p.stdout], [], [], 30)
        self.assertTrue(r, "no first byte")
        first = os.read(p.stdout.fileno(), 65536)
        self.assertIn(b"data:", first)
        self.engine.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 0, err)
        body = first + out
        events = [l for l in body.decode().split("\n") if l.startswith("data:")]
        self.assertEqual(len(events), 400, body[-300:])
        self.assertEqual(self.engine.wait(timeout=120), 0)
        ws = os.listdir(os.path.join(self.data, "workers"))
        dlog = read(os.path.join(self.data, "workers", ws[0], "debug.log"))
        # the launcher got SIGTERM and stopped the worker first, which drained
        self.assertIn("event=stop_requested signal=SIGTERM", dlog)
        self.assertLess(dlog.index("event=stopping child=worker"), dlog.index("event=drained"))
        if "child=model" in dlog:  # (the engine may SIGKILL the group before this)
            self.assertLess(dlog.index("event=drained"), dlog.index("child=model"))


if __name__ == "__main__":
    unittest.main()
