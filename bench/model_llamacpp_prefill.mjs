// llama.cpp side of bench/model_prefill.sh (benchmark-only; node-llama-cpp@3.21.1
// is installed into a scratch directory by the bench script, never a dependency
// of sgpu).  Usage:
//   node model_llamacpp_prefill.mjs MODEL.gguf THREADS REPS N1,N2,...
// For each prompt length N: a prompt of N fixed token ids (BOS, then
// (i * 7919) % n_vocab) into an empty context, timed from the call to the
// first generated token (greedy), i.e. prefill of N tokens plus one output
// row, as the sgpu side measures over HTTP with max_new_tokens = 1.  One
// warm-up pass, then REPS runs per length (sample lists, seconds).
// Prints one JSON line {"N": [seconds, ...], ...}.
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, T_, R_, NS_] = process.argv.slice(2);
const threads = Number(T_), reps = Number(R_);
const lens = NS_.split(",").map(Number);
const maxN = Math.max(...lens);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error,
                              maxThreads: threads});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const ctx = await model.createContext({contextSize: maxN + 64, sequences: 1,
                                       threads: {ideal: threads, min: threads},
                                       batchSize: maxN});
const seq = ctx.getSequence();
const nv = model.fileInfo.metadata?.llama?.vocab_size ?? 32000;
const toks = (n) => Array.from({length: n}, (_, i) => (i === 0 ? 1 : (i * 7919) % nv));

async function ttft(n) {
    const t0 = performance.now();
    let dt = NaN;
    for await (const _tok of seq.evaluate(toks(n), {temperature: 0})) {
        dt = (performance.now() - t0) / 1000;
        break;
    }
    await seq.clearHistory();
    return dt;
}

await ttft(Math.min(64, maxN)); // warm-up: page in the weights
const out = {};
for (const n of lens) {
    out[n] = [];
    for (let r = 0; r < reps; r++) out[n].push(await ttft(n));
}
console.log(JSON.stringify(out));
await ctx.dispose();
await model.dispose();
await llama.dispose();
