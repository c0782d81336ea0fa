// Standard clients against sgpu-gateway; run by bench/gateway_clients.sh (the npm packages live
// in a scratch directory, never a dependency of sgpu).  Env: GW (gateway base URL), KEY (the
// endpoint's api_key), WORKER (the worker's URL, for its /metrics).  Exits 1 on any failure.
import OpenAI from "openai";
import { InferenceClient } from "@huggingface/inference";

const base = process.env.GW, key = process.env.KEY;
let failed = 0;
function check(what, ok, detail = "") {
    console.log(`${ok ? "ok  " : "FAIL"} ${what}${detail ? ": " + detail : ""}`);
    if (!ok) failed++;
}
async function expectError(what, fn, status, code) {
    try {
        await fn();
        check(what, false, "no error");
    } catch (e) {
        check(what, e.status === status && (!code || e.code === code), `${e.constructor.name} ${e.status} ${e.code ?? ""}`);
    }
}
async function workerCancelled() {
    const t = await (await fetch(process.env.WORKER + "/metrics")).text();
    const m = t.match(/sgpu_worker_requests_total\{outcome="cancelled"\} (\d+)/);
    const w = t.match(/sgpu_worker_requests_working (\d+)/);
    return { cancelled: Number(m[1]), working: Number(w[1]) };
}

const openai = new OpenAI({ baseURL: base + "/v1", apiKey: key });
const msgs = [{ role: "user", content: "Hello" }];

const models = await openai.models.list();
check("openai models.list", models.data.map(m => m.id).join() === "demo", JSON.stringify(models.data.map(m => m.id)));
check("openai models.retrieve", (await openai.models.retrieve("demo")).id === "demo");
const chat = await openai.chat.completions.create({ model: "demo", max_tokens: 8, messages: msgs });
check("openai chat", typeof chat.choices[0].message.content === "string" && ["length", "stop"].includes(chat.choices[0].finish_reason));
const comp = await openai.completions.create({ model: "demo", max_tokens: 5, prompt: "Once" });
check("openai completions", typeof comp.choices[0].text === "string");
// (the tiny model may stop before max_tokens: each stream must reach its finish_reason)
let n = 0, last = null;
for await (const ch of await openai.chat.completions.create({ model: "demo", stream: true, max_tokens: 8, messages: msgs })) { n++; last = ch; }
check("openai chat stream", n >= 2 && !!last.choices[0].finish_reason, `${n} chunks, ${last?.choices[0]?.finish_reason}`);
n = 0;
for await (const ch of await openai.completions.create({ model: "demo", stream: true, max_tokens: 5, prompt: "Hi" })) { n++; last = ch; }
check("openai completions stream", n >= 1 && !!last.choices[0].finish_reason, `${n} chunks, ${last?.choices[0]?.finish_reason}`);
await expectError("openai wrong key -> AuthenticationError",
    () => new OpenAI({ baseURL: base + "/v1", apiKey: "wrong", maxRetries: 0 }).chat.completions.create({ model: "demo", messages: msgs }), 401, "invalid_api_key");
await expectError("openai unknown model -> NotFoundError",
    () => openai.chat.completions.create({ model: "nope", messages: msgs }), 404, "model_not_found");
await expectError("openai unknown model retrieve -> NotFoundError", () => openai.models.retrieve("nope"), 404, "model_not_found");

const ends = await Promise.all([...Array(16).keys()].map(async i => {
    let last = null;
    for await (const ch of await openai.chat.completions.create({ model: "demo", stream: true, max_tokens: 6, messages: [{ role: "user", content: "n" + i }] })) last = ch;
    return last?.choices[0]?.finish_reason;
}));
check("openai 16 concurrent streams, each to its end", ends.every(r => r === "length" || r === "stop"), ends.join(","));

const before = await workerCancelled();
const ac = new AbortController();
const st = await openai.chat.completions.create({ model: "demo", stream: true, max_tokens: 900, messages: [{ role: "user", content: "a long story" }] }, { signal: ac.signal });
let got = 0;
try { for await (const ch of st) if (++got === 2) ac.abort(); } catch (e) { /* APIUserAbortError */ }
let after = before;
for (let i = 0; i < 300 && !(after.cancelled > before.cancelled && after.working === 0); i++) {
    await new Promise(r => setTimeout(r, 100));
    after = await workerCancelled();
}
check("openai aborted stream frees the worker", after.cancelled > before.cancelled && after.working === 0, JSON.stringify(after));

const hf = new InferenceClient(key).endpoint(base + "/endpoints/demo");
const g = await hf.textGeneration({ inputs: "Hello", parameters: { max_new_tokens: 5 } });
check("hf textGeneration", typeof g.generated_text === "string");
n = 0;
for await (const t of hf.textGenerationStream({ inputs: "Hello", parameters: { max_new_tokens: 5 } })) n++;
check("hf textGenerationStream", n >= 1, `${n} events`);
const cc = await hf.chatCompletion({ model: "demo", messages: msgs, max_tokens: 5 });
check("hf chatCompletion", typeof cc.choices[0].message.content === "string");
n = 0;
for await (const ch of hf.chatCompletionStream({ model: "demo", messages: msgs, max_tokens: 5 })) { n++; last = ch; }
check("hf chatCompletionStream", n >= 2 && !!last.choices[0].finish_reason, `${n} chunks`);
try {
    await new InferenceClient("bad").endpoint(base + "/endpoints/demo").textGeneration({ inputs: "x" });
    check("hf wrong key is an error", false);
} catch (e) {
    check("hf wrong key is an error", true, e.constructor.name);
}
console.log(failed ? `${failed} failed` : "all passed");
process.exit(failed ? 1 : 0);
