"""The dashboard (/ui/) and its data (GET /api/v0/timeseries/) against a running engine with a
real workergroup: the `local` provider starts sgpu-launch (sgpu-worker in front of
bin/fixtures/stub_model), requests are routed, and

- the time-series API answers admin-only (Bearer header), validates its query, and has points;
- the static files come from the binary with a strict Content-Security-Policy;
- Debian's chromium, headless, logs in through the page's form (the key is typed into the
  page over the DevTools protocol, never put in a URL), and the rendered DOM lists the
  endpoint, its charts have points, the scaling timeline shows a decision with its reason and
  inputs, and the worker table has the worker.  A screenshot goes to the test's log directory
  ($SGPU_TEST_LOGDIR, set by scripts/run-tests.sh; else a temporary directory, printed).

Chromium is a test-only dependency (scripts/deps.sh); without it the browser test is skipped
with a message, the API checks still run.  The DevTools client below is a minimal WebSocket
client over the stdlib (RFC 6455 framing, client-masked text frames)."""
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enginelib as el  # noqa: E402

NEED = ["sgpu-engine", "sgpu-worker", "sgpu-launch", "fixtures/stub_model"]
EP = "dash"


def launch_spec():
    stub = el.binpath("fixtures/stub_model")
    return {
        "model_cmd": stub + " --port {model_port} --log \"$MODEL_LOG\"",
        "env": {"BACKEND": "tgi", "SGPU_BENCHMARK_RUNS": "1", "SGPU_REPORT_INTERVAL": "1",
                "SGPU_LOG_LEVEL": "info", "SGPU_DRAIN_TIMEOUT": "2"},
        "args": ["--stop-timeout", "5"],
    }


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: text frames, masked from the client."""

    def __init__(self, url, timeout=60):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % (u.path, u.hostname, u.port, key))
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("websocket handshake: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError("websocket handshake refused: %r" % head[:200])
        self.next_id = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send_text(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            hdr = bytes([0x81, 0x80 | n])
        elif n < 65536:
            hdr = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            hdr = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv_message(self):
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            op = b0 & 0x0F
            if op == 8:
                raise RuntimeError("websocket closed by the browser")
            if op in (9, 10):  # ping/pong: not sent by the browser in practice; ignored
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        self.send_text(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            m = json.loads(self.recv_message())
            if m.get("id") == mid:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})

    def evaluate(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError("evaluate %s: %s" % (expr[:60], r["exceptionDetails"]))
        return r["result"].get("value")

    def close(self):
        self.sock.close()


class Browser:
    """Headless chromium with a fresh profile and the DevTools protocol on an ephemeral port."""

    def __init__(self, logdir):
        self.profile = tempfile.mkdtemp(prefix="sgpu-ui-chromium-")
        self.log = open(os.path.join(logdir, "chromium.log"), "ab")
        self.proc = subprocess.Popen(
            [shutil.which("chromium"), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-dev-shm-usage", "--user-data-dir=" + self.profile,
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--window-size=1400,1800", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        portfile = os.path.join(self.profile, "DevToolsActivePort")
        def port_ready():
            if self.proc.poll() is not None:
                return True
            try:
                with open(portfile) as f:
                    return f.read().count("\n") >= 1
            except OSError:
                return False
        el.wait_for(port_ready, what="chromium DevTools port")
        if self.proc.poll() is not None:
            raise RuntimeError("chromium exited with %s (see chromium.log)" % self.proc.returncode)
        with open(portfile) as f:
            self.port = int(f.read().split("\n")[0])
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request("GET", "/json/list")
        targets = json.loads(c.getresponse().read())
        c.close()
        page = [t for t in targets if t.get("type") == "page"][0]
        self.ws = WebSocket(page["webSocketDebuggerUrl"])
        self.ws.call("Page.enable")
        self.ws.call("Runtime.enable")

    def close(self):
        try:
            self.ws.close()
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


# What the test reads from the rendered page (one round trip).
PROBE = r"""(() => {
  const ep = document.querySelector('#endpoints tr[data-endpoint="dash"]');
  const sec = document.querySelector('section.ep[data-endpoint="dash"]');
  const charts = sec ? [...sec.querySelectorAll('svg.chart')].map((s) => ({
    title: s.getAttribute('data-title'), points: Number(s.getAttribute('data-points')),
    lines: s.querySelectorAll('polyline').length})) : [];
  const events = sec ? [...sec.querySelectorAll('svg.timeline g.event')].map((g) => ({
    kind: g.getAttribute('data-kind'), title: g.querySelector('title').textContent})) : [];
  const workers = sec ? [...sec.querySelectorAll('table.workers tr')].slice(1).map(
    (tr) => [...tr.children].map((td) => td.textContent)) : [];
  return {href: location.href, loaded: Number(document.body.getAttribute('data-loaded') || 0),
    status: document.getElementById('status').textContent,
    login_hidden: document.getElementById('login').hidden, listed: !!ep,
    stored: sessionStorage.getItem('sgpu_admin_key'), charts, events, workers,
    errors: document.getElementById('errors').textContent};
})()"""


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for n in NEED:
            if not os.access(el.binpath(n), os.X_OK):
                raise unittest.SkipTest("missing " + n)
        cls.logdir = os.environ.get("SGPU_TEST_LOGDIR") or tempfile.mkdtemp(prefix="sgpu-ui-test-")
        cls.eng = el.Engine("--drain-grace-s", "1", "--stable-window-s", "5",
                            "--scale-down-delay-s", "2", tick_ms=100)
        cls.ep_key = None
        st, r = cls.eng.call("POST", "/api/v0/endptjobs/",
                             {"endpoint_name": EP, "min_load": 1, "cold_workers": 0,
                              "max_workers": 1, "target_util": 1.0, "cold_mult": 1,
                              "max_queue_time": 30, "target_queue_time": 5,
                              "inactivity_timeout": 0})
        assert st == 200, (st, r)
        cls.ep_key = r["api_key"]
        cls.eng.create_group(EP, "local", launch_spec())
        el.wait_for(lambda: any(w["status"] == "idle" for w in cls.eng.workers(EP)),
                    timeout=60, what="the real worker ready")
        # demand: a few routed requests (granted by the real worker)
        for _ in range(5):
            st, g = cls.eng.route(EP, cost=4)
            assert st == 200, (st, g)

    @classmethod
    def tearDownClass(cls):
        cls.eng.stop()
        cls.eng.close()

    def ts(self, query="?endpoint=" + EP, key=True):
        return self.eng.call("GET", "/api/v0/timeseries/" + query, key=key)

    def test_timeseries_api(self):
        el.wait_for(lambda: any(v > 0 for v in self.ts()[1]["routes_s"]), what="routes/s > 0")
        st, r = self.ts()
        self.assertEqual(st, 200, r)
        n = r["points"]
        self.assertGreater(n, 1)
        for col in ("t", "routes_s", "cost_s", "load", "ready_cap", "queue_time",
                    "target_queue_time", "qlen", "active_target", "inactive_target"):
            self.assertEqual(len(r[col]), n, col)
        self.assertEqual(set(r["workers"]), {"creating", "loading", "model_loading", "idle",
                                             "stopping", "stopped", "starting", "error",
                                             "unavailable", "destroying"})
        self.assertTrue(all(v == 5 for v in r["target_queue_time"]))
        self.assertTrue(any(v > 0 for v in r["ready_cap"]))
        self.assertTrue(any(v == 1 for v in r["workers"]["idle"]))
        self.assertEqual(r["t"], sorted(r["t"]))
        # since: only newer points
        st, r2 = self.ts("?endpoint=%s&since=%f" % (EP, r["t"][-2]))
        self.assertEqual(st, 200)
        self.assertGreaterEqual(r2["points"], 1)
        self.assertTrue(all(t > r["t"][-2] for t in r2["t"]))
        # auth: admin key in the header only
        self.assertEqual(self.ts(key=False)[0], 401)
        self.assertEqual(self.ts(key=self.ep_key)[0], 403)
        self.assertEqual(self.ts("?endpoint=%s&api_key=%s" % (EP, self.eng.key), key=False)[0],
                         401)
        # bad queries
        self.assertEqual(self.ts("")[0], 400)
        self.assertEqual(self.ts("?endpoint=nope")[0], 404)
        for bad in ("nan", "inf", "x", "1e999", ""):
            st, r = self.ts("?endpoint=%s&since=%s" % (EP, bad))
            self.assertEqual(st, 400, (bad, r))
        self.assertEqual(self.ts("?endpoint=%s%%00x" % EP)[0], 400)
        st, _ = self.eng.call("POST", "/api/v0/timeseries/?endpoint=" + EP, {})
        self.assertEqual(st, 405)

    def test_static_files(self):
        st, body, r = self.eng.raw("GET", "/ui/")
        self.assertEqual(st, 200)
        self.assertIn(b"<title>sgpu engine</title>", body)
        self.assertTrue(r.getheader("Content-Type").startswith("text/html"))
        csp = r.getheader("Content-Security-Policy")
        self.assertIn("default-src 'self'", csp)
        self.assertNotIn("unsafe-inline", csp)
        self.assertEqual(r.getheader("X-Content-Type-Options"), "nosniff")
        self.assertNotIn(self.eng.key.encode(), body)
        for path, ctype in (("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
            st, body, r = self.eng.raw("GET", path)
            self.assertEqual(st, 200, path)
            self.assertTrue(r.getheader("Content-Type").startswith(ctype), path)
            self.assertGreater(len(body), 100)
        with open(os.path.join(os.environ.get("SGPU_ROOT", "."), "src/engine/ui/app.js"),
                  "rb") as f:
            src = f.read()
        self.assertEqual(self.eng.raw("GET", "/ui/app.js")[1], src, "embedded copy is current")
        self.assertEqual(self.eng.raw("GET", "/ui/nope.js")[0], 404)
        self.assertEqual(self.eng.raw("GET", "/ui/../api_key")[0], 404)
        self.assertEqual(self.eng.raw("POST", "/ui/", b"{}")[0], 405)

    def test_browser(self):
        if not shutil.which("chromium"):
            self.skipTest("Debian's chromium is not installed (apt-get install chromium; "
                          "scripts/deps.sh installs it): the browser check did not run")
        b = Browser(self.logdir)
        try:
            ws = b.ws
            ws.call("Page.navigate", url=self.eng.url + "/ui/")
            el.wait_for(lambda: ws.evaluate("document.readyState") == "complete"
                        and ws.evaluate("!!document.getElementById('login')")
                        and not ws.evaluate("document.getElementById('login').hidden"),
                        what="the login form")
            # type the key into the form and submit, as an operator would
            ws.evaluate("document.getElementById('key').value = %s; "
                        "document.getElementById('login').requestSubmit(); true"
                        % json.dumps(self.eng.key))
            # more demand while the page polls, so the charts have a visible bump
            for _ in range(5):
                self.eng.route(EP, cost=4)
            state = {}

            def ready():
                state.update(ws.evaluate(PROBE))
                return (state["listed"] and state["loaded"] >= 2
                        and any(c["points"] > 1 and c["lines"] > 0 for c in state["charts"])
                        and any(e["kind"] == "decision" for e in state["events"])
                        and state["workers"])
            try:
                el.wait_for(ready, what="the dashboard rendered")
            finally:
                shot = ws.call("Page.captureScreenshot", format="png")
                path = os.path.join(self.logdir, "ui_test_dashboard.png")
                with open(path, "wb") as f:
                    f.write(base64.b64decode(shot["data"]))
                print("screenshot: %s" % path, file=sys.stderr)
            self.assertTrue(state["login_hidden"])
            self.assertEqual(state["stored"], self.eng.key)
            self.assertNotIn(self.eng.key, state["href"])
            titles = [c["title"] for c in state["charts"]]
            for t in ("demand (per second)", "capacity (cost/s)", "queue time (s)",
                      "queue length", "workers by state"):
                self.assertIn(t, titles)
            dec = [e for e in state["events"] if e["kind"] == "decision"][0]
            self.assertIn("targets active", dec["title"])  # the reason
            self.assertIn("active_cap", dec["title"])  # the inputs
            self.assertTrue(any(row[1].startswith("idle") for row in state["workers"]),
                            state["workers"])
            self.assertTrue(any(row[6].startswith("http://127.0.0.1:") for row in state["workers"]))
            # the key survives a reload (sessionStorage), and the page comes back without a prompt
            ws.call("Page.reload")
            el.wait_for(lambda: ws.evaluate("document.readyState") == "complete"
                        and ws.evaluate(PROBE)["loaded"] >= 1, what="reloaded dashboard")
            self.assertTrue(ws.evaluate("document.getElementById('login').hidden"))
            # a wrong key is dropped and the form comes back
            ws.evaluate("sessionStorage.setItem('sgpu_admin_key', 'wrong'); true")
            ws.call("Page.reload")
            el.wait_for(lambda: ws.evaluate("document.readyState") == "complete"
                        and not ws.evaluate("document.getElementById('login').hidden"),
                        what="login form after a refused key")
            self.assertIsNone(ws.evaluate("sessionStorage.getItem('sgpu_admin_key')"))
        finally:
            b.close()


if __name__ == "__main__":
    unittest.main()
