// llama.cpp side of bench/model.sh (benchmark-only; node-llama-cpp@3.21.1 is
// installed into a scratch directory by bench/model.sh, never a dependency of
// sgpu).  Usage: node model_llamacpp.mjs MODEL.gguf STREAMS TOKENS THREADS
// Prints one JSON line: ttft_s (mean), decode_tps (mean per stream),
// aggregate_tps (all streams' tokens / wall time from start to last token).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, K_, N_, T_] = process.argv.slice(2);
const K = Number(K_), N = Number(N_), threads = Number(T_);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error,
                              maxThreads: threads});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const ctx = await model.createContext({contextSize: K * (N + 64), sequences: K,
                                       threads: {ideal: threads, min: threads}, batchSize: 512});
const prompt = model.tokenize("hello world, the model server is a GPU data time text");
const seqs = Array.from({length: K}, () => ctx.getSequence());

async function gen(seq, n) {
    const t0 = performance.now();
    const times = [];
    for await (const _tok of seq.evaluate(prompt, {temperature: 0})) {
        times.push(performance.now());
        if (times.length >= n) break;
    }
    return {t0, times};
}

// warm-up (page in the weights), then reset
await gen(seqs[0], 4);
await seqs[0].clearHistory();

const res = await Promise.all(seqs.map((s) => gen(s, N)));
const start = Math.min(...res.map((r) => r.t0));
const end = Math.max(...res.map((r) => r.times[r.times.length - 1]));
const total = res.reduce((a, r) => a + r.times.length, 0);
const ttft = res.reduce((a, r) => a + (r.times[0] - r.t0), 0) / K / 1000;
const dec = res.reduce((a, r) => a + (r.times.length - 1) / ((r.times[r.times.length - 1] - r.times[0]) / 1000), 0) / K;
console.log(JSON.stringify({ttft_s: ttft, decode_tps: dec, aggregate_tps: total / ((end - start) / 1000),
                            tokens: total}));
await ctx.dispose();
await model.dispose();
await llama.dispose();
