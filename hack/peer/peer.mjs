#!/usr/bin/env node
// peer.mjs runs llama.cpp, through node-llama-cpp's prebuilt CPU build, as the
// independent implementation that leo-runtime is checked against.
//
//   node hack/peer/peer.mjs tokenize --model F --text T [--bos] [--special]
//   node hack/peer/peer.mjs logits   --model F --tokens 1,2,3 --out FILE [--threads N]
//   node hack/peer/peer.mjs greedy   --model F --tokens 1,2,3 --n 128 [--threads N]
//   node hack/peer/peer.mjs bench    --model F --threads T [--prompt 128] [--gen 64] [--reps 3]
//
// --text - and --tokens - read the value from stdin. Every command prints one
// JSON object on stdout; errors go to stderr with exit status 1 (2 for bad
// usage). node-llama-cpp is imported from the install that
// hack/peer/install.sh makes: $LEO_PEER_DIR, or by default
// bin/peer/node-llama-cpp-<version>/ of the repository this file is in.
//
// Options for the evaluating commands (defaults in parentheses):
//   --kv-type f16|f32      KV cache element type (f32 for logits and greedy,
//                          so nothing is rounded that the model does not
//                          round; f16, llama.cpp's default, for bench)
//   --flash-attn on|off|auto  (off for logits and greedy; auto, llama.cpp's
//                          default, for bench)
//
// logits: node-llama-cpp 3.21.1 gives no raw logits. What it gives is, per
// position, the softmax over the whole vocabulary of the logits after the
// sampler chain; with temperature 0 that chain is llama.cpp's greedy sampler
// alone (no top-k/top-p/min-p/penalties/bias: see AddonSampler.cpp), which
// leaves the logits as they are. So the file holds log-probabilities
// (metadata "kind": "logprobs"): logit - logsumexp(logits), as float32,
// little-endian, [positions × vocab], row i being the next-token scores
// after tokens[0..i]. Each row is checked to cover every token id once and
// to sum to 1. llama.cpp hands over each probability as a float32, so a
// logprob is good to about 1e-7 absolute down to probabilities near 1e-38;
// below that precision drops, and a probability that underflowed to 0 reads
// -Infinity (metadata "prob_min" tells whether any did).
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

// Whatever the library prints must not mix with our JSON on stdout.
console.log = console.info = console.debug = console.warn = console.error;

class UsageError extends Error {}

const here = path.dirname(fileURLToPath(import.meta.url));

function pinnedVersion() {
  const pkg = JSON.parse(fs.readFileSync(path.join(here, "package.json"), "utf8"));
  return pkg.dependencies["node-llama-cpp"];
}

function installDir() {
  if (process.env.LEO_PEER_DIR) return path.resolve(process.env.LEO_PEER_DIR);
  return path.resolve(here, "..", "..", "bin", "peer", `node-llama-cpp-${pinnedVersion()}`);
}

async function importLibrary() {
  const dir = installDir();
  const entry = path.join(dir, "node_modules", "node-llama-cpp", "dist", "index.js");
  if (!fs.existsSync(entry)) {
    throw new Error(`node-llama-cpp is not installed in ${dir}: run hack/peer/install.sh (or set LEO_PEER_DIR to its output)`);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "node_modules", "node-llama-cpp", "package.json"), "utf8"));
  return { lib: await import(pathToFileURL(entry).href), version: pkg.version };
}

// parseArgs reads --name value pairs and bare --flags.
function parseArgs(argv, flags, valued) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) throw new UsageError(`unexpected argument ${JSON.stringify(a)}`);
    const name = a.slice(2);
    if (flags.includes(name)) {
      out[name] = true;
    } else if (valued.includes(name)) {
      if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value`);
      out[name] = argv[++i];
    } else {
      throw new UsageError(`unknown option --${name} (known: ${[...valued, ...flags].map((n) => "--" + n).join(" ")})`);
    }
  }
  return out;
}

function required(args, name) {
  if (args[name] === undefined) throw new UsageError(`--${name} is required`);
  return args[name];
}

function intArg(args, name, def, min, max) {
  const s = args[name];
  if (s === undefined) {
    if (def === undefined) throw new UsageError(`--${name} is required`);
    return def;
  }
  if (!/^[0-9]+$/.test(s)) throw new UsageError(`--${name} must be a whole number, got ${JSON.stringify(s)}`);
  const v = Number(s);
  if (v < min || v > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${v}`);
  return v;
}

// stdinValue returns the option's value, or all of stdin when the value is
// "-" (for long prompts: one argument may hold at most 128 KiB on Linux).
function stdinValue(args, name) {
  const v = required(args, name);
  return v === "-" ? fs.readFileSync(0, "utf8") : v;
}

function tokensArg(args) {
  const s = stdinValue(args, "tokens").trim();
  if (!/^[0-9]+(,[0-9]+)*$/.test(s)) {
    throw new UsageError(`--tokens must be comma-separated token ids like 1,2,3; got ${JSON.stringify(s.slice(0, 80))}`);
  }
  return s.split(",").map(Number);
}

function choiceArg(args, name, def, choices) {
  const v = args[name] ?? def;
  if (!choices.includes(v)) throw new UsageError(`--${name} must be one of ${choices.join(", ")}; got ${JSON.stringify(v)}`);
  return v;
}

function modelArg(args) {
  const p = path.resolve(required(args, "model"));
  let st;
  try {
    st = fs.statSync(p);
  } catch (e) {
    throw new Error(`model ${p}: ${e.code === "ENOENT" ? "no such file" : e.message}`);
  }
  if (!st.isFile()) throw new Error(`model ${p} is not a regular file`);
  return p;
}

// loadLlama gives the prebuilt CPU library, quietly and without any attempt
// to build, download or probe a GPU.
async function loadLlama(lib) {
  return lib.getLlama({
    gpu: false,
    build: "never",
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    logLevel: lib.LlamaLogLevel.disabled,
    logger: () => {},
    debug: false,
    // No cap of our own: a context's threads are then exactly what it asks.
    maxThreads: 0,
  });
}

async function loadModel(llama, modelPath, vocabOnly = false) {
  return llama.loadModel({
    modelPath,
    gpuLayers: 0,
    vocabOnly,
    useMmap: true,
    defaultContextFlashAttention: false,
  });
}

// vocabSize is the number of tokens in the model's vocabulary, from its
// GGUF metadata.
function vocabSize(model) {
  const n = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
  if (!Number.isInteger(n) || n <= 0) throw new Error("the model has no tokenizer.ggml.tokens array");
  return n;
}

function checkTokens(tokens, vocab) {
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] >= vocab) throw new UsageError(`token ${tokens[i]} at index ${i} is outside the vocabulary (size ${vocab})`);
  }
}

// contextOptions gives a context just big enough for n tokens (llama.cpp
// rounds it up to a multiple of 256) and batches of the given size. With
// threads > 0, exactly that many threads evaluate every batch.
function contextOptions({ n, batch, threads, kvType, flashAttn }) {
  const o = {
    contextSize: n,
    batchSize: batch,
    sequences: 1,
    flashAttention: flashAttn === "auto" ? "auto" : flashAttn === "on",
    experimentalKvCacheKeyType: kvType.toUpperCase(),
    experimentalKvCacheValueType: kvType.toUpperCase(),
    failedCreationRemedy: false,
  };
  if (threads > 0) o.threads = { ideal: threads, min: threads };
  return o;
}

function contextInfo(ctx, kvType, flashAttn) {
  return {
    context_size: ctx.contextSize,
    batch_size: ctx.batchSize,
    threads: ctx.currentThreads,
    kv_type: kvType,
    flash_attention: flashAttn,
  };
}

const evalFlags = ["model", "tokens", "threads", "kv-type", "flash-attn"];

async function cmdTokenize(lib, argv) {
  const args = parseArgs(argv, ["bos", "special"], ["model", "text"]);
  const modelPath = modelArg(args);
  const text = stdinValue(args, "text");
  const llama = await loadLlama(lib);
  const model = await loadModel(llama, modelPath, true);
  const tokens = Array.from(model.tokenize(text, !!args.special));
  if (args.bos) {
    if (model.tokens.bos == null) throw new Error("--bos: the model has no BOS token");
    tokens.unshift(model.tokens.bos);
  }
  return { tokens };
}

// Rows are produced this many positions at a time, so that memory stays
// bounded (node-llama-cpp returns each row as a Map of the whole vocabulary).
const logitsChunk = 64;

async function cmdLogits(lib, argv) {
  const args = parseArgs(argv, [], [...evalFlags, "out"]);
  const modelPath = modelArg(args);
  const tokens = tokensArg(args);
  const out = path.resolve(required(args, "out"));
  const threads = intArg(args, "threads", 0, 0, 1024);
  const kvType = choiceArg(args, "kv-type", "f32", ["f16", "f32"]);
  const flashAttn = choiceArg(args, "flash-attn", "off", ["on", "off", "auto"]);
  if (os.endianness() !== "LE") throw new Error("this machine is big-endian; the logits file is little-endian float32");

  const llama = await loadLlama(lib);
  const model = await loadModel(llama, modelPath);
  const vocab = vocabSize(model);
  checkTokens(tokens, vocab);
  const batch = Math.min(tokens.length, logitsChunk);
  const o = contextOptions({ n: tokens.length, batch, threads, kvType, flashAttn });
  const ctx = await model.createContext(o);
  const seq = ctx.getSequence();

  const fd = fs.openSync(out, "w");
  let minSum = Infinity;
  let maxSum = -Infinity;
  let minProb = Infinity;
  try {
    for (let start = 0; start < tokens.length; start += logitsChunk) {
      const chunk = tokens.slice(start, start + logitsChunk);
      // temperature 0 (the default) means the greedy sampler alone: the
      // probabilities are the plain softmax of the logits.
      const res = await seq.controlledEvaluate(
        chunk.map((t) => [t, { generateNext: { probabilities: true, options: { temperature: 0 } } }]),
      );
      const rows = new Float32Array(chunk.length * vocab);
      for (let i = 0; i < chunk.length; i++) {
        const pos = start + i;
        const probs = res[i]?.next?.probabilities;
        if (!(probs instanceof Map)) throw new Error(`position ${pos}: node-llama-cpp returned no probabilities`);
        if (probs.size !== vocab) {
          throw new Error(`position ${pos}: ${probs.size} probabilities for a vocabulary of ${vocab}: some tokens were cut off`);
        }
        const row = rows.subarray(i * vocab, (i + 1) * vocab);
        row.fill(NaN);
        let sum = 0;
        for (const [id, p] of probs) {
          if (!Number.isInteger(id) || id < 0 || id >= vocab || !Number.isNaN(row[id])) {
            throw new Error(`position ${pos}: token id ${id} is out of range or repeated in the probabilities`);
          }
          if (!(p >= 0 && p <= 1)) throw new Error(`position ${pos}: token ${id} has probability ${p}`);
          sum += p;
          if (p < minProb) minProb = p;
          row[id] = Math.log(p);
        }
        minSum = Math.min(minSum, sum);
        maxSum = Math.max(maxSum, sum);
        if (Math.abs(sum - 1) > 1e-3) throw new Error(`position ${pos}: probabilities sum to ${sum}, not 1`);
      }
      fs.writeSync(fd, new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength));
    }
  } finally {
    fs.closeSync(fd);
  }
  return {
    kind: "logprobs",
    dtype: "float32le",
    file: out,
    positions: tokens.length,
    vocab,
    prob_sum_min: minSum,
    prob_sum_max: maxSum,
    // 0 means some token's probability underflowed float32: its logprob is -Infinity.
    prob_min: minProb,
    ...contextInfo(ctx, kvType, flashAttn),
  };
}

async function cmdGreedy(lib, argv) {
  const args = parseArgs(argv, [], [...evalFlags, "n"]);
  const modelPath = modelArg(args);
  const tokens = tokensArg(args);
  const n = intArg(args, "n", undefined, 1, 1 << 20);
  const threads = intArg(args, "threads", 0, 0, 1024);
  const kvType = choiceArg(args, "kv-type", "f32", ["f16", "f32"]);
  const flashAttn = choiceArg(args, "flash-attn", "off", ["on", "off", "auto"]);

  const llama = await loadLlama(lib);
  const model = await loadModel(llama, modelPath);
  checkTokens(tokens, vocabSize(model));
  const o = contextOptions({ n: tokens.length + n, batch: Math.min(tokens.length, 512), threads, kvType, flashAttn });
  const ctx = await model.createContext(o);
  const seq = ctx.getSequence();
  const out = await generate(seq, tokens, n);
  return { tokens: out, ...contextInfo(ctx, kvType, flashAttn) };
}

// generate evaluates the prompt and returns the n next tokens, each the
// argmax of the logits: temperature 0 selects llama.cpp's greedy sampler
// and nothing else (no repetition penalty unless asked for, and none is).
// EOS and other end-of-generation tokens are yielded like any other token.
// onFirst is called once the prompt is evaluated and the first token chosen.
async function generate(seq, tokens, n, onFirst) {
  const out = [];
  const it = seq.evaluate(tokens, { temperature: 0, yieldEogToken: true });
  try {
    while (out.length < n) {
      const { value, done } = await it.next();
      if (done) throw new Error(`generation stopped after ${out.length} of ${n} tokens`);
      out.push(value);
      if (out.length === 1 && onFirst) onFirst();
    }
  } finally {
    await it.return();
  }
  return out;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

async function cmdBench(lib, argv) {
  const args = parseArgs(argv, [], ["model", "threads", "prompt", "gen", "reps", "kv-type", "flash-attn"]);
  const modelPath = modelArg(args);
  const threads = intArg(args, "threads", undefined, 1, 1024);
  const prompt = intArg(args, "prompt", 128, 1, 1 << 16);
  const gen = intArg(args, "gen", 64, 1, 1 << 16);
  const reps = intArg(args, "reps", 3, 1, 1000);
  const kvType = choiceArg(args, "kv-type", "f16", ["f16", "f32"]);
  const flashAttn = choiceArg(args, "flash-attn", "auto", ["on", "off", "auto"]);

  const llama = await loadLlama(lib);
  const model = await loadModel(llama, modelPath);
  const vocab = vocabSize(model);
  // A fixed prompt of ordinary token ids (past the 3 special ones); what the
  // ids are does not change the speed.
  const tokens = Array.from({ length: prompt }, (_, i) => 3 + ((i * 7919) % (vocab - 3)));
  // The whole prompt is one batch; the generated tokens (one at a time, the
  // last one not evaluated) fit in the context without shifting it.
  const o = contextOptions({ n: prompt + gen, batch: Math.max(prompt, 128), threads, kvType, flashAttn });
  const ctx = await model.createContext(o);
  const seq = ctx.getSequence();

  // One pass: the first step evaluates the prompt in one batch and picks a
  // token; each of the next gen steps evaluates one token and picks the next.
  const once = async () => {
    await seq.clearHistory();
    let t1;
    const t0 = performance.now();
    await generate(seq, tokens, gen + 1, () => {
      t1 = performance.now();
    });
    const t2 = performance.now();
    if (ctx.currentThreads !== threads) {
      throw new Error(`the context used ${ctx.currentThreads} threads, not the ${threads} asked for`);
    }
    return { prompt: prompt / ((t1 - t0) / 1000), gen: gen / ((t2 - t1) / 1000) };
  };
  await once(); // warm-up: page in the weights, size the buffers
  const runs = [];
  for (let r = 0; r < reps; r++) runs.push(await once());
  return {
    prompt_tok_s: median(runs.map((r) => r.prompt)),
    gen_tok_s: median(runs.map((r) => r.gen)),
    prompt_runs: runs.map((r) => r.prompt),
    gen_runs: runs.map((r) => r.gen),
    prompt,
    gen,
    reps,
    ...contextInfo(ctx, kvType, flashAttn),
  };
}

const commands = { tokenize: cmdTokenize, logits: cmdLogits, greedy: cmdGreedy, bench: cmdBench };

async function main() {
  const [cmd, ...argv] = process.argv.slice(2);
  const run = commands[cmd];
  if (!run) throw new UsageError(`unknown command ${JSON.stringify(cmd ?? "")} (commands: ${Object.keys(commands).join(", ")})`);
  const { lib, version } = await importLibrary();
  const res = await run(lib, argv);
  process.stdout.write(JSON.stringify({ ...res, peer: `node-llama-cpp ${version}` }) + "\n");
}

try {
  await main();
  // Native handles (the model, the thread pool) can keep the event loop alive.
  process.exit(0);
} catch (e) {
  process.stderr.write(`peer.mjs: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(e instanceof UsageError ? 2 : 1);
}
