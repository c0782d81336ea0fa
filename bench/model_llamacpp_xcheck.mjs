// Cross-check for bench/model.sh: llama.cpp's tokenization of TEXT and its N
// greedy tokens after BOS + TEXT on MODEL.gguf, one JSON line, so the bench can
// compare them with `sgpu-model tokenize` / `generate` on the same file.
// Usage: node model_llamacpp_xcheck.mjs MODEL.gguf TEXT N
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, text, N] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: 2});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
const toks = Array.from(model.tokenize(text));
const ctx = await model.createContext({contextSize: 256, threads: 2});
const seq = ctx.getSequence();
const out = [];
for await (const t of seq.evaluate([model.tokens.bos, ...toks], {temperature: 0})) {
    out.push(t);
    if (out.length >= Number(N)) break;
}
console.log(JSON.stringify({tokens: toks, greedy: out}));
await ctx.dispose();
await model.dispose();
await llama.dispose();
