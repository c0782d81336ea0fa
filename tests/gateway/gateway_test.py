"""sgpu-gateway against real processes on loopback: sgpu-engine (local provider) -> sgpu-launch
-> sgpu-worker (TGI + OpenAI handlers) in front of bin/fixtures/stub_model, and sgpu-gateway in
front of the engine.  Clients speak plain OpenAI / TGI HTTP with the endpoint's api_key as the
bearer key; nothing here knows about /route/ or grants.

Covered: models list/retrieve, chat and completions (plain and SSE), TGI /generate,
/generate_stream and / via /endpoints/NAME/, generic pass-through, error shapes (401, 404, 400,
405, 503 pass-through), scale from zero, re-route when the worker is dead before the first byte
and when it answers 5xx, no retry after the first byte, a client abort freeing the worker, and
16 concurrent streams.  No timed assertions: every wait is on an event with a generous deadline.
"""
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gwlib as gl  # noqa: E402

el = gl.el
NEED = ["sgpu-engine", "sgpu-worker", "sgpu-launch", "sgpu-gateway", "fixtures/stub_model"]


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().split(b"\0")[0].decode()
    except OSError:
        return ""


def worker_metrics(url):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        out = {}
        for ln in r.read().decode().splitlines():
            if ln and not ln.startswith("#"):
                k, v = ln.rsplit(" ", 1)
                out[k] = float(v)
        return out
    finally:
        c.close()


class GatewayTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for n in NEED:
            if not os.access(el.binpath(n), os.X_OK):
                raise unittest.SkipTest("missing " + n)
        cls.eng = el.Engine("--drain-grace-s", "1", "--scale-down-delay-s", "30", tick_ms=100)
        try:
            launch = gl.stub_launch(cls.eng.dir)
            # min_load 1: one worker stays active (not parked) for the tests that inspect it
            _, cls.key = gl.create_endpoint(cls.eng, "main", min_load=1)
            cls.eng.create_group("main", "local", launch)
            _, cls.key_zero = gl.create_endpoint(cls.eng, "zero", cold_workers=0)
            cls.eng.create_group("zero", "local", launch)
            _, cls.key_victim = gl.create_endpoint(cls.eng, "victim", min_load=1)
            # never gets a worker: requests wait in the engine's queue
            _, cls.key_none = gl.create_endpoint(cls.eng, "none", cold_workers=0, max_workers=0)
            cls.eng.create_group("victim", "local", launch)
            cls.gw = gl.Gateway(cls.eng.url, "--route-timeout", "90", "--max-attempts", "60",
                                workdir=cls.eng.dir)
            el.wait_for(lambda: all(any(w["status"] == "idle" for w in cls.eng.workers(n))
                                    for n in ("main", "victim")), timeout=90,
                        what="workers ready")
        except Exception:
            cls.eng.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.close()
        finally:
            cls.eng.close()

    # ---- helpers ----
    def chat(self, key=None, model="main", **kw):
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
        body.update(kw)
        return self.gw.json("POST", "/v1/chat/completions", body, key=key or self.key)

    def assert_openai_error(self, st, body, status, code=None):
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, body)
        err = body.get("error")
        self.assertIsInstance(err, dict, body)
        for k in ("message", "type", "param", "code"):
            self.assertIn(k, err)
        self.assertTrue(err["message"])
        if code:
            self.assertEqual(err["code"], code)

    def open_stream(self, path, body, key=None):
        c = self.gw.conn(timeout=120)
        c.request("POST", path, body=json.dumps(body),
                  headers={"Authorization": "Bearer " + (key or self.key),
                           "Content-Type": "application/json"})
        r = c.getresponse()
        return c, r

    def worker_of(self, name):
        """The endpoint's idle worker (waits: a killed one is restarted by its launcher)."""
        def idle():
            ws = [w for w in self.eng.workers(name) if w["status"] == "idle"]
            if ws and "url" in ws[0]:
                try:
                    worker_metrics(ws[0]["url"])
                    return ws[0]
                except OSError:
                    return None
            return None
        return el.wait_for(idle, timeout=90, what="an idle worker of " + name, interval=0.2)

    # ---- models ----
    def test_models_list_and_retrieve(self):
        st, r = self.gw.json("GET", "/v1/models", key=self.key)
        self.assertEqual(st, 200, r)
        self.assertEqual(r["object"], "list")
        self.assertEqual([m["id"] for m in r["data"]], ["main"])  # only this key's endpoint
        self.assertEqual(r["data"][0]["object"], "model")
        self.assertIsInstance(r["data"][0]["created"], int)
        st, r = self.gw.json("GET", "/v1/models/main", key=self.key)
        self.assertEqual(st, 200, r)
        self.assertEqual(r["id"], "main")
        st, r = self.gw.json("GET", "/v1/models/zero", key=self.key)  # another endpoint's
        self.assert_openai_error(st, r, 404, "model_not_found")
        st, r = self.gw.json("GET", "/v1/models", key="not-a-key")
        self.assert_openai_error(st, r, 401, "invalid_api_key")
        # the admin key sees every endpoint
        st, r = self.gw.json("GET", "/v1/models", key=self.eng.key)
        self.assertEqual(st, 200, r)
        self.assertEqual(sorted(m["id"] for m in r["data"]), ["main", "none", "victim", "zero"])

    # ---- OpenAI ----
    def test_chat_and_completions(self):
        st, r = self.chat(max_tokens=4)
        self.assertEqual(st, 200, r)
        self.assertEqual(r["object"], "chat.completion")
        self.assertEqual(r["choices"][0]["message"]["content"], "tok0 tok1 tok2 tok3 ")
        st, r = self.gw.json("POST", "/v1/completions",
                             {"model": "main", "prompt": "hi", "max_tokens": 3}, key=self.key)
        self.assertEqual(st, 200, r)
        # the same through the path prefix
        st, r = self.gw.json("POST", "/endpoints/main/v1/chat/completions",
                             {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
                             key=self.key)
        self.assertEqual(st, 200, r)

    def test_chat_streamed_is_sse(self):
        c, r = self.open_stream("/v1/chat/completions",
                                {"model": "main", "stream": True, "max_tokens": 5,
                                 "messages": [{"role": "user", "content": "hello"}]})
        try:
            self.assertEqual(r.status, 200)
            self.assertTrue(r.getheader("Content-Type").startswith("text/event-stream"))
            events = list(gl.sse_events(r))
        finally:
            c.close()
        self.assertEqual(events[-1], "[DONE]")
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                       for e in events[:-1])
        self.assertEqual(text, "tok0 tok1 tok2 tok3 tok4 ")

    def test_stream_chunks_arrive_one_by_one(self):
        # handshake: the stub sends chunk K+1 only after the client acknowledged chunk K, so
        # the stream can only finish if every chunk went through the gateway unbuffered
        w = self.worker_of("main")
        m = re.findall(r"local_instance_start worker=%d pid=\d+ worker_port=\d+ model_port=(\d+)"
                       % w["id"], self.eng.logtext())
        self.assertTrue(m, "model port of worker %d" % w["id"])
        stub = http.client.HTTPConnection("127.0.0.1", int(m[-1]), timeout=30)
        c, r = self.open_stream("/endpoints/main/generate_stream",
                                {"inputs": "x", "parameters": {"max_new_tokens": 4},
                                 "handshake": "hs1"})
        try:
            self.assertEqual(r.status, 200)
            n = 0
            for ev in gl.sse_events(r):
                if json.loads(ev).get("generated_text") is not None:
                    n += 1
                    break  # the last one: the stub has finished the request
                stub.request("GET", "/ack?id=hs1&n=%d" % n)
                ack = stub.getresponse()
                ack.read()
                self.assertEqual(ack.status, 200)
                n += 1
            self.assertEqual(n, 4)
        finally:
            c.close()
            stub.close()

    # ---- TGI ----
    def test_tgi_routes_via_prefix(self):
        st, r = self.gw.json("POST", "/endpoints/main/generate",
                             {"inputs": "hi", "parameters": {"max_new_tokens": 3}}, key=self.key)
        self.assertEqual(st, 200, r)
        self.assertEqual(r["generated_text"], "tok0 tok1 tok2 ")
        c, resp = self.open_stream("/endpoints/main/generate_stream",
                                   {"inputs": "hi", "parameters": {"max_new_tokens": 3}})
        try:
            self.assertEqual(resp.status, 200)
            self.assertTrue(resp.getheader("Content-Type").startswith("text/event-stream"))
            toks = [json.loads(e)["token"]["text"] for e in gl.sse_events(resp)]
        finally:
            c.close()
        self.assertEqual(toks, ["tok0 ", "tok1 ", "tok2 "])
        # TGI's `/` (what HF's inference client posts to an endpoint URL): stream or not, and
        # `parameters` may be absent
        st, r = self.gw.json("POST", "/endpoints/main", {"inputs": "hi"}, key=self.key)
        self.assertEqual(st, 200, r)
        self.assertIsInstance(r, list, r)  # TGI's `/` wraps the answer in a list
        self.assertIn("generated_text", r[0])
        c, resp = self.open_stream("/endpoints/main/",
                                   {"inputs": "hi", "stream": True,
                                    "parameters": {"max_new_tokens": 2}})
        try:
            self.assertEqual(resp.status, 200)
            self.assertEqual(len(list(gl.sse_events(resp))), 2)
        finally:
            c.close()
        # /generate with the endpoint in `model`
        st, r = self.gw.json("POST", "/generate",
                             {"model": "main", "inputs": "a", "parameters": {"max_new_tokens": 1}},
                             key=self.key)
        self.assertEqual(st, 200, r)

    def test_generic_passthrough(self):
        body = {"prompt": "a cat", "width": 64, "nested": {"k": [1, 2.5, "x"]}}
        st, h, data = self.gw.request("POST", "/endpoints/main/custom/route?q=1", body,
                                      key=self.key)
        self.assertEqual(st, 200, data)
        self.assertEqual(json.loads(data), body)  # the stub echoes the payload byte for byte

    # ---- errors ----
    def test_errors_in_client_shape(self):
        st, r = self.chat(key="wrong-key", max_tokens=1)
        self.assert_openai_error(st, r, 401, "invalid_api_key")
        st, h, data = self.gw.request("POST", "/v1/chat/completions", {"model": "main"})
        self.assert_openai_error(st, json.loads(data), 401, "invalid_api_key")
        st, r = self.chat(model="no-such-model", max_tokens=1)
        self.assert_openai_error(st, r, 404, "model_not_found")
        st, r = self.chat(key=self.key_zero, max_tokens=1)  # a key of another endpoint
        self.assert_openai_error(st, r, 404, "model_not_found")
        st, r = self.chat(model="bad name/../x", max_tokens=1)
        self.assert_openai_error(st, r, 404, "model_not_found")
        st, r = self.gw.json("POST", "/v1/chat/completions", "{not json", key=self.key)
        self.assert_openai_error(st, r, 400)
        st, r = self.gw.json("POST", "/v1/chat/completions", {"messages": []}, key=self.key)
        self.assert_openai_error(st, r, 400, "model_required")
        st, r = self.gw.json("GET", "/v1/chat/completions", key=self.key)
        self.assert_openai_error(st, r, 405)
        # TGI shape
        st, r = self.gw.json("POST", "/endpoints/nope/generate", {"inputs": "x"}, key=self.key)
        self.assertEqual(st, 404, r)
        self.assertEqual(set(r), {"error", "error_type"})
        st, r = self.gw.json("POST", "/endpoints/main/generate", {"inputs": "x"}, key="bad")
        self.assertEqual(st, 401, r)
        self.assertEqual(set(r), {"error", "error_type"})
        # a worker-side 4xx is passed on (the stub's forced status)
        st, r = self.gw.json("POST", "/endpoints/main/generate",
                             {"inputs": "x", "parameters": {}, "status": 422}, key=self.key)
        self.assertEqual(st, 422, r)
        self.assertIn("error", r)
        st, _, data = self.gw.request("GET", "/health")
        self.assertEqual((st, json.loads(data)), (200, {"ok": True}))
        self.assertNotIn(self.key, self.gw.logtext())  # keys never logged

    def test_5xx_before_first_byte_is_rerouted_then_reported(self):
        os.makedirs(os.path.join(self.eng.dir, "g2"), exist_ok=True)
        gw = gl.Gateway(self.eng.url, "--max-attempts", "2",
                        workdir=os.path.join(self.eng.dir, "g2"))
        try:
            st, r = gw.json("POST", "/v1/chat/completions",
                            {"model": "main", "messages": [], "max_tokens": 1, "status": 500},
                            key=self.key)
            self.assert_openai_error(st, r, 500)
            m = gw.metrics()
            self.assertEqual(m['sgpu_gateway_reroutes_total{reason="status"}'], 1)
            self.assertEqual(m['sgpu_gateway_requests_total{endpoint="main",'
                               'outcome="upstream_error"}'], 1)
        finally:
            gw.close()

    def test_hostile_input(self):
        os.makedirs(os.path.join(self.eng.dir, "g3"), exist_ok=True)
        gw = gl.Gateway(self.eng.url, "--max-body", "4096", workdir=os.path.join(self.eng.dir, "g3"))
        try:
            st, h, data = gw.request("POST", "/v1/completions",
                                     json.dumps({"model": "main", "prompt": "x" * 10000}),
                                     key=self.key)
            self.assertEqual(st, 413)
            for body in ("[1, 2]", '"str"', "{\"a\": NaN", "\xff\xfe", "{" * 3000):
                st, h, data = gw.request("POST", "/v1/completions", body, key=self.key)
                self.assertEqual(st, 400, (body[:20], data))
                self.assertIn("error", json.loads(data))
            for auth in ("Basic abc", "Bearer ", "Bearer a\x01b", "Bearer " + "k" * 300):
                st, h, data = gw.request("POST", "/v1/completions", {"model": "main"},
                                         headers={"Authorization": auth})
                self.assertEqual(st, 401, auth[:20])
            st, h, data = gw.request("POST", "/v1/completions",
                                     {"model": "main", "prompt": "x", "max_tokens": 1e308 * 10},
                                     key=self.key)  # inf cost: capped, still served
            self.assertIn(st, (200, 400), data)
            st, _, data = gw.request("GET", "/health")
            self.assertEqual(st, 200)  # alive after all of it
        finally:
            gw.close()

    def test_wait_bounded_then_503(self):
        os.makedirs(os.path.join(self.eng.dir, "g4"), exist_ok=True)
        gw = gl.Gateway(self.eng.url, "--route-timeout", "1.5",
                        workdir=os.path.join(self.eng.dir, "g4"))
        try:
            st, h, data = gw.request("POST", "/v1/completions",
                                     {"model": "none", "prompt": "x", "max_tokens": 1},
                                     key=self.key_none)
            self.assert_openai_error(st, json.loads(data), 503, "no_capacity")
            self.assertEqual(h.get("retry-after"), "1")
            st, h, data = gw.request("POST", "/endpoints/none/generate", {"inputs": "x"},
                                     key=self.key_none)
            self.assertEqual(st, 503)
            self.assertEqual(json.loads(data)["error_type"], "overloaded")
        finally:
            gw.close()

    def test_client_gone_while_waiting_leaves_the_queue(self):
        def cancelled():  # labelled "-" when the engine had not answered for the endpoint yet
            return sum(v for k, v in self.gw.metrics().items()
                       if k.startswith("sgpu_gateway_requests_total") and
                       'outcome="cancelled"' in k)
        before = cancelled()
        c = self.gw.conn(timeout=30)
        c.request("POST", "/v1/completions",
                  body=json.dumps({"model": "none", "prompt": "x", "max_tokens": 1}),
                  headers={"Authorization": "Bearer " + self.key_none,
                           "Content-Type": "application/json"})
        el.wait_for(lambda: self.gw.metrics().get("sgpu_gateway_waiting") == 1, timeout=30,
                    what="the request waits for a grant")
        c.sock.shutdown(2)
        c.close()
        el.wait_for(lambda: self.gw.metrics().get("sgpu_gateway_waiting") == 0 and
                    self.gw.metrics().get("sgpu_gateway_inflight") == 0, timeout=30,
                    what="the gateway dropped the waiting request")
        el.wait_for(lambda: cancelled() > before, timeout=30, what="counted as cancelled")

    def test_engine_keyinfo(self):
        st, r = self.eng.call("GET", "/api/v0/keyinfo/", key=self.key)
        self.assertEqual(st, 200, r)
        self.assertEqual((r["admin"], [e["endpoint_name"] for e in r["endpoints"]]),
                         (False, ["main"]))
        st, r = self.eng.call("GET", "/api/v0/keyinfo/", key=self.eng.key)
        self.assertEqual((st, r["admin"], len(r["endpoints"])), (200, True, 4))
        for k in (False, "nope"):
            st, r = self.eng.call("GET", "/api/v0/keyinfo/", key=k)
            self.assertEqual((st, r["error"]), (401, "auth_error"))
        # never from the query string (it would end up in access logs)
        st, r = self.eng.call("GET", "/api/v0/keyinfo/?api_key=" + self.key, key=False)
        self.assertEqual(st, 401)
        st, r = self.eng.call("POST", "/api/v0/keyinfo/", {}, key=self.key)
        self.assertEqual(st, 405)

    @unittest.skipIf(not shutil.which("openssl"), "no openssl command")
    def test_tls_listener(self):
        d = os.path.join(self.eng.dir, "g5")
        os.makedirs(d, exist_ok=True)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1"],
                       check=True, capture_output=True)
        gw = gl.Gateway(self.eng.url, "--tls-cert", cert, "--tls-key", key, workdir=d)
        try:
            self.assertTrue(gw.url.startswith("https://"), gw.url)
            ctx = ssl.create_default_context(cafile=cert)
            ctx.check_hostname = False
            c = http.client.HTTPSConnection(gw.host, gw.port, context=ctx, timeout=60)
            c.request("POST", "/v1/chat/completions",
                      body=json.dumps({"model": "main", "max_tokens": 2, "messages": []}),
                      headers={"Authorization": "Bearer " + self.key,
                               "Content-Type": "application/json"})
            r = c.getresponse()
            body = json.loads(r.read())
            c.close()
            self.assertEqual(r.status, 200, body)
            self.assertEqual(body["choices"][0]["message"]["content"], "tok0 tok1 ")
        finally:
            gw.close()

    # ---- scaling / failures ----
    def test_scale_from_zero(self):
        self.assertEqual([w for w in self.eng.workers("zero")], [])
        st, r = self.gw.json("POST", "/v1/completions",
                             {"model": "zero", "prompt": "wake up", "max_tokens": 2},
                             key=self.key_zero, timeout=120)
        self.assertEqual(st, 200, r)
        self.assertEqual(len(self.eng.workers("zero")), 1)
        m = self.gw.metrics()
        self.assertGreaterEqual(m["sgpu_gateway_route_calls_total"], 1)

    def test_worker_killed_before_first_byte_rerouted(self):
        w = self.worker_of("victim")
        lpid = int(w["instance"].split(":")[1])
        wpids = [c for c in children(lpid) if cmdline(c).endswith("sgpu-worker")]
        self.assertEqual(len(wpids), 1)
        before = self.gw.metrics().get('sgpu_gateway_reroutes_total{reason="connect"}', 0)
        # the launcher is suspended so that it cannot restart the worker before the gateway has
        # seen the dead port; it is resumed once a re-route happened
        os.kill(lpid, signal.SIGSTOP)
        res = {}
        try:
            os.kill(wpids[0], signal.SIGKILL)
            t = threading.Thread(target=lambda: res.update(r=self.gw.json(
                "POST", "/endpoints/victim/generate",
                {"inputs": "again", "parameters": {"max_new_tokens": 2}}, key=self.key_victim,
                timeout=180)))
            t.start()
            el.wait_for(lambda: self.gw.metrics().get(
                'sgpu_gateway_reroutes_total{reason="connect"}', 0) > before, timeout=60,
                what="a re-route after the connection failure")
        finally:
            os.kill(lpid, signal.SIGCONT)
        t.join(180)
        st, r = res["r"]
        self.assertEqual(st, 200, r)
        self.assertEqual(r["generated_text"], "tok0 tok1 ")

    def test_no_retry_after_first_byte(self):
        w = self.worker_of("victim")
        lpid = int(w["instance"].split(":")[1])
        wpid = el.wait_for(lambda: [c for c in children(lpid)
                                    if cmdline(c).endswith("sgpu-worker")], what="worker pid")[0]
        before = self.gw.metrics()
        c, r = self.open_stream("/endpoints/victim/generate_stream",
                                {"inputs": "x", "parameters": {"max_new_tokens": 100000},
                                 "chunk_delay_ms": 20}, key=self.key_victim)
        events = []
        try:
            self.assertEqual(r.status, 200)
            it = gl.sse_events(r)
            events.append(json.loads(next(it)))
            os.kill(wpid, signal.SIGKILL)  # the worker dies in the middle of the answer
            try:
                for ev in it:
                    events.append(json.loads(ev))
            except (http.client.HTTPException, OSError):
                pass  # a truncated chunked body: what the client must see
        finally:
            c.close()
        self.assertTrue(all(e.get("generated_text") is None for e in events),
                        "the stream must not end cleanly")
        key = 'sgpu_gateway_requests_total{endpoint="victim",outcome="midstream"}'
        el.wait_for(lambda: self.gw.metrics().get(key, 0) > before.get(key, 0), timeout=30,
                    what="the gateway counted a mid-stream break")
        after = self.gw.metrics()
        for k in ('sgpu_gateway_reroutes_total{reason="connect"}',
                  'sgpu_gateway_reroutes_total{reason="status"}'):
            self.assertEqual(after.get(k, 0), before.get(k, 0), k)

    def test_client_abort_frees_worker(self):
        w = self.worker_of("main")
        m0 = worker_metrics(w["url"])
        key = 'sgpu_worker_requests_total{outcome="cancelled"}'
        c, r = self.open_stream("/v1/completions",
                                {"model": "main", "prompt": "p", "stream": True, "max_tokens": 5,
                                 "chunks": 100000, "chunk_delay_ms": 20})
        self.assertEqual(r.status, 200)
        ev = next(gl.sse_events(r))
        self.assertIn("choices", ev)
        c.sock.shutdown(2)
        c.close()
        el.wait_for(lambda: worker_metrics(w["url"]).get(key, 0) > m0.get(key, 0), timeout=60,
                    what="the worker cancelled the request")
        el.wait_for(lambda: worker_metrics(w["url"]).get("sgpu_worker_requests_working") == 0,
                    timeout=60, what="the worker has nothing in flight")
        el.wait_for(lambda: self.gw.metrics().get(
            'sgpu_gateway_requests_total{endpoint="main",outcome="cancelled"}', 0) >= 1,
            timeout=30, what="the gateway counted the cancel")

    def test_16_concurrent_streams(self):
        results = [None] * 16

        def one(i):
            c, r = self.open_stream("/v1/chat/completions",
                                    {"model": "main", "stream": True, "max_tokens": 6,
                                     "chunk_delay_ms": 20,
                                     "messages": [{"role": "user", "content": "n%d" % i}]})
            try:
                evs = list(gl.sse_events(r)) if r.status == 200 else []
                results[i] = (r.status, evs)
            finally:
                c.close()
        ts = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(180)
        for i, res in enumerate(results):
            self.assertIsNotNone(res, "stream %d did not finish" % i)
            st, evs = res
            self.assertEqual(st, 200)
            self.assertEqual(evs[-1], "[DONE]")
            self.assertEqual(len(evs), 7)


if __name__ == "__main__":
    unittest.main()
