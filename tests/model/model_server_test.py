"""Integration tests for `sgpu-model serve` (TGI + OpenAI APIs, streaming,
cancellation, limits, metrics) and its command-line tools, against the real
binary on ephemeral ports.  Uses the embedded tiny model (and init-tiny files).
Run: SGPU_BIN=/abs/bin /usr/bin/python3 tests/model/model_server_test.py -v
"""
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import unittest

BIN = os.environ.get("SGPU_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "bin"))
MODEL = os.path.join(BIN, "sgpu-model")


class Server:
    """A running sgpu-model serve; port read from its model_loaded log line."""

    def __init__(self, *args, env=None):
        self.lines = []
        self.proc = subprocess.Popen(
            [MODEL, "serve", "--port", "0", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.port = None
        deadline = time.time() + 120  # start-up on a loaded machine
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if "event=model_loaded" in line:
                self.port = int(re.search(r"port=(\d+)", line).group(1))
                break
        if self.port is None:
            self.stop()
            raise RuntimeError("server did not start: " + "".join(self.lines))
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "drain"):
            self.drain.join(5)
        self.proc.stderr.close()

    def conn(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, raw=None):
        c = self.conn()
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        c.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        payload = r.read()
        c.close()
        return r.status, r.getheader("Content-Type"), payload

    def json(self, method, path, body=None, raw=None):
        st, _, payload = self.request(method, path, body, raw)
        return st, json.loads(payload)

    def sse(self, path, body):
        """POST and return the list of SSE data payloads (strings)."""
        c = self.conn()
        c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        assert r.status == 200, (r.status, r.read())
        assert r.getheader("Content-Type").startswith("text/event-stream")
        events = []
        for raw in r:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("data: "):
                events.append(line[6:])
            else:
                assert line == "", line
        c.close()
        return events

    def metric(self, name):
        st, _, payload = self.request("GET", "/metrics")
        for line in payload.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return None


class ServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server("--threads", "2", "--max-batch", "4", "--load-log-msg", "sgpu model ready")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def test_health_and_load_message(self):
        st, body = self.s.json("GET", "/health")
        self.assertEqual(st, 200)
        self.assertEqual(body["status"], "ok")
        loaded = [l for l in self.s.lines if "event=model_loaded" in l]
        self.assertEqual(len(loaded), 1)
        self.assertIn("sgpu model ready", loaded[0])

    def test_info_and_models(self):
        st, info = self.s.json("GET", "/info")
        self.assertEqual(st, 200)
        self.assertEqual(info["model_id"], "sgpu-tiny")
        self.assertEqual(info["max_total_tokens"], 1024)
        self.assertEqual(info["model_dtype"], "F32")
        st, models = self.s.json("GET", "/v1/models")
        self.assertEqual(st, 200)
        self.assertEqual(models["object"], "list")
        self.assertEqual(models["data"][0]["id"], "sgpu-tiny")

    def test_tgi_generate_shape_and_determinism(self):
        body = {"inputs": "hello world", "parameters": {"max_new_tokens": 12, "details": True}}
        st, r = self.s.json("POST", "/generate", body)
        self.assertEqual(st, 200)
        self.assertIsInstance(r["generated_text"], str)
        d = r["details"]
        self.assertIn(d["finish_reason"], ("length", "eos_token"))
        self.assertEqual(d["generated_tokens"], len(d["tokens"]))
        self.assertIsNone(d["seed"])
        for t in d["tokens"]:
            self.assertEqual(set(t), {"id", "text", "logprob", "special"})
            self.assertLessEqual(t["logprob"], 0.0)
        if d["finish_reason"] == "length":
            self.assertEqual(d["generated_tokens"], 12)
        st, r2 = self.s.json("POST", "/generate", body)
        self.assertEqual(r2, r)  # greedy is deterministic
        st, r3 = self.s.json("POST", "/generate", {"inputs": "hello world"})
        self.assertEqual(set(r3), {"generated_text"})
        st, r4 = self.s.json("POST", "/generate", {"inputs": "hello world", "parameters": {
            "max_new_tokens": 12, "return_full_text": True}})
        self.assertEqual(r4["generated_text"], "hello world" + r["generated_text"])

    def test_tgi_sampling_seed(self):
        p = {"max_new_tokens": 16, "do_sample": True, "temperature": 1.5, "seed": 7, "details": True}
        st, a = self.s.json("POST", "/generate", {"inputs": "the model", "parameters": p})
        st, b = self.s.json("POST", "/generate", {"inputs": "the model", "parameters": p})
        self.assertEqual(a, b)
        self.assertEqual(a["details"]["seed"], 7)
        p["seed"] = 8
        st, c = self.s.json("POST", "/generate", {"inputs": "the model", "parameters": p})
        self.assertNotEqual([t["id"] for t in a["details"]["tokens"]],
                            [t["id"] for t in c["details"]["tokens"]])

    def test_tgi_stream(self):
        body = {"inputs": "hello", "parameters": {"max_new_tokens": 10}}
        events = [json.loads(e) for e in self.s.sse("/generate_stream", body)]
        self.assertGreaterEqual(len(events), 1)
        for e in events[:-1]:
            self.assertEqual(set(e), {"token", "generated_text", "details"})
            self.assertIsNone(e["generated_text"])
            self.assertIsNone(e["details"])
            self.assertEqual(set(e["token"]), {"id", "text", "logprob", "special"})
        last = events[-1]
        self.assertEqual(last["generated_text"], "".join(e["token"]["text"] for e in events))
        self.assertEqual(last["details"]["generated_tokens"], len(events))
        st, plain = self.s.json("POST", "/generate", body)
        self.assertEqual(plain["generated_text"], last["generated_text"])
        # TGI's root route with "stream": false
        st, root = self.s.json("POST", "/", {"inputs": "hello", "parameters": {"max_new_tokens": 10}})
        self.assertEqual(root, plain)

    def test_stop_sequences(self):
        st, r = self.s.json("POST", "/generate", {"inputs": "hello", "parameters": {
            "max_new_tokens": 40, "details": True}})
        text = r["generated_text"]
        if len(text) < 6:
            self.skipTest("generation too short")
        stop = text[3:5]
        first = text.find(stop)
        st, r2 = self.s.json("POST", "/generate", {"inputs": "hello", "parameters": {
            "max_new_tokens": 40, "stop": [stop], "details": True}})
        self.assertEqual(r2["details"]["finish_reason"], "stop_sequence")
        self.assertEqual(r2["generated_text"], text[:first + len(stop)])  # TGI keeps the stop text
        st, o = self.s.json("POST", "/v1/completions", {"prompt": "hello", "max_tokens": 40,
                                                        "temperature": 0, "stop": stop})
        self.assertEqual(o["choices"][0]["finish_reason"], "stop")
        self.assertEqual(o["choices"][0]["text"], text[:first])  # OpenAI drops it
        ev = self.s.sse("/v1/completions", {"prompt": "hello", "max_tokens": 40, "temperature": 0,
                                            "stop": stop, "stream": True})
        self.assertEqual("".join(json.loads(e)["choices"][0]["text"] for e in ev[:-1]), text[:first])

    def test_openai_completions(self):
        body = {"model": "x", "prompt": "hello world", "max_tokens": 9, "temperature": 0}
        st, r = self.s.json("POST", "/v1/completions", body)
        self.assertEqual(st, 200)
        self.assertEqual(r["object"], "text_completion")
        self.assertTrue(r["id"].startswith("cmpl-"))
        ch = r["choices"][0]
        self.assertEqual(ch["index"], 0)
        self.assertIn(ch["finish_reason"], ("length", "stop"))
        u = r["usage"]
        self.assertEqual(u["total_tokens"], u["prompt_tokens"] + u["completion_tokens"])
        self.assertEqual(u["prompt_tokens"], 3)  # <s> ▁hello ▁world
        # greedy text equals TGI's greedy text for the same prompt
        st, t = self.s.json("POST", "/generate", {"inputs": "hello world",
                                                   "parameters": {"max_new_tokens": 9}})
        self.assertEqual(ch["text"], t["generated_text"])
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        ev = self.s.sse("/v1/completions", body)
        self.assertEqual(ev[-1], "[DONE]")
        chunks = [json.loads(e) for e in ev[:-1]]
        self.assertEqual(chunks[-1]["choices"], [])
        self.assertEqual(chunks[-1]["usage"], u)
        text = "".join(c["choices"][0]["text"] for c in chunks[:-1])
        self.assertEqual(text, ch["text"])
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], ch["finish_reason"])
        # token-id prompt and echo
        st, r2 = self.s.json("POST", "/v1/completions", {"prompt": [1, 552, 558], "max_tokens": 9,
                                                          "temperature": 0, "echo": True})
        self.assertEqual(r2["choices"][0]["text"], "hello world" + ch["text"])

    def test_openai_chat(self):
        body = {"model": "x", "messages": [{"role": "system", "content": "be brief"},
                                           {"role": "user", "content": "hi"}],
                "max_tokens": 7, "temperature": 0}
        st, r = self.s.json("POST", "/v1/chat/completions", body)
        self.assertEqual(st, 200)
        self.assertEqual(r["object"], "chat.completion")
        msg = r["choices"][0]["message"]
        self.assertEqual(msg["role"], "assistant")
        self.assertIsInstance(msg["content"], str)
        body["stream"] = True
        ev = self.s.sse("/v1/chat/completions", body)
        self.assertEqual(ev[-1], "[DONE]")
        chunks = [json.loads(e) for e in ev[:-1]]
        self.assertEqual(chunks[0]["object"], "chat.completion.chunk")
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        self.assertEqual(text, msg["content"])
        self.assertIsNotNone(chunks[-1]["choices"][0]["finish_reason"])

    def test_metrics(self):
        before = self.s.metric("sgpu_model_generated_tokens_total")
        self.s.json("POST", "/generate", {"inputs": "a", "parameters": {"max_new_tokens": 5}})
        after = self.s.metric("sgpu_model_generated_tokens_total")
        self.assertGreaterEqual(after - before, 1)
        st, ctype, payload = self.s.request("GET", "/metrics")
        text = payload.decode()
        self.assertTrue(ctype.startswith("text/plain"))
        for name in ("sgpu_model_prompt_tokens_total", "sgpu_model_queue_depth",
                     "sgpu_model_batch_size", "sgpu_model_kv_cache_bytes",
                     "sgpu_model_time_to_first_token_seconds_bucket",
                     "sgpu_model_time_per_output_token_seconds_count"):
            self.assertIn(name, text)

    def test_validation_errors(self):
        s = self.s
        st, r = s.json("POST", "/generate", raw="{not json")
        self.assertEqual(st, 400)
        self.assertIn("error", r)
        st, r = s.json("POST", "/generate", {"parameters": {}})
        self.assertEqual((st, r["error_type"]), (422, "validation"))
        st, r = s.json("POST", "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 5000}})
        self.assertEqual(st, 422)
        self.assertIn("max_new_tokens", r["error"])
        st, r = s.json("POST", "/generate", {"inputs": "x", "parameters": {"temperature": 0}})
        self.assertEqual(st, 422)
        st, r = s.json("POST", "/generate", {"inputs": "hello " * 1100})
        self.assertEqual(st, 422)
        self.assertIn("inputs", r["error"])
        st, r = s.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 5000})
        self.assertEqual((st, r["error"]["code"]), (400, "context_length_exceeded"))
        st, r = s.json("POST", "/v1/completions", {"prompt": "x", "n": 2})
        self.assertEqual(st, 400)
        st, r = s.json("POST", "/v1/chat/completions", {"messages": []})
        self.assertEqual(st, 400)
        st, r = s.json("GET", "/generate")
        self.assertEqual(st, 405)
        st, r = s.json("GET", "/nope")
        self.assertEqual(st, 404)
        # body over the limit (1 MiB): read, then refused (model_api_compat_test.py has more)
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" +
                     b"x" * 2000000)
        self.assertIn(b" 413 ", sock.recv(4096).split(b"\r\n")[0] + b" ")
        sock.close()
        # the server is still fine
        st, r = s.json("POST", "/generate", {"inputs": "ok", "parameters": {"max_new_tokens": 2}})
        self.assertEqual(st, 200)

    def test_concurrent_greedy_equals_sequential(self):
        prompts = ["hello", "the model server", "GPU data time", "x", "who was there", "world"]
        body = lambda p: {"inputs": p, "parameters": {"max_new_tokens": 24, "details": True}}
        seq = {}
        for p in prompts:
            st, r = self.s.json("POST", "/generate", body(p))
            seq[p] = [t["id"] for t in r["details"]["tokens"]]
        got = {}

        def run(p):
            st, r = self.s.json("POST", "/generate", body(p))
            got[p] = [t["id"] for t in r["details"]["tokens"]]
        ts = [threading.Thread(target=run, args=(p,)) for p in prompts]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(got, seq)

class LimitsTest(unittest.TestCase):
    """Queue limit (429) and small context on a slower generated model."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.path = os.path.join(cls.tmp.name, "m.gguf")
        subprocess.run([MODEL, "init-tiny", cls.path, "--dim", "256", "--layers", "6", "--ff", "512",
                        "--ctx", "4096", "--type", "q8_0", "--seed", "3"], check=True)
        cls.s = Server("--model", cls.path, "--threads", "1", "--max-batch", "1", "--max-queue", "1",
                       "--ctx", "3000")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        cls.tmp.cleanup()

    def open_stream(self, n):
        c = self.s.conn()
        c.request("POST", "/generate_stream",
                  body=json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": n, "ignore_eos": True}}),
                  headers={"Content-Type": "application/json"})
        return c

    def test_queue_full_429(self):
        st, info = self.s.json("GET", "/info")
        self.assertEqual(info["max_total_tokens"], 3000)
        self.assertEqual(info["model_dtype"], "Q8_0")
        c1 = self.open_stream(2900)
        r1 = c1.getresponse()
        r1.readline()  # running: occupies the only slot
        c2 = self.open_stream(2900)  # waits in the queue (limit 1)
        deadline = time.time() + 120
        while self.s.metric("sgpu_model_queue_depth") != 1 and time.time() < deadline:
            time.sleep(0.02)
        st, r = self.s.json("POST", "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 2}})
        self.assertEqual(st, 429)
        self.assertEqual(r["error_type"], "overloaded")
        st, r = self.s.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
        self.assertEqual(st, 429)
        self.assertEqual(r["error"]["code"], "queue_full")
        c1.close()
        c2.close()
        # both cancelled; the server frees the slot and serves again
        deadline = time.time() + 120
        while time.time() < deadline:
            st, r = self.s.json("POST", "/generate", {"inputs": "x", "parameters": {"max_new_tokens": 2}})
            if st == 200:
                break
            time.sleep(0.05)
        self.assertEqual(st, 200)
        self.assertEqual(self.s.metric("sgpu_model_batch_size"), 0)

    def wait_metric(self, name, target, deadline_s=120):
        end = time.time() + deadline_s
        v = None
        while time.time() < end:
            v = self.s.metric(name)
            if v is not None and v >= target:
                return v
            time.sleep(0.05)
        return v

    def test_cancel_streaming(self):
        before = self.s.metric("sgpu_model_cancelled_total")
        c = self.s.conn()
        c.request("POST", "/generate_stream",
                  body=json.dumps({"inputs": "hello",
                                   "parameters": {"max_new_tokens": 2900, "ignore_eos": True}}),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        first = r.readline()
        self.assertTrue(first.startswith(b"data: "))
        r.close()
        c.close()
        got = self.wait_metric("sgpu_model_cancelled_total", before + 1)
        self.assertEqual(got, before + 1)
        self.assertTrue(any("event=client_gone" in l for l in self.s.lines))

    def test_cancel_before_reply(self):
        before = self.s.metric("sgpu_model_cancelled_total")
        body = json.dumps({"inputs": "hello",
                           "parameters": {"max_new_tokens": 2900, "ignore_eos": True}}).encode()
        sock = socket.create_connection(("127.0.0.1", self.s.port))
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(0.05)
        sock.close()
        got = self.wait_metric("sgpu_model_cancelled_total", before + 1)
        self.assertEqual(got, before + 1)
        st, r = self.s.json("GET", "/health")
        self.assertEqual(st, 200)


class CliTest(unittest.TestCase):
    def run_model(self, *args, check=True):
        return subprocess.run([MODEL, *args], capture_output=True, text=True, check=check, timeout=120)

    def test_init_tiny_is_embedded_default(self):
        with tempfile.TemporaryDirectory() as d:
            a, b, c = (os.path.join(d, n) for n in ("a.gguf", "b.gguf", "c.gguf"))
            self.run_model("init-tiny", a)
            self.run_model("init-tiny", b, "--seed", "0")
            self.run_model("init-tiny", c, "--seed", "1")
            with open(a, "rb") as fa, open(b, "rb") as fb, open(c, "rb") as fc:
                da, db, dc = fa.read(), fb.read(), fc.read()
            self.assertEqual(da, db)
            self.assertNotEqual(da, dc)
            self.assertEqual(da[:4], b"GGUF")
            self.assertLess(len(da), 8 << 20)
            l1 = self.run_model("logits", "--model", a, "--tokens", "1,5,9").stdout
            l2 = self.run_model("logits", "--tokens", "1,5,9").stdout
            self.assertEqual(l1, l2)

    def test_logits_generate_tokenize(self):
        out = self.run_model("logits", "--tokens", "1,2,3,4").stdout.splitlines()
        self.assertEqual(len(out), 4)
        rows = [[float(x) for x in line.split(" ")] for line in out]
        self.assertTrue(all(len(r) == 614 for r in rows))
        ids = self.run_model("tokenize", "--text", "hello world").stdout.split()
        self.assertEqual(ids, ["552", "558"])
        toks = ",".join(["1"] + ids)
        gen = [int(x) for x in self.run_model("generate", "--tokens", toks, "--max-new-tokens", "8",
                                              "--ignore-eos").stdout.split()]
        self.assertEqual(len(gen), 8)
        # greedy first token = argmax of the last logits row
        last = [float(x) for x in self.run_model("logits", "--tokens", toks).stdout.splitlines()[-1].split()]
        self.assertEqual(gen[0], max(range(len(last)), key=last.__getitem__))
        # and the server generates the same ids
        s = Server("--threads", "1")
        try:
            st, r = s.json("POST", "/generate", {"inputs": "hello world", "parameters": {
                "max_new_tokens": 8, "details": True}})
        finally:
            s.stop()
        self.assertEqual([t["id"] for t in r["details"]["tokens"]][:len(gen)], gen[:len(r["details"]["tokens"])])

    def test_bpe_q8_model(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "b.gguf")
            self.run_model("init-tiny", p, "--tokenizer", "bpe", "--type", "q8_0")
            ids = self.run_model("tokenize", "--model", p, "--text", "hello world").stdout.split()
            self.assertEqual(len(ids), 2)
            gen = self.run_model("generate", "--model", p, "--tokens", ids[0] + "," + ids[1],
                                 "--max-new-tokens", "5", "--ignore-eos").stdout.split()
            self.assertEqual(len(gen), 5)

    def test_fatal_errors(self):
        r = self.run_model("serve", "--port", "0", "--model", "/nonexistent.gguf", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("event=fatal", r.stderr)
        self.assertNotIn("event=model_loaded", r.stderr)
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "t.gguf")
            self.run_model("init-tiny", p)
            with open(p, "r+b") as f:
                f.truncate(os.path.getsize(p) - 1000)
            r = self.run_model("serve", "--port", "0", "--model", p, check=False)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("event=fatal", r.stderr)
            self.assertIn("truncated", r.stderr)
            r = self.run_model("logits", "--model", p, "--tokens", "1", check=False)
            self.assertNotEqual(r.returncode, 0)
        r = self.run_model("serve", "--port", "0", "--threads", "zero", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("event=fatal", r.stderr)

    def test_health_503_while_loading(self):
        env = dict(os.environ, SGPU_MODEL_TEST_LOAD_DELAY_MS="1500")
        p = subprocess.Popen([MODEL, "serve", "--port", "0"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env)
        try:
            port = None
            for line in p.stderr:
                if "event=listening" in line:
                    port = int(re.search(r"port=(\d+)", line).group(1))
                    break
            self.assertIsNotNone(port)
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/health")
            r = c.getresponse()
            self.assertEqual((r.status, json.loads(r.read())["status"]), (503, "loading"))
            c.request("POST", "/generate", body=json.dumps({"inputs": "x"}))
            r = c.getresponse()
            self.assertEqual(r.status, 503)
            self.assertEqual(json.loads(r.read())["error_type"], "unhealthy")
            c.close()
            for line in p.stderr:
                if "event=model_loaded" in line:
                    break
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200)
            c.close()
        finally:
            p.terminate()
            p.wait(10)
            p.stderr.close()

    def test_env_options(self):
        env = dict(os.environ, SGPU_MODEL_PORT="0")
        s = Server(env=env)
        try:
            st, r = s.json("GET", "/health")
            self.assertEqual(st, 200)
        finally:
            s.stop()


if __name__ == "__main__":
    unittest.main()
