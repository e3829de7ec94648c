#!/usr/bin/env python3
"""Reference figures for leo's CUDA backend (issue 9), measured in the same run.

leo's own CUDA kernels are judged against what the same GPU does with the
usual tools, on the same model shape (Llama-2-7B in fp16 by default), in the
same session, so that the comparison never mixes cards or days:

  copy_gbps   device-to-device copy bandwidth of one large torch copy,
              counting bytes read + bytes written (median of ~20 copies,
              CUDA events). Decode at batch 1 is bound by reading every
              weight once per token, so copy_gbps / weight_bytes is the
              ceiling ("bound") that the tok/s figures are set against.
  hf_eager    Hugging Face transformers LlamaForCausalLM.generate(), random
              fp16 weights built from a LlamaConfig (nothing downloaded),
              greedy, a 16-token random prompt, exactly N new tokens.
              tok/s = batch * N / wall time of generate (prefill included).
  graph_ref   what a PyTorch expert would write by hand: plain-torch Llama
              decode step with a static fp16 KV cache, fused QKV and fused
              gate/up weights, RMSNorm, RoPE (half rotation, as HF), SDPA
              over the static cache with a mask, SiLU-GLU, output projection
              and argmax, the whole step captured in one torch.cuda.CUDAGraph
              and replayed (also timed without the graph: "eager").
              Prefill: the 16 prompt tokens are run one at a time through
              the same (un-graphed) step, so the cache holds real values;
              only the decode steps after it are timed. A replay of the
              graph is checked against the eager result of the same step
              (argmax equal), and the cached step against a plain
              full-sequence forward of the prompt.

weight_bytes counts every matrix read per decoded token: all layers' matrices
and the output projection, not the embedding table (one row is read).

Usage on the GPU machine (well under two minutes on an H200):
  python3 hack/gpu/reference.py --json /tmp/reference.json
Smoke test on a tiny shape, on a CPU (no CUDA graph, no events):
  python3 hack/gpu/reference.py --device cpu --dim 64 --hidden 160 \
      --layers 2 --heads 4 --kv-heads 2 --vocab 256 --copy-gib 0.0625
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[reference] {msg}", flush=True)


def torch_version() -> tuple[int, int]:
    parts = torch.__version__.split("+")[0].split(".")
    return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)


HAS_SDPA = hasattr(F, "scaled_dot_product_attention")
SDPA_GQA = HAS_SDPA and torch_version() >= (2, 5)  # enable_gqa= argument
HAS_RMS_NORM = hasattr(F, "rms_norm")


# --------------------------------------------------------------------------
# Timing


class Clock:
    """Times GPU work with CUDA events, CPU work with perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def start(self) -> None:
        if self.cuda:
            self.t_start = torch.cuda.Event(enable_timing=True)
            self.t_stop = torch.cuda.Event(enable_timing=True)
            self.t_start.record()
        else:
            self.t_start = time.perf_counter()

    def stop(self) -> float:
        """Seconds since start(), after all queued work is done."""
        if self.cuda:
            self.t_stop.record()
            self.t_stop.synchronize()
            return self.t_start.elapsed_time(self.t_stop) / 1e3
        return time.perf_counter() - self.t_start


# --------------------------------------------------------------------------
# Shape


class Shape:
    def __init__(self, args: argparse.Namespace):
        self.dim = args.dim
        self.hidden = args.hidden
        self.layers = args.layers
        self.heads = args.heads
        self.kv_heads = args.kv_heads
        self.vocab = args.vocab
        self.max_pos = args.max_position
        self.eps = args.eps
        self.theta = args.rope_theta
        if self.dim % self.heads or self.heads % self.kv_heads:
            raise SystemExit("dim must divide by heads, heads by kv-heads")
        self.head_dim = self.dim // self.heads

    def as_dict(self) -> dict:
        return {
            "dim": self.dim, "hidden": self.hidden, "layers": self.layers,
            "heads": self.heads, "kv_heads": self.kv_heads,
            "head_dim": self.head_dim, "vocab": self.vocab,
            "max_position_embeddings": self.max_pos,
            "rms_norm_eps": self.eps, "rope_theta": self.theta,
        }

    def matrix_elements(self) -> int:
        """Weight elements read per decoded token (not the embedding)."""
        qkv = (self.heads + 2 * self.kv_heads) * self.head_dim * self.dim
        wo = self.dim * self.heads * self.head_dim
        mlp = 3 * self.hidden * self.dim
        return self.layers * (qkv + wo + mlp) + self.vocab * self.dim


# --------------------------------------------------------------------------
# 1. Copy bandwidth


def measure_copy(gib: float, device: torch.device, repeats: int = 20) -> float:
    """Median bytes (read + written) per second of dst.copy_(src), in GB/s."""
    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.float16, device=device).normal_()
    dst = torch.empty_like(src)
    clock = Clock(device)
    for _ in range(3):
        dst.copy_(src)
    clock.sync()
    times = []
    for _ in range(repeats):
        clock.start()
        dst.copy_(src)
        times.append(clock.stop())
    moved = 2 * src.numel() * src.element_size()
    del src, dst
    free_memory()
    return moved / statistics.median(times) / 1e9


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------
# 2. Hugging Face transformers generate()


def hf_config(shape: Shape):
    """A LlamaConfig of the shape; transformers 5 keeps rope_theta inside
    rope_parameters, 4.x took it as a keyword."""
    from transformers import LlamaConfig

    common = dict(
        vocab_size=shape.vocab, hidden_size=shape.dim,
        intermediate_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=shape.max_pos, rms_norm_eps=shape.eps,
        hidden_act="silu", tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=None, pad_token_id=0,
    )
    try:
        cfg = LlamaConfig(
            **common,
            rope_parameters={"rope_type": "default", "rope_theta": shape.theta},
        )
        rp = getattr(cfg, "rope_parameters", None)
        theta = float(rp.get("rope_theta", -1)) if isinstance(rp, dict) else -1
        # 4.x would keep an unknown keyword and its own rope_theta: check both.
        if theta == shape.theta and getattr(cfg, "rope_theta", theta) == theta:
            return cfg
    except (TypeError, ValueError) as err:
        log(f"hf: LlamaConfig(rope_parameters=...) refused ({err}); using rope_theta=")
    return LlamaConfig(**common, rope_theta=shape.theta)


def hf_build(shape: Shape, device: torch.device, dtype: torch.dtype):
    """Random-weight LlamaForCausalLM made directly on the device in dtype
    (initialising 7B parameters there takes well under a second; on the CPU
    in fp32 it would take minutes)."""
    from transformers import LlamaForCausalLM

    cfg = hf_config(shape)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    model = model.to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        # Same statistics as the hand-written reference, whatever the
        # library's default init was (fast: it runs on the device).
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0)
    return model


def hf_generate_tok_s(model, batch: int, prompt: int, new: int,
                      device: torch.device) -> dict:
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (batch, prompt), device=device)
    mask = torch.ones_like(ids)
    # No eos in the config, so every sequence runs to max_new_tokens;
    # min_new_tokens also holds if a library default brings an eos back.
    kwargs = dict(attention_mask=mask, do_sample=False, pad_token_id=0)
    clock = Clock(device)
    # Warm-up: one short generate of the same batch.
    model.generate(ids, max_new_tokens=2, min_new_tokens=2, **kwargs)
    clock.sync()
    clock.start()
    out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kwargs)
    secs = clock.stop()
    made = out.shape[1] - prompt
    return {"tok_s": batch * made / secs, "new_tokens": made,
            "seconds": secs, "prompt": prompt}


def run_hf(args, shape: Shape, device: torch.device, dtype: torch.dtype,
           report: dict) -> None:
    try:
        import transformers

        report["transformers"] = transformers.__version__
        t = time.perf_counter()
        model = hf_build(shape, device, dtype)
        impl = getattr(model.config, "_attn_implementation", None)
        log(f"hf model built in {time.perf_counter() - t:.1f}s "
            f"(transformers {transformers.__version__}, attention {impl})")
        report["hf_eager"]["attn_implementation"] = impl
    except Exception as err:  # never lose the other figures
        report["hf_eager"]["error"] = f"{type(err).__name__}: {err}"
        log(f"hf eager skipped: {type(err).__name__}: {err}")
        model = None
    if model is None:
        free_memory()
        return
    batches = list(args.batches)
    if args.hf_batch128 and 128 not in batches:
        batches.append(128)
    try:
        with torch.no_grad():
            for b in batches:
                log(f"hf eager batch {b}: generating {args.hf_tokens} tokens")
                try:
                    r = hf_generate_tok_s(model, b, args.prompt, args.hf_tokens, device)
                except Exception as err:
                    report["hf_eager"][str(b)] = {"error": f"{type(err).__name__}: {err}"}
                    log(f"hf eager batch {b}: failed: {type(err).__name__}: {err}")
                    r = None
                if r is None:
                    free_memory()
                    continue
                report["hf_eager"][str(b)] = r
                note = "" if r["new_tokens"] == args.hf_tokens else \
                    f" (made {r['new_tokens']} tokens, not {args.hf_tokens})"
                log(f"hf eager batch {b}: {r['tok_s']:.1f} tok/s{note}")
                write_json(args, report)
    finally:
        del model
        free_memory()


# --------------------------------------------------------------------------
# 3. Hand-written decode step, eager and CUDA graph


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    if HAS_RMS_NORM:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return xf.to(x.dtype) * w


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Half rotation (HF Llama): pairs (i, i + head_dim/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def attention(q, k, v, mask):
    """q [B,H,Tq,D]; k, v [B,KVH,Tk,D]; mask bool, True = attend."""
    rep = q.shape[1] // k.shape[1]
    if HAS_SDPA:
        if rep > 1 and SDPA_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~mask, float("-inf")).softmax(-1)
    return (s @ v.float()).to(q.dtype)


class RefLlama:
    """Llama decoder in plain torch, weights as fused tensors per layer."""

    def __init__(self, shape: Shape, device: torch.device, dtype: torch.dtype):
        self.s, self.device, self.dtype = shape, device, dtype
        s = shape

        def mat(*size):
            return torch.empty(*size, device=device, dtype=dtype).normal_(0.0, 0.02)

        def ones(n):
            return torch.ones(n, device=device, dtype=dtype)

        qkv_out = (s.heads + 2 * s.kv_heads) * s.head_dim
        self.embed = mat(s.vocab, s.dim)
        self.wqkv = [mat(qkv_out, s.dim) for _ in range(s.layers)]
        self.wo = [mat(s.dim, s.heads * s.head_dim) for _ in range(s.layers)]
        self.wgu = [mat(2 * s.hidden, s.dim) for _ in range(s.layers)]
        self.wd = [mat(s.dim, s.hidden) for _ in range(s.layers)]
        self.attn_norm = [ones(s.dim) for _ in range(s.layers)]
        self.ffn_norm = [ones(s.dim) for _ in range(s.layers)]
        self.out_norm = ones(s.dim)
        self.wout = mat(s.vocab, s.dim)
        self.k_cache = self.v_cache = None

    def weight_bytes(self) -> int:
        mats = self.wqkv + self.wo + self.wgu + self.wd + [self.wout]
        return sum(m.numel() * m.element_size() for m in mats)

    def alloc_cache(self, batch: int, max_len: int) -> None:
        """Static KV cache [layers, batch, kv_heads, max_len, head_dim] and
        the RoPE tables for positions 0..max_len-1."""
        s = self.s
        self.k_cache = self.v_cache = None
        free_memory()
        size = (s.layers, batch, s.kv_heads, max_len, s.head_dim)
        self.k_cache = torch.zeros(size, device=self.device, dtype=self.dtype)
        self.v_cache = torch.zeros(size, device=self.device, dtype=self.dtype)
        inv = 1.0 / (s.theta ** (torch.arange(0, s.head_dim, 2, device=self.device,
                                              dtype=torch.float32) / s.head_dim))
        ang = torch.outer(torch.arange(max_len, device=self.device, dtype=torch.float32), inv)
        self.cos, self.sin = ang.cos(), ang.sin()  # [max_len, head_dim/2] fp32
        self.t_index = torch.arange(max_len, device=self.device)

    def step(self, tokens: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """One decode step: tokens [B] at position pos ([1], on the device)
        -> next tokens [B]. Writes this position's K and V into the cache.
        No host synchronisation, so it can be captured in a CUDA graph."""
        s = self.s
        b, h, kvh, hd = tokens.shape[0], s.heads, s.kv_heads, s.head_dim
        cos = self.cos.index_select(0, pos).to(self.dtype)  # [1, hd/2]
        sin = self.sin.index_select(0, pos).to(self.dtype)
        mask = (self.t_index <= pos).view(1, 1, 1, -1)
        x = F.embedding(tokens, self.embed)  # [B, dim]
        for l in range(s.layers):
            y = rms_norm(x, self.attn_norm[l], s.eps)
            q, k, v = F.linear(y, self.wqkv[l]).split([h * hd, kvh * hd, kvh * hd], dim=-1)
            q = rope(q.view(b, h, hd), cos, sin).unsqueeze(2)  # [B, H, 1, hd]
            k = rope(k.view(b, kvh, hd), cos, sin).unsqueeze(2)
            self.k_cache[l].index_copy_(2, pos, k)
            self.v_cache[l].index_copy_(2, pos, v.reshape(b, kvh, 1, hd))
            a = attention(q, self.k_cache[l], self.v_cache[l], mask)
            x = x + F.linear(a.reshape(b, h * hd), self.wo[l])
            y = rms_norm(x, self.ffn_norm[l], s.eps)
            g, u = F.linear(y, self.wgu[l]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(g) * u, self.wd[l])
        y = rms_norm(x, self.out_norm, s.eps)
        return F.linear(y, self.wout).argmax(dim=-1)

    def forward_full(self, tokens: torch.Tensor) -> torch.Tensor:
        """Plain causal forward of tokens [B, T] without the cache -> next
        token after the last position [B]. Only used to check step()."""
        s = self.s
        b, t = tokens.shape
        h, kvh, hd = s.heads, s.kv_heads, s.head_dim
        cos = self.cos[:t].to(self.dtype).unsqueeze(1)  # [T, 1, hd/2]
        sin = self.sin[:t].to(self.dtype).unsqueeze(1)
        mask = torch.ones(t, t, dtype=torch.bool, device=self.device).tril()
        x = F.embedding(tokens, self.embed)  # [B, T, dim]
        for l in range(s.layers):
            y = rms_norm(x, self.attn_norm[l], s.eps)
            q, k, v = F.linear(y, self.wqkv[l]).split([h * hd, kvh * hd, kvh * hd], dim=-1)
            q = rope(q.view(b, t, h, hd), cos, sin).transpose(1, 2)
            k = rope(k.view(b, t, kvh, hd), cos, sin).transpose(1, 2)
            v = v.reshape(b, t, kvh, hd).transpose(1, 2)
            a = attention(q, k, v, mask).transpose(1, 2).reshape(b, t, h * hd)
            x = x + F.linear(a, self.wo[l])
            y = rms_norm(x, self.ffn_norm[l], s.eps)
            g, u = F.linear(y, self.wgu[l]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(g) * u, self.wd[l])
        y = rms_norm(x[:, -1], self.out_norm, s.eps)
        return F.linear(y, self.wout).argmax(dim=-1)


def decode_loop(step, tokens: torch.Tensor, pos: torch.Tensor, steps: int,
                clock: Clock) -> float:
    """Runs steps decode steps, feeding each step's argmax back into the
    static inputs in place; returns seconds. step() runs one decode step."""
    clock.sync()
    clock.start()
    for _ in range(steps):
        tokens.copy_(step())
        pos.add_(1)
    return clock.stop()


def capture_graph(model: RefLlama, tokens, pos):
    """Warm up on a side stream, then capture one step in a CUDA graph.
    Returns (graph, static output)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model.step(tokens, pos)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model.step(tokens, pos)
    torch.cuda.synchronize()
    return graph, out


def graph_ref_batch(model: RefLlama, batch: int, args, device) -> dict:
    s, p, steps = model.s, args.prompt, args.steps
    max_len = -(-(p + steps + 1) // 64) * 64  # multiple of 64: aligned mask
    model.alloc_cache(batch, max_len)
    clock = Clock(device)
    prompt = torch.randint(3, s.vocab, (batch, p), device=device)
    tokens = torch.zeros(batch, dtype=torch.long, device=device)
    pos = torch.zeros(1, dtype=torch.long, device=device)
    r: dict = {"max_len": max_len, "prompt": p, "steps": steps}

    # Prefill, un-graphed: the prompt one token at a time (also warms up).
    for i in range(p):
        tokens.copy_(prompt[:, i])
        pos.fill_(i)
        first = model.step(tokens, pos)
    first = first.clone()
    rows = min(batch, 4)
    full = model.forward_full(prompt[:rows])
    r["cache_vs_full_forward"] = float((full == first[:rows]).float().mean())

    # Eager decode from position p.
    tokens.copy_(first)
    pos.fill_(p)
    secs = decode_loop(lambda: model.step(tokens, pos), tokens, pos, steps, clock)
    eager_last = tokens.clone()
    r["eager_tok_s"] = batch * steps / secs
    r["eager_seconds"] = secs

    if device.type == "cuda":
        try:
            r.update(graph_decode(model, prompt, first, eager_last, tokens, pos,
                                  steps, clock))
        except Exception as err:  # keep the eager figure
            r["graph_error"] = f"{type(err).__name__}: {err}"
    return r


def graph_decode(model, prompt, first, eager_last, tokens, pos, steps, clock) -> dict:
    """The same decode, each step one replay of a CUDA graph."""
    p, batch = prompt.shape[1], prompt.shape[0]
    # Captured at the last prompt position, so the first replay must
    # reproduce the eager step that produced `first`.
    tokens.copy_(prompt[:, p - 1])
    pos.fill_(p - 1)
    graph, out = capture_graph(model, tokens, pos)
    graph.replay()
    torch.cuda.synchronize()
    r = {"graph_step_match": bool(torch.equal(out, first))}

    def replay():
        graph.replay()
        return out

    tokens.copy_(first)
    pos.fill_(p)
    secs = decode_loop(replay, tokens, pos, steps, clock)
    r["graph_tok_s"] = batch * steps / secs
    r["graph_seconds"] = secs
    # Same start, same cache: the chain of argmaxes should end identically.
    r["last_token_match"] = float((tokens == eager_last).float().mean())
    return r


def run_graph_ref(args, shape: Shape, device, dtype, report: dict) -> None:
    g = report["graph_ref"]
    g["prefill"] = (f"{args.prompt} random prompt tokens run one at a time through "
                    "the eager step (not timed); timed: the decode steps after it")
    try:
        t = time.perf_counter()
        model = RefLlama(shape, device, dtype)
        g["weight_bytes"] = model.weight_bytes()
        log(f"graph ref model built in {time.perf_counter() - t:.1f}s, "
            f"{g['weight_bytes'] / 1e9:.2f} GB of matrices per token")
    except Exception as err:
        g["error"] = f"{type(err).__name__}: {err}"
        log(f"graph ref skipped: {g['error']}")
        return
    with torch.inference_mode():
        for b in args.batches:
            log(f"graph ref batch {b}: prefill {args.prompt}, decode {args.steps} steps")
            try:
                r = graph_ref_batch(model, b, args, device)
            except Exception as err:
                g[str(b)] = {"error": f"{type(err).__name__}: {err}"}
                log(f"graph ref batch {b}: failed: {type(err).__name__}: {err}")
                r = None
            if r is None:
                free_memory()
                continue
            g[str(b)] = r
            log(f"torch eager batch {b}: {r['eager_tok_s']:.1f} tok/s "
                f"(cached step = full forward on {r['cache_vs_full_forward']:.0%} of rows)")
            if "graph_error" in r:
                log(f"torch cuda graph batch {b}: failed: {r['graph_error']}")
            if "graph_tok_s" in r:
                log(f"torch cuda graph batch {b}: {r['graph_tok_s']:.1f} tok/s "
                    f"(graph step match {str(r['graph_step_match']).lower()}, "
                    f"last token match {r['last_token_match']:.0%})")
            write_json(args, report)
    model.k_cache = model.v_cache = None
    del model
    free_memory()


# --------------------------------------------------------------------------
# Report


def add_bounds(report: dict) -> None:
    gbps = report.get("copy_gbps")
    wb = report.get("weight_bytes")
    if not gbps or not wb:
        return
    bound = gbps * 1e9 / wb
    report["bound_tok_s_batch1"] = bound
    pct = {}
    for key, name in (("hf_eager", "tok_s"), ("graph_ref", "eager_tok_s"),
                      ("graph_ref", "graph_tok_s")):
        r = report.get(key, {}).get("1", {})
        if name in r:
            label = {"tok_s": "hf_eager", "eager_tok_s": "torch_eager",
                     "graph_tok_s": "torch_cuda_graph"}[name]
            pct[label] = 100.0 * r[name] / bound
    report["pct_of_bound_batch1"] = pct


def table_rows(report: dict) -> list[tuple[str, str, str, str]]:
    rows = []
    if "copy_gbps" in report:
        rows.append(("copy bandwidth (GB/s r+w)", "-", f"{report['copy_gbps']:.0f}", ""))
    if "bound_tok_s_batch1" in report:
        rows.append(("decode bound (copy/weights)", "1", f"{report['bound_tok_s_batch1']:.1f}",
                     f"{report['weight_bytes'] / 1e9:.2f} GB read per token"))
    bound = report.get("bound_tok_s_batch1")

    def pct(b, v):
        return f"{100 * v / bound:.0f}% of bound" if bound and b == "1" else ""

    hf = report.get("hf_eager", {})
    if "error" in hf:
        rows.append(("hf generate eager", "-", "-", "error: " + hf["error"][:60]))
    for b, r in hf.items():
        if isinstance(r, dict) and "tok_s" in r:
            rows.append((f"hf generate {short_dtype(report['dtype'])} eager", b, f"{r['tok_s']:.1f}", pct(b, r["tok_s"])))
        elif isinstance(r, dict) and "error" in r:
            rows.append(("hf generate eager", b, "-", "error: " + r["error"][:60]))
    gr = report.get("graph_ref", {})
    if "error" in gr:
        rows.append(("torch hand-written", "-", "-", "error: " + gr["error"][:60]))
    for b, r in gr.items():
        if not isinstance(r, dict):
            continue
        if "error" in r:
            rows.append(("torch hand-written", b, "-", "error: " + r["error"][:60]))
            continue
        rows.append(("torch hand-written eager", b, f"{r['eager_tok_s']:.1f}", pct(b, r["eager_tok_s"])))
        if "graph_error" in r:
            rows.append(("torch hand-written cuda graph", b, "-", "error: " + r["graph_error"][:60]))
        if "graph_tok_s" in r:
            note = pct(b, r["graph_tok_s"])
            note = (note + "; " if note else "") + f"match={str(r['graph_step_match']).lower()}"
            rows.append(("torch hand-written cuda graph", b, f"{r['graph_tok_s']:.1f}", note))
    return rows


def short_dtype(name: str) -> str:
    return {"float16": "fp16", "float32": "fp32", "bfloat16": "bf16"}.get(name, name)


def print_table(report: dict) -> None:
    print(flush=True)
    print(f"{'reference':<32}{'batch':<7}{'tok/s':>9}   note")
    for name, b, v, note in table_rows(report):
        print(f"{name:<32}{b:<7}{v:>9}   {note}".rstrip())
    print(f"({report['device']}, torch {report['torch']}, "
          f"{time.perf_counter() - T0:.0f}s in all)", flush=True)


def write_json(args, report: dict) -> None:
    if not args.json:
        return
    add_bounds(report)
    report["elapsed_s"] = time.perf_counter() - T0
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")


# --------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=11008)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--max-position", type=int, default=4096)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes")
    p.add_argument("--steps", type=int, default=64, help="timed decode steps (graph ref)")
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--hf-tokens", type=int, default=32, help="new tokens per generate()")
    p.add_argument("--hf-batch128", action="store_true", help="also generate() at batch 128")
    p.add_argument("--skip-hf", action="store_true")
    p.add_argument("--skip-graph", action="store_true")
    p.add_argument("--copy-gib", type=float, default=2.0, help="copy source size, GiB")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cpu: smoke test (fp32, no CUDA graph, perf_counter)")
    p.add_argument("--json", default="", help="write all figures to this file")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.prompt < 1 or args.steps < 1 or args.hf_tokens < 1:
        p.error("--prompt, --steps and --hf-tokens must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --device cpu for a smoke test")
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    shape = Shape(args)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report: dict = {
        "device": name, "torch": torch.__version__, "python": sys.version.split()[0],
        "dtype": str(dtype).replace("torch.", ""), "shape": shape.as_dict(),
        "weight_bytes": shape.matrix_elements() * torch.tensor([], dtype=dtype).element_size(),
        "hf_eager": {}, "graph_ref": {},
    }
    log(f"{name}, torch {torch.__version__}, {report['dtype']}, "
        f"shape {shape.as_dict()}, batches {args.batches}")

    try:
        report["copy_gbps"] = measure_copy(args.copy_gib, device)
        log(f"copy bandwidth: {report['copy_gbps']:.0f} GB/s (read + write, "
            f"{args.copy_gib:g} GiB copies)")
    except Exception as err:
        report["copy_error"] = f"{type(err).__name__}: {err}"
        log(f"copy bandwidth failed: {report['copy_error']}")
    write_json(args, report)

    if not args.skip_hf:
        run_hf(args, shape, device, dtype, report)
    if not args.skip_graph:
        run_graph_ref(args, shape, device, dtype, report)

    add_bounds(report)
    write_json(args, report)
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
