"""Helpers for the sgpu-engine integration tests (stdlib only).

Engine: starts bin/sgpu-engine on an ephemeral port in a temporary data dir.
Fleet: light fake workers driven by the engine's `command` provider. The provider commands
append one line per action to a control file; a thread tails it and creates/starts/stops/
destroys FakeWorker objects that report to /worker_status/ like real workers (G3 fields) and
"serve" requests in-process: each worker runs a FIFO queue, a request of cost c takes
c / max_perf seconds. The fleet records violations (a worker stopped/destroyed while it still
had work) and the maximum number of live instances.
"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse

BIN = os.environ.get("SGPU_BIN") or os.path.join(os.path.dirname(__file__), "..", "..", "bin")
# Waits are for events; a deadline only ends a test that would otherwise hang. A loaded 2-core
# machine (or a sanitizer build) can be many times slower than an idle one, so no wait gives up
# before WAIT_FLOOR_S, whatever budget its caller passed; a wait that succeeds returns at once.
WAIT_FLOOR_S = float(os.environ.get("SGPU_TEST_WAIT_FLOOR_S", "120"))


def binpath(name):
    return os.path.join(BIN, name)


class Engine:
    def __init__(self, *extra, data_dir=None, tick_ms=50, keep=False):
        self.own_dir = data_dir is None
        self.dir = data_dir or tempfile.mkdtemp(prefix="sgpu-engine-test-")
        self.extra = list(extra)
        self.tick_ms = tick_ms
        self.keep = keep or bool(os.environ.get("SGPU_TEST_KEEP"))
        self.proc = None
        self.start()

    def start(self):
        addr = os.path.join(self.dir, "engine.addr")
        if os.path.exists(addr):
            os.unlink(addr)
        self.log = open(os.path.join(self.dir, "engine.log"), "ab")
        args = [binpath("sgpu-engine"), "--data-dir", self.dir, "--listen", "127.0.0.1:0",
                "--tick-ms", str(self.tick_ms)] + self.extra
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + WAIT_FLOOR_S
        while not os.path.exists(addr):
            if self.proc.poll() is not None:
                raise RuntimeError("engine exited: " + self.logtext()[-2000:])
            if time.time() > deadline:
                raise RuntimeError("engine did not start")
            time.sleep(0.02)
        time.sleep(0.02)
        with open(addr) as f:
            self.url = f.read().strip()
        u = urllib.parse.urlparse(self.url)
        self.host, self.port = u.hostname, u.port
        with open(os.path.join(self.dir, "api_key")) as f:
            self.key = f.read().strip()

    def logtext(self):
        try:
            with open(os.path.join(self.dir, "engine.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=WAIT_FLOOR_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        self.proc = None

    def sanitizer_errors(self):
        log = self.logtext()
        pats = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
        return [ln for ln in log.splitlines() if any(p in ln for p in pats)]

    def close(self):
        self.stop()
        errs = self.sanitizer_errors()
        if self.own_dir and not self.keep and not errs:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errs:
            raise AssertionError("sanitizer errors in %s/engine.log: %s" % (self.dir, errs[:5]))

    # ---- HTTP ----
    def raw(self, method, path, body=None, headers=None, timeout=60):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            if isinstance(body, str):
                body = body.encode()
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, data, r
        finally:
            c.close()

    def call(self, method, path, body=None, key=True, headers=None):
        h = dict(headers or {})
        if key is True:
            h["Authorization"] = "Bearer " + self.key
        elif key:
            h["Authorization"] = "Bearer " + key
        st, data, _ = self.raw(method, path, body, h)
        try:
            return st, json.loads(data)
        except ValueError:
            return st, data

    def create_endpoint(self, name, **params):
        body = {"endpoint_name": name}
        body.update(params)
        st, r = self.call("POST", "/api/v0/endptjobs/", body)
        assert st == 200, (st, r)
        return r["result"]

    def create_group(self, endpoint, provider, launch):
        st, r = self.call("POST", "/api/v0/workergroups/",
                          {"endpoint_name": endpoint, "provider": provider, "launch": launch})
        assert st == 200, (st, r)
        return r["result"]

    def workers(self, endpoint=None):
        q = "?endpoint=" + endpoint if endpoint else ""
        st, r = self.call("GET", "/api/v0/workers/" + q)
        assert st == 200, (st, r)
        return r["results"]

    def events(self, endpoint=None, limit=10000):
        q = "?limit=%d" % limit + ("&endpoint=" + endpoint if endpoint else "")
        st, r = self.call("GET", "/api/v0/events/" + q)
        assert st == 200, (st, r)
        return r["results"]

    def route(self, endpoint, cost=100.0, request_idx=0, key=None):
        body = {"endpoint": endpoint, "api_key": key or self.key, "cost": cost}
        if request_idx:
            body["request_idx"] = request_idx
        return self.call("POST", "/route/", body, key=False)


def wait_for(pred, timeout=30.0, interval=0.05, what="condition"):
    deadline = time.time() + max(timeout, WAIT_FLOOR_S)
    while True:
        v = pred()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


class FakeWorker:
    def __init__(self, fleet, wid, mtoken, perf, load_s):
        self.fleet = fleet
        self.id = wid
        self.mtoken = mtoken
        self.perf = perf
        self.url = "http://127.0.0.1:%d" % (20000 + wid)
        self.ready_at = time.time() + load_s
        self.running = True  # process running (not SIGSTOPped)
        self.alive = True
        self.lock = threading.Lock()
        self.queue = []  # [finish_time, cost, request_idx]
        self.last_finish = 0.0
        self.served = 0
        self.new_load = 0.0
        self.error_msg = ""

    def submit(self, cost, request_idx):
        with self.lock:
            if not self.alive or not self.running:
                self.fleet.violations.append("request sent to %s worker %d" % (
                    "destroyed" if not self.alive else "stopped", self.id))
                return None
            now = time.time()
            start = max(now, self.last_finish)
            fin = start + cost / self.perf
            self.last_finish = fin
            self.queue.append([fin, cost, request_idx])
            self.new_load += cost
            return fin

    def inflight(self, now=None):
        now = now or time.time()
        with self.lock:
            done = [q for q in self.queue if q[0] <= now]
            self.served += len(done)
            self.queue = [q for q in self.queue if q[0] > now]
            return list(self.queue)

    def report(self):
        now = time.time()
        q = self.inflight(now)
        loaded = now >= self.ready_at
        with self.lock:
            nl, self.new_load = self.new_load, 0.0
        return {"id": self.id, "mtoken": self.mtoken, "version": "1.1.0",
                "loadtime": 0.3 if loaded else 0.0,
                "cur_load": sum(x[1] for x in q), "rej_load": 0.0, "new_load": nl,
                "error_msg": self.error_msg, "max_perf": self.perf if loaded else 0.0,
                "cur_perf": 0.0, "cur_capacity": 0, "max_capacity": 0,
                "num_requests_working": len(q), "num_requests_recieved": 0,
                "additional_disk_usage": 0.0,
                "working_request_idxs": [x[2] for x in q], "url": self.url}


class Fleet:
    """Fake workers behind the `command` provider."""

    def __init__(self, engine, perf=100.0, load_s=0.3, report_s=0.1, park=True):
        self.engine = engine
        self.perf = perf
        self.load_s = load_s
        self.report_s = report_s
        self.dir = tempfile.mkdtemp(prefix="sgpu-fleet-")
        self.ctl = os.path.join(self.dir, "ctl")
        open(self.ctl, "w").close()
        self.workers = {}
        self.by_url = {}
        self.violations = []
        self.max_live = 0
        self.actions = []  # (time, action, id)
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.launch = {
            "create": "echo create $SGPU_WORKER_ID $SGPU_MASTER_TOKEN >> %s; echo inst-$SGPU_WORKER_ID" % self.ctl,
            "destroy": "echo destroy $SGPU_WORKER_ID >> %s" % self.ctl,
        }
        if park:
            self.launch["start"] = "echo start $SGPU_WORKER_ID >> %s" % self.ctl
            self.launch["stop"] = "echo stop $SGPU_WORKER_ID >> %s" % self.ctl
        self.threads = [threading.Thread(target=self._tail, daemon=True),
                        threading.Thread(target=self._reporter, daemon=True)]
        for t in self.threads:
            t.start()

    def close(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def live(self):
        with self.lock:
            return [w for w in self.workers.values() if w.alive]

    def _tail(self):
        pos = 0
        buf = b""
        while not self.stop_ev.is_set():
            with open(self.ctl, "rb") as f:
                f.seek(pos)
                data = f.read()
            if not data:
                time.sleep(0.01)
                continue
            pos += len(data)
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._handle(line.decode().split())

    def _handle(self, parts):
        if not parts:
            return
        act, wid = parts[0], int(parts[1])
        now = time.time()
        with self.lock:
            self.actions.append((now, act, wid))
            w = self.workers.get(wid)
            if act == "create":
                w = FakeWorker(self, wid, parts[2], self.perf, self.load_s)
                self.workers[wid] = w
                self.by_url[w.url] = w
            elif w is None:
                self.violations.append("%s of unknown worker %d" % (act, wid))
                return
            elif act in ("stop", "destroy"):
                if w.alive and w.running and w.inflight(now):
                    self.violations.append("%s of worker %d with %d requests in flight" % (
                        act, wid, len(w.inflight(now))))
                if act == "stop":
                    w.running = False
                else:
                    w.alive = False
            elif act == "start":
                w.running = True
            live = sum(1 for x in self.workers.values() if x.alive)
            self.max_live = max(self.max_live, live)

    def _reporter(self):
        conn = None
        while not self.stop_ev.is_set():
            t0 = time.time()
            with self.lock:
                ws = [w for w in self.workers.values() if w.alive and w.running]
            for w in ws:
                body = json.dumps(w.report())
                for _ in range(2):
                    try:
                        if conn is None:
                            conn = http.client.HTTPConnection(self.engine.host, self.engine.port,
                                                              timeout=5)
                        conn.request("POST", "/worker_status/", body=body,
                                     headers={"Content-Type": "application/json"})
                        conn.getresponse().read()
                        break
                    except (OSError, http.client.HTTPException):
                        conn = None
            dt = time.time() - t0
            self.stop_ev.wait(max(0.0, self.report_s - dt))
        if conn is not None:
            conn.close()


class Client:
    """Open-loop load: requests at given times; each routes (polling while it waits) and then
    submits to the granted fake worker. Records wait times."""

    def __init__(self, engine, fleet, endpoint, cost=10.0, nthreads=8):
        self.engine, self.fleet, self.endpoint, self.cost = engine, fleet, endpoint, cost
        self.lock = threading.Lock()
        self.pending = []
        self.results = []  # (t_arrival, t_granted, worker_id, wait_at_worker)
        self.errors = []
        self.last_request = 0.0
        self.cv = threading.Condition(self.lock)
        self.stop_ev = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(nthreads)]
        for t in self.threads:
            t.start()

    def add(self, t):
        with self.cv:
            self.pending.append(t)
            self.cv.notify()

    def _run(self):
        self.conns = getattr(self, "conns", [])
        conn = None
        while not self.stop_ev.is_set():
            with self.cv:
                while not self.pending and not self.stop_ev.is_set():
                    self.cv.wait(0.1)
                if self.stop_ev.is_set():
                    break
                t_arr = self.pending.pop(0)
            idx = 0
            while not self.stop_ev.is_set():
                body = {"endpoint": self.endpoint, "api_key": self.engine.key, "cost": self.cost}
                if idx:
                    body["request_idx"] = idx
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(self.engine.host, self.engine.port,
                                                          timeout=10)
                    conn.request("POST", "/route/", body=json.dumps(body))
                    r = conn.getresponse()
                    data = json.loads(r.read())
                except (OSError, http.client.HTTPException, ValueError) as ex:
                    conn = None
                    with self.lock:
                        self.errors.append(repr(ex))
                    time.sleep(0.05)
                    continue
                with self.lock:
                    self.last_request = time.time()
                if r.status != 200:
                    with self.lock:
                        self.errors.append((r.status, data))
                    break
                if "url" in data:
                    w = self.fleet.by_url.get(data["url"])
                    if w is None:
                        with self.lock:
                            self.errors.append(("unknown url", data["url"]))
                        break
                    fin = w.submit(self.cost, data["request_idx"])
                    now = time.time()
                    # wait at the worker before service starts (FIFO)
                    wq = max(0.0, fin - self.cost / w.perf - now) if fin else 0.0
                    with self.lock:
                        self.results.append((t_arr, now, w.id, wq))
                    break
                idx = data["request_idx"]
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def outstanding(self):
        with self.lock:
            return len(self.pending)

    def close(self):
        self.stop_ev.set()
        with self.cv:
            self.cv.notify_all()
        for t in self.threads:
            t.join(timeout=5)


def drive(client, rate_fn, duration, step=0.01):
    """Issue requests with deterministic spacing following rate_fn(t) (requests/s)."""
    t0 = time.time()
    acc = 0.0
    last = t0
    while True:
        now = time.time()
        t = now - t0
        if t >= duration:
            break
        acc += rate_fn(t) * (now - last)
        last = now
        while acc >= 1.0:
            client.add(now)
            acc -= 1.0
        time.sleep(step)
