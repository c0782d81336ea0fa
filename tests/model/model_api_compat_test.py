"""Client compatibility of `sgpu-model serve` (what the official openai and
@huggingface/inference clients rely on): GET /v1/models/{id}, the OpenAI error
shape (with param) on every /v1 error, Retry-After on 429, completion ids
unique across restarts, 413 answered after the body is read, and every TGI
parameter either implemented (truncate, top_n_tokens, decoder_input_details
with prefill logprobs checked against the `logits` tool, typical_p,
frequency_penalty) or refused with TGI's 422.
Run: SGPU_BIN=/abs/bin /usr/bin/python3 tests/model/model_api_compat_test.py -v
"""
import http.client
import json
import math
import os
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_server_test import MODEL, Server  # noqa: E402


def raw_request(port, method, path, body, timeout=120):
    """Send the whole request, then read the reply (like Node's fetch)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    headers = dict((k.lower(), v) for k, v in r.getheaders())
    c.close()
    return r.status, headers, data


def oai_error(test, payload, code=None, param="absent"):
    e = json.loads(payload)["error"]
    test.assertEqual(set(e), {"message", "type", "param", "code"})
    test.assertTrue(e["message"])
    if code is not None:
        test.assertEqual(e["code"], code)
    if param != "absent":
        test.assertEqual(e["param"], param)
    return e


class CompatTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = Server("--threads", "2", "--max-batch", "4")

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()

    def test_model_retrieve(self):
        st, m = self.s.json("GET", "/v1/models/sgpu-tiny")
        self.assertEqual(st, 200)
        self.assertEqual((m["id"], m["object"], m["owned_by"]), ("sgpu-tiny", "model", "sgpu"))
        self.assertIn("created", m)
        st, m = self.s.json("GET", "/v1/models/sgpu%2Dtiny")  # percent-decoded
        self.assertEqual(st, 200)
        st, info = self.s.json("GET", "/info")  # SentencePiece vocabulary: no pre-tokenizer
        self.assertIsNone(info["tokenizer_pre"])
        self.assertEqual(st, 200)
        st, _, payload = self.s.request("GET", "/v1/models/gpt-4")
        self.assertEqual(st, 404)
        oai_error(self, payload, "model_not_found", "model")
        st, _, payload = self.s.request("POST", "/v1/models/sgpu-tiny", {})
        self.assertEqual(st, 405)
        oai_error(self, payload, "method_not_allowed")

    def test_v1_errors_in_openai_shape(self):
        st, _, payload = self.s.request("GET", "/v1/nope")
        self.assertEqual(st, 404)
        oai_error(self, payload)
        st, h, payload = raw_request(self.s.port, "GET", "/v1/completions", None)
        self.assertEqual(st, 405)
        self.assertEqual(h.get("allow"), "POST")
        oai_error(self, payload)
        st, _, payload = self.s.request("POST", "/v1/completions", raw="{bad")
        self.assertEqual(st, 400)
        oai_error(self, payload)
        # param names the field
        for body, param in (({"prompt": "x", "max_tokens": -1}, "max_tokens"),
                            ({"prompt": "x", "temperature": "hot"}, "temperature"),
                            ({"prompt": "x", "frequency_penalty": 3}, "frequency_penalty"),
                            ({"prompt": "x", "presence_penalty": -2.5}, "presence_penalty"),
                            ({"max_tokens": 2}, "prompt"),
                            ({"messages": [], "max_tokens": 2}, None)):
            path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
            st, _, payload = self.s.request("POST", path, body)
            self.assertEqual(st, 400, body)
            if param:
                oai_error(self, payload, param=param)
        # TGI routes keep TGI's shape
        st, r = self.s.json("GET", "/nope")
        self.assertEqual(st, 404)
        self.assertIsInstance(r["error"], str)

    def test_penalties_accepted(self):
        st, r = self.s.json("POST", "/v1/completions", {"prompt": "hello", "max_tokens": 4,
                                                        "temperature": 0, "frequency_penalty": 1.5,
                                                        "presence_penalty": 0.5})
        self.assertEqual(st, 200)
        self.assertEqual(r["usage"]["completion_tokens"], 4)

    def test_413_after_reading_the_body(self):
        big = b'{"prompt": "' + b"x" * (2 << 20) + b'"}'
        st, h, payload = raw_request(self.s.port, "POST", "/v1/completions", big)
        self.assertEqual(st, 413)
        oai_error(self, payload, "request_too_large")
        self.assertEqual(h.get("connection", "").lower(), "close")
        st, h, payload = raw_request(self.s.port, "POST", "/generate",
                                     b'{"inputs": "' + b"x" * (2 << 20) + b'"}')
        self.assertEqual(st, 413)
        self.assertEqual(json.loads(payload)["error_type"], "validation")
        # still serving
        st, r = self.s.json("POST", "/generate", {"inputs": "ok", "parameters": {"max_new_tokens": 1}})
        self.assertEqual(st, 200)

    def tgi(self, params, inputs="hello world"):
        return self.s.json("POST", "/generate", {"inputs": inputs, "parameters": params})

    def test_tgi_refused_parameters(self):
        for params, word in (({"best_of": 2}, "best_of"), ({"best_of": 0}, "best_of"),
                             ({"watermark": True}, "watermark"),
                             ({"grammar": {"type": "json", "value": {}}}, "grammar"),
                             ({"adapter_id": "x"}, "adapter_id"),
                             ({"typical_p": 1.0}, "typical_p"), ({"typical_p": 0}, "typical_p"),
                             ({"frequency_penalty": 2.5}, "frequency_penalty"),
                             ({"truncate": 0}, "truncate"), ({"truncate": 5000}, "truncate"),
                             ({"top_n_tokens": 6}, "top_n_tokens")):
            st, r = self.tgi(params)
            self.assertEqual((st, r.get("error_type")), (422, "validation"), params)
            self.assertIn(word, r["error"])
        st, r = self.s.json("POST", "/generate_stream",
                            {"inputs": "x", "parameters": {"decoder_input_details": True}})
        self.assertEqual(st, 422)
        self.assertIn("decoder_input_details", r["error"])
        # the accepted forms
        for params in ({"best_of": 1}, {"watermark": False}, {"grammar": None},
                       {"frequency_penalty": 1.0}, {"typical_p": 0.5, "seed": 3}):
            st, r = self.tgi(dict(params, max_new_tokens=3))
            self.assertEqual(st, 200, (params, r))

    def test_typical_p_seeded(self):
        p = {"typical_p": 0.4, "seed": 11, "max_new_tokens": 12, "details": True}
        st, a = self.tgi(p)
        st2, b = self.tgi(p)
        self.assertEqual((st, st2), (200, 200))
        self.assertEqual(a["details"]["seed"], 11)
        self.assertEqual(a["generated_text"], b["generated_text"])

    def test_top_n_tokens(self):
        st, r = self.tgi({"max_new_tokens": 6, "details": True, "top_n_tokens": 3})
        self.assertEqual(st, 200)
        d = r["details"]
        self.assertEqual(len(d["top_tokens"]), d["generated_tokens"])
        for tok, top in zip(d["tokens"], d["top_tokens"]):
            self.assertEqual(len(top), 3)
            lps = [t["logprob"] for t in top]
            self.assertEqual(lps, sorted(lps, reverse=True))
            self.assertEqual(set(top[0]), {"id", "text", "logprob", "special"})
            # greedy: the chosen token is the best one, with the same logprob
            self.assertEqual(top[0]["id"], tok["id"])
            self.assertAlmostEqual(top[0]["logprob"], tok["logprob"], places=5)
        events = [json.loads(e) for e in self.s.sse(
            "/generate_stream", {"inputs": "hello world",
                                 "parameters": {"max_new_tokens": 3, "top_n_tokens": 2}})]
        self.assertEqual(len(events), 3)
        for e in events:
            self.assertEqual(len(e["top_tokens"]), 2)
            self.assertEqual(e["top_tokens"][0]["id"], e["token"]["id"])

    def test_decoder_input_details_and_truncate(self):
        text = "the model server answers who was there, GPU data time, hello world " * 2
        ids = [int(x) for x in subprocess.run([MODEL, "tokenize", "--text", text],
                                              capture_output=True, text=True,
                                              check=True).stdout.split()]
        self.assertGreater(len(ids), 20)  # more than one prefill chunk (16)
        st, r = self.tgi({"max_new_tokens": 2, "details": True, "decoder_input_details": True},
                         text)
        self.assertEqual(st, 200)
        pre = r["details"]["prefill"]
        # the prompt as the server tokenized it: BOS + the text
        self.assertEqual([t["id"] for t in pre][1:], ids)
        self.assertIsNone(pre[0]["logprob"])
        # reference: log-softmax of the `logits` tool's rows (position i predicts i+1)
        full = [p["id"] for p in pre]
        out = subprocess.run([MODEL, "logits", "--tokens", ",".join(map(str, full))],
                             capture_output=True, text=True, check=True).stdout.splitlines()
        self.assertEqual(len(out), len(full))
        for i in range(1, len(full)):
            row = [float(x) for x in out[i - 1].split()]
            mx = max(row)
            lz = mx + math.log(sum(math.exp(v - mx) for v in row))
            self.assertAlmostEqual(pre[i]["logprob"], row[full[i]] - lz, delta=1e-3)
        # truncate keeps the last N tokens (BOS included in what is cut)
        st, t = self.tgi({"max_new_tokens": 2, "details": True, "decoder_input_details": True,
                          "truncate": 5}, text)
        self.assertEqual(st, 200)
        self.assertEqual([p["id"] for p in t["details"]["prefill"]], full[-5:])
        # without decoder_input_details the prefill stays empty
        st, t = self.tgi({"max_new_tokens": 1, "details": True}, text)
        self.assertEqual(t["details"]["prefill"], [])


class QueueAndRestartTest(unittest.TestCase):
    def test_retry_after_and_unique_ids(self):
        ids = []
        for _ in range(2):
            s = Server("--max-queue", "0")  # every generation request is refused: 429
            try:
                for path, body in (("/generate", {"inputs": "x"}),
                                   ("/v1/completions", {"prompt": "x", "max_tokens": 1})):
                    st, h, payload = raw_request(s.port, "POST", path, json.dumps(body))
                    self.assertEqual(st, 429)
                    self.assertEqual(h.get("retry-after"), "1")
                s.stop()
                s = Server()
                st, r = s.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 1})
                self.assertEqual(st, 200)
                ids.append(r["id"])
            finally:
                s.stop()
        self.assertNotEqual(ids[0], ids[1])
        for i in ids:
            self.assertRegex(i, r"^cmpl-[0-9a-f]{12}-\d+$")

    def test_info_names_the_pre_tokenizer(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "b.gguf")
            subprocess.run([MODEL, "init-tiny", p, "--tokenizer", "bpe"], check=True)
            s = Server("--model", p)
            try:
                st, info = s.json("GET", "/info")
                self.assertEqual((st, info["tokenizer_pre"]), (200, "gpt-2"))
            finally:
                s.stop()

    def test_413_beyond_the_buffered_size(self):
        # 16 KiB limit: bodies past 4 x 16 KiB + 4 MiB are drained unbuffered
        # by evhttp, which then answers 413 itself; the client still gets it
        s = Server("--max-body-kb", "16")
        try:
            st, _, _ = raw_request(s.port, "POST", "/v1/completions", b"x" * (5 << 20))
            self.assertEqual(st, 413)
            st, _, payload = raw_request(s.port, "POST", "/v1/completions", b"x" * (64 << 10))
            self.assertEqual(st, 413)
            oai_error(self, payload, "request_too_large")
            st, r = s.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 1})
            self.assertEqual(st, 200)
        finally:
            s.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2 if "-v" in sys.argv else 1)
