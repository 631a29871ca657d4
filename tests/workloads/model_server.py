#!/usr/bin/env python3
"""OpenAI-style completion server: the model-serving workload for gpu-warmd's benchmarks.

Start-up does what a real inference server (vLLM-like) does before it is ready:
  1. import torch + transformers, create the CUDA context;
  2. build a Qwen2-1.5B-shaped decoder (transformers' Qwen2Config / Qwen2ForCausalLM) straight on
     the GPU in bf16, weights drawn deterministically from --seed (no download, no checkpoint);
  3. profile one max-length prefill, then preallocate a paged KV-cache pool sized like vLLM's
     gpu_memory_utilization: kv = F * total_gpu_memory - memory already in use (one big tensor);
  4. warm up (a few greedy generations through the pool) and, with --cuda-graphs, capture the
     decode step as a CUDA graph;
  5. serve HTTP on 127.0.0.1:PORT: GET /health (503 while starting, 200 once ready),
     POST /v1/completions {"prompt": str, "max_tokens": int} -> greedy decoding.

The HTTP socket is bound first (so --port 0 is known early: a "listening" line is printed), and when
serving starts this exact line is printed (stdout, line-buffered):
    ready pid <pid> port <port> weights_gib <x> kv_gib <y> startup_s <z>
startup_s is measured from the process's start (/proc/self/stat), so interpreter and import time
count.

Tokenizer: none is downloaded. A built-in deterministic byte-level toy tokenizer is used: the
prompt's UTF-8 bytes are token ids 0..255, after a BOS id (151643, Qwen2's <|endoftext|>); an output
id i maps to the byte i if i < 256, else to the printable ASCII byte 33 + (i - 256) % 94; the text
is those bytes decoded as UTF-8 with replacement. Weights are random, so the text is gibberish, but
it is fully deterministic for a given seed, prompt and max_tokens. EOS is not special: exactly
max_tokens tokens are generated (finish_reason "length").

Decoding runs on the main thread, one request at a time (no batching); HTTP threads only queue
requests and wait. The forward pass is written here over transformers' modules (embed_tokens,
input_layernorm, q/k/v/o_proj, post_attention_layernorm, mlp, norm, lm_head) so that it reads and
writes our own paged KV pool; --verify checks it against transformers' own forward.
"""

import argparse
import collections
import json
import math
import os
import queue
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

T0_MONO = time.monotonic()

BOS_ID = 151643
MAX_BODY = 1 << 20
GIB = float(1 << 30)

# Real Qwen2-1.5B dimensions (config.json of Qwen/Qwen2-1.5B).
FULL_CONFIG = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                   num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2)
TINY_CONFIG = dict(vocab_size=151936, hidden_size=128, intermediate_size=512,
                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
ROPE_THETA = 1000000.0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def process_age_s():
    """Seconds since this process started (fork time), or since this script started."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2:].split()
        start_ticks = int(fields[19])  # field 22, starttime, in clock ticks since boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
        if age >= 0:
            return age
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    return time.monotonic() - T0_MONO


# ---------------------------------------------------------------------------------------------
# Toy tokenizer


def encode(prompt):
    return [BOS_ID] + list(prompt.encode("utf-8"))


def decode(ids):
    out = bytes(i if 0 <= i < 256 else 33 + (i - 256) % 94 for i in ids)
    return out.decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------------
# Model + engine (torch is imported lazily, after the socket is bound)


def make_config(Qwen2Config, dims, max_pos):
    """Qwen2Config across transformers 4.x (rope_theta=) and 5.x (rope_parameters={...})."""
    kw = dict(dims, hidden_act="silu", max_position_embeddings=max_pos, rms_norm_eps=1e-6,
              tie_word_embeddings=True, use_sliding_window=False, use_cache=False,
              bos_token_id=BOS_ID, eos_token_id=BOS_ID)
    rope = {"rope_type": "default", "rope_theta": ROPE_THETA}
    last = None
    for extra in (dict(rope_parameters=rope, rope_theta=ROPE_THETA),
                  dict(rope_parameters=rope), dict(rope_theta=ROPE_THETA)):
        try:
            return Qwen2Config(**kw, **extra)
        except Exception as e:  # TypeError/ValueError/strict-dataclass validation errors
            last = e
    raise RuntimeError(f"cannot build Qwen2Config: {last}")


class Engine:
    def __init__(self, args, timings):
        t = time.monotonic()
        import torch
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import Qwen2Config, Qwen2ForCausalLM
        timings["import_s"] = time.monotonic() - t
        self.torch = torch
        self.args = args
        torch.set_grad_enabled(False)  # thread-local: all model work stays on this thread

        t = time.monotonic()
        dev = torch.device(args.device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise RuntimeError("CUDA is not available (use --device cpu)")
            torch.cuda.set_device(dev)
            dev = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.synchronize(dev)  # create the context now
        self.dev = dev
        self.dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
        timings["cuda_init_s"] = time.monotonic() - t

        # --- model: construct straight on the device in the target dtype, then seed our weights
        t = time.monotonic()
        dims = TINY_CONFIG if args.tiny else FULL_CONFIG
        self.max_len = args.max_model_len
        self.bs = args.block_size
        self.config = make_config(Qwen2Config, dims, max(131072, self.max_len))
        prev = torch.get_default_dtype()
        try:
            torch.set_default_dtype(self.dtype)
        except (TypeError, RuntimeError):  # old torch: build in fp32, converted below
            log("warning: cannot set default dtype; building in fp32 and converting")
        try:
            with torch.device(dev):
                model = Qwen2ForCausalLM(self.config)
        finally:
            torch.set_default_dtype(prev)
        model.eval()
        model.requires_grad_(False)
        inner = model.model
        if model.lm_head.weight is not inner.embed_tokens.weight:  # tie_word_embeddings
            model.lm_head.weight = inner.embed_tokens.weight
        for _, p in model.named_parameters():
            if p.device != dev or p.dtype != self.dtype:  # defensive; not expected
                p.data = p.data.to(device=dev, dtype=self.dtype)
        torch.manual_seed(args.seed)
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith(".bias"):
                p.zero_()
            elif p.dim() == 1:  # RMSNorm weights
                p.fill_(1.0)
            else:
                p.normal_(mean=0.0, std=0.02)
        self.model = model
        self.embed = inner.embed_tokens
        self.layers = list(inner.layers)
        self.norm = inner.norm
        self.lm_head = model.lm_head
        self.weights_bytes = sum(p.numel() * p.element_size() for _, p in model.named_parameters())

        self.n_layers = dims["num_hidden_layers"]
        self.n_heads = dims["num_attention_heads"]
        self.n_kv = dims["num_key_value_heads"]
        self.hd = dims["hidden_size"] // self.n_heads
        self.n_rep = self.n_heads // self.n_kv
        self.hidden = dims["hidden_size"]
        self.vocab = dims["vocab_size"]
        self.scale = self.hd ** -0.5

        # Rotary tables, computed as transformers does (fp32, then cast to the model dtype).
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, self.hd, 2, dtype=torch.int64,
                                                       device=dev).float() / self.hd))
        freqs = torch.outer(torch.arange(self.max_len, device=dev, dtype=torch.float32), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(self.dtype)
        self.sin = emb.sin().to(self.dtype)
        rot = getattr(inner, "rotary_emb", None)
        hf_inv = getattr(rot, "inv_freq", None) if rot is not None else None
        if hf_inv is not None and hf_inv.shape == inv_freq.shape and \
                not torch.allclose(hf_inv.float(), inv_freq, rtol=1e-6, atol=0):
            log("warning: transformers' rotary inv_freq differs from rope_theta 1e6; overriding")
            hf_inv.copy_(inv_freq)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        timings["weights_s"] = time.monotonic() - t

        # --- profile a max-length prefill (activation peak), then size and allocate the KV pool
        t = time.monotonic()
        if dev.type == "cuda":
            self._prefill([0] * self.max_len, None)
            torch.cuda.synchronize(dev)
        timings["profile_s"] = time.monotonic() - t

        t = time.monotonic()
        esize = torch.empty((), dtype=self.dtype).element_size()
        block_bytes = self.n_layers * 2 * self.bs * self.n_kv * self.hd * esize
        self.max_blocks = self.max_len // self.bs
        if args.kv_cache_gib is not None:
            kv_bytes = int(args.kv_cache_gib * GIB)
        elif dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            kv_bytes = int(args.gpu_memory_utilization * total) - (total - free)
            kv_bytes = min(kv_bytes, free - (512 << 20))  # room for graphs/activations
            log(f"memory: total {total / GIB:.2f} GiB, in use {(total - free) / GIB:.2f} GiB, "
                f"utilization {args.gpu_memory_utilization} -> kv {max(kv_bytes, 0) / GIB:.2f} GiB")
        else:
            kv_bytes = int(0.25 * GIB)
        num_blocks = max(kv_bytes, 0) // block_bytes
        if num_blocks < self.max_blocks:
            raise RuntimeError(
                f"KV cache of {max(kv_bytes, 0) / GIB:.3f} GiB holds {num_blocks} blocks, fewer "
                f"than one --max-model-len sequence needs ({self.max_blocks}); raise "
                f"--gpu-memory-utilization or --kv-cache-gib")
        # One tensor: [layer, k|v, block, slot-in-block, kv-head, head-dim]. Zeroed, so that masked
        # (never written) positions hold finite values.
        self.kv = torch.zeros((self.n_layers, 2, num_blocks, self.bs, self.n_kv, self.hd),
                              dtype=self.dtype, device=dev)
        self.kv_bytes = self.kv.numel() * esize
        self.num_blocks = num_blocks
        self.k_blocks = [self.kv[i, 0] for i in range(self.n_layers)]
        self.v_blocks = [self.kv[i, 1] for i in range(self.n_layers)]
        self.k_flat = [b.view(-1, self.n_kv, self.hd) for b in self.k_blocks]
        self.v_flat = [b.view(-1, self.n_kv, self.hd) for b in self.v_blocks]
        self.free_blocks = collections.deque(range(num_blocks))  # FIFO: requests rotate over it

        # Static decode-step state (inputs and outputs of the optional CUDA graph).
        self.tok = torch.zeros(1, dtype=torch.int64, device=dev)
        self.pos = torch.zeros(1, dtype=torch.int64, device=dev)
        self.block_table = torch.zeros(self.max_blocks, dtype=torch.int64, device=dev)
        self.positions = torch.arange(self.max_len, dtype=torch.int64, device=dev)
        self.logits = torch.zeros(self.vocab, dtype=torch.float32, device=dev)
        self.graph = None
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        timings["kv_alloc_s"] = time.monotonic() - t

        # --- warm-up, then optional CUDA graph capture
        t = time.monotonic()
        warm = encode("The quick brown fox jumps over the lazy dog. " * 4)
        for _ in range(args.warmup):
            self.generate(warm, 8)
        timings["warmup_s"] = time.monotonic() - t
        t = time.monotonic()
        if args.cuda_graphs:
            if dev.type != "cuda":
                log("warning: --cuda-graphs ignored on CPU")
            else:
                self._capture()
                self.generate(warm, 8)
        timings["graphs_s"] = time.monotonic() - t

    # -- forward pieces ------------------------------------------------------------------------

    def _rope(self, x, cos, sin):
        half = x.shape[-1] // 2
        rot = self.torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rot * sin

    def _prefill(self, ids, slots):
        """Run the prompt; write its K/V at `slots` (None: profiling, no pool). -> fp32 logits."""
        torch = self.torch
        F = torch.nn.functional
        n = len(ids)
        nh, nkv, hd, rep = self.n_heads, self.n_kv, self.hd, self.n_rep
        x = self.embed(torch.tensor(ids, dtype=torch.int64, device=self.dev)).view(1, n, -1)
        cos = self.cos[:n].view(1, 1, n, hd)
        sin = self.sin[:n].view(1, 1, n, hd)
        for i, layer in enumerate(self.layers):
            att = layer.self_attn
            h = layer.input_layernorm(x)
            q = att.q_proj(h).view(1, n, nh, hd).transpose(1, 2)
            k = att.k_proj(h).view(1, n, nkv, hd).transpose(1, 2)
            v = att.v_proj(h).view(1, n, nkv, hd).transpose(1, 2)
            q = self._rope(q, cos, sin)
            k = self._rope(k, cos, sin)
            if slots is not None:
                self.k_flat[i].index_copy_(0, slots, k[0].transpose(0, 1))
                self.v_flat[i].index_copy_(0, slots, v[0].transpose(0, 1))
            if rep > 1:  # GQA: query head j uses kv head j // rep (as transformers' repeat_kv)
                k = k[:, :, None].expand(1, nkv, rep, n, hd).reshape(1, nh, n, hd)
                v = v[:, :, None].expand(1, nkv, rep, n, hd).reshape(1, nh, n, hd)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + att.o_proj(o.transpose(1, 2).reshape(1, n, nh * hd))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x[:, -1:])).view(-1).float()

    def _decode_step(self):
        """One greedy step on static tensors: consumes self.tok at self.pos, writes its K/V into
        the pool, attends over the block table (masked to <= pos), then sets self.logits,
        self.tok (next token) and self.pos += 1. No host sync: capturable as a CUDA graph."""
        torch = self.torch
        nh, nkv, hd, rep = self.n_heads, self.n_kv, self.hd, self.n_rep
        bs, L = self.bs, self.max_len
        pos = self.pos
        blk = self.block_table.index_select(0, torch.div(pos, bs, rounding_mode="floor"))
        slot = blk * bs + torch.remainder(pos, bs)
        masked = (self.positions > pos).view(1, 1, 1, L)
        cos = self.cos.index_select(0, pos).view(1, 1, 1, hd)
        sin = self.sin.index_select(0, pos).view(1, 1, 1, hd)
        x = self.embed(self.tok).view(1, 1, -1)
        for i, layer in enumerate(self.layers):
            att = layer.self_attn
            h = layer.input_layernorm(x)
            q = self._rope(att.q_proj(h).view(1, nkv, rep, hd), cos, sin)
            k = self._rope(att.k_proj(h).view(1, nkv, 1, hd), cos, sin)
            v = att.v_proj(h).view(1, nkv, hd)
            self.k_flat[i].index_copy_(0, slot, k.view(1, nkv, hd))
            self.v_flat[i].index_copy_(0, slot, v)
            kk = self.k_blocks[i].index_select(0, self.block_table).view(L, nkv, hd)
            vv = self.v_blocks[i].index_select(0, self.block_table).view(L, nkv, hd)
            kk = kk.permute(1, 0, 2).unsqueeze(0)  # [1, nkv, L, hd]
            vv = vv.permute(1, 0, 2).unsqueeze(0)
            s = torch.matmul(q, kk.transpose(-1, -2)) * self.scale  # [1, nkv, rep, L]
            s = s.masked_fill(masked, float("-inf"))
            p = torch.softmax(s, dim=-1, dtype=torch.float32).to(self.dtype)
            o = torch.matmul(p, vv).reshape(1, 1, nh * hd)
            x = x + att.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        logits = self.lm_head(self.norm(x)).view(-1).float()
        self.logits.copy_(logits)
        self.tok.copy_(torch.argmax(logits).view(1))
        self.pos.add_(1)

    def _capture(self):
        torch = self.torch
        # Any valid block: warm-up steps write their (garbage) K/V there.
        self.block_table.zero_()
        self.pos.zero_()
        self.tok.zero_()
        try:
            s = torch.cuda.Stream(self.dev)
            s.wait_stream(torch.cuda.current_stream(self.dev))
            with torch.cuda.stream(s):
                for _ in range(3):
                    self._decode_step()
            torch.cuda.current_stream(self.dev).wait_stream(s)
            self.pos.zero_()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self._decode_step()
            torch.cuda.synchronize(self.dev)
            self.graph = g
        except Exception as e:  # keep serving, eagerly
            self.graph = None
            log(f"warning: CUDA graph capture failed, decoding eagerly: {type(e).__name__}: {e}")

    # -- requests ------------------------------------------------------------------------------

    def generate(self, ids, max_tokens, collect_logits=False):
        """Greedy decoding of exactly max_tokens tokens after ids. Returns a dict with the token
        ids, ttft_s (from the call to the first token on the host), total_s, and the per-token
        fp32 logits (CPU) when collect_logits."""
        torch = self.torch
        n = len(ids)
        if n < 1 or max_tokens < 1 or n + max_tokens > self.max_len:
            raise ValueError(f"prompt {n} + max_tokens {max_tokens} must be <= {self.max_len}")
        t0 = time.monotonic()
        nblk = -(-(n + max_tokens) // self.bs)
        blocks = [self.free_blocks.popleft() for _ in range(nblk)]
        try:
            bs = self.bs
            slots = torch.tensor([blocks[p // bs] * bs + p % bs for p in range(n)],
                                 dtype=torch.int64, device=self.dev)
            table = blocks + [blocks[0]] * (self.max_blocks - nblk)
            self.block_table.copy_(torch.tensor(table, dtype=torch.int64))
            logits = self._prefill(ids, slots)
            first = torch.argmax(logits)
            self.tok.copy_(first.view(1))
            self.pos.fill_(n)
            collected = [logits.cpu()] if collect_logits else None
            first_id = int(first.item())  # host sync: the first token exists
            t_first = time.monotonic()
            out = torch.empty(max_tokens, dtype=torch.int64, device=self.dev)
            for j in range(1, max_tokens):
                if self.graph is not None:
                    self.graph.replay()
                else:
                    self._decode_step()
                out[j:j + 1].copy_(self.tok)
                if collect_logits:
                    collected.append(self.logits.cpu())
            rest = out[1:].tolist()
            t_end = time.monotonic()
        finally:
            self.free_blocks.extend(blocks)
        return {"ids": [first_id] + rest, "ttft_s": t_first - t0, "total_s": t_end - t0,
                "logits": collected}

    def verify(self):
        """Compare our paged decode against transformers' own forward (no cache) on the same
        tokens. Returns (ok, message)."""
        torch = self.torch
        ids = encode("Verify: a fixed prompt for the paged KV cache.")
        r = self.generate(ids, 16, collect_logits=True)
        seq = ids + r["ids"][:-1]
        out = self.model(input_ids=torch.tensor([seq], dtype=torch.int64, device=self.dev),
                         use_cache=False)
        ref = out.logits[0, len(ids) - 1:].float().cpu()
        mine = torch.stack(r["logits"])
        scale = max(1.0, float(ref.abs().max()))
        rel = float((ref - mine).abs().max()) / scale
        agree = sum(int(a == b) for a, b in zip(ref.argmax(-1).tolist(), r["ids"]))
        tol = 1e-3 if self.dtype == torch.float32 else 5e-2
        ok = rel <= tol and math.isfinite(rel)
        return ok, (f"verify max_rel_diff {rel:.2e} (tol {tol:g}) "
                    f"argmax_agree {agree}/{len(r['ids'])} dtype {self.args.dtype} "
                    f"graphs {int(self.graph is not None)} "
                    f"{'ok' if ok else 'FAIL'}")


# ---------------------------------------------------------------------------------------------
# HTTP front end


class Job:
    def __init__(self, ids, max_tokens, t_arrival):
        self.ids = ids
        self.max_tokens = max_tokens
        self.t_arrival = t_arrival
        self.t_start = None
        self.result = None
        self.error = None
        self.done = threading.Event()


class State:
    def __init__(self, args):
        self.args = args
        self.ready = threading.Event()
        self.jobs = queue.Queue()
        self.max_len = args.max_model_len
        self.model_name = "qwen2-tiny-random" if args.tiny else "qwen2-1.5b-shaped-random"
        self.counter = 0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "gw-model-server/1"

    def log_message(self, fmt, *a):
        if self.server.state.args.log_requests:
            log("http: " + fmt % a)

    def _reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, code, msg):
        self._reply(code, {"error": {"message": msg, "code": code}})

    def do_GET(self):
        st = self.server.state
        if self.path == "/health":
            if st.ready.is_set():
                self._reply(200, {"status": "ok"})
            else:
                self._reply(503, {"status": "starting"})
        elif self.path == "/v1/models":
            self._reply(200, {"object": "list", "data": [{"id": st.model_name, "object": "model"}]})
        else:
            self._error(404, "not found")

    def do_POST(self):
        t_arrival = time.monotonic()
        st = self.server.state
        if self.path != "/v1/completions":
            return self._error(404, "not found")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._error(411, "Content-Length required")
        if length < 0 or length > MAX_BODY:
            return self._error(413, "body too large")
        try:
            req = json.loads(self.rfile.read(length))
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "body is not JSON")
        if not isinstance(req, dict):
            return self._error(400, "body must be a JSON object")
        prompt = req.get("prompt", "")
        max_tokens = req.get("max_tokens", 16)
        if not isinstance(prompt, str):
            return self._error(400, "prompt must be a string")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return self._error(400, "max_tokens must be a positive integer")
        ids = encode(prompt)
        if len(ids) + max_tokens > st.max_len:
            return self._error(400, f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) "
                                    f"exceeds max model length {st.max_len}")
        if not st.ready.is_set():
            return self._error(503, "server is starting")
        job = Job(ids, max_tokens, t_arrival)
        st.jobs.put(job)
        if not job.done.wait(st.args.request_timeout):
            return self._error(504, "timed out waiting for the engine")
        if job.error is not None:
            return self._error(500, job.error)
        r = job.result
        with st.lock:
            st.counter += 1
            n = st.counter
        t_done = time.monotonic()
        self._reply(200, {
            "id": f"cmpl-{os.getpid()}-{n}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": st.model_name,
            "choices": [{"index": 0, "text": decode(r["ids"]), "token_ids": r["ids"],
                         "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": len(r["ids"]),
                      "total_tokens": len(ids) + len(r["ids"])},
            "timing": {"ttft_ms": (job.t_start - t_arrival + r["ttft_s"]) * 1e3,
                       "queue_ms": (job.t_start - t_arrival) * 1e3,
                       "total_ms": (t_done - t_arrival) * 1e3,
                       "decode_ms": (r["total_s"] - r["ttft_s"]) * 1e3},
        })


def engine_loop(engine, st):
    while True:
        job = st.jobs.get()
        job.t_start = time.monotonic()
        try:
            job.result = engine.generate(job.ids, job.max_tokens)
        except Exception as e:
            traceback.print_exc()
            job.error = f"{type(e).__name__}: {e}"
        finally:
            job.done.set()


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port (default 8000)")
    ap.add_argument("--device", default="cuda:0", help="cuda[:N] or cpu (default cuda:0)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--tiny", action="store_true", help="2 layers, hidden 128 (logic tests)")
    ap.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    ap.add_argument("--gpu-memory-utilization", type=float, default=None,
                    help="fraction F of total GPU memory the process may use; the KV pool gets "
                         "F*total minus what is in use after weights+profiling (default 0.5; "
                         "--tiny and CPU default to a 0.25 GiB pool instead)")
    ap.add_argument("--kv-cache-gib", type=float, default=None,
                    help="KV pool size in GiB (overrides --gpu-memory-utilization)")
    ap.add_argument("--max-model-len", type=int, default=4096, help="tokens per sequence")
    ap.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up generations (default 3)")
    ap.add_argument("--cuda-graphs", action="store_true", help="capture the decode step")
    ap.add_argument("--verify", action="store_true",
                    help="before serving, check decoding against transformers' forward; exit 3 "
                         "on mismatch")
    ap.add_argument("--request-timeout", type=float, default=600.0)
    ap.add_argument("--log-requests", action="store_true")
    a = ap.parse_args(argv)
    if not 0 <= a.port <= 65535:
        ap.error("--port out of range")
    if a.block_size < 1 or a.block_size > 1024:
        ap.error("--block-size must be 1..1024")
    if a.max_model_len < 2 or a.max_model_len > 131072:
        ap.error("--max-model-len must be 2..131072")
    a.max_model_len = -(-a.max_model_len // a.block_size) * a.block_size
    if a.warmup < 0 or a.warmup > 100:
        ap.error("--warmup must be 0..100")
    if a.gpu_memory_utilization is not None and not 0 < a.gpu_memory_utilization <= 1:
        ap.error("--gpu-memory-utilization must be in (0, 1]")
    if a.kv_cache_gib is not None and not 0 < a.kv_cache_gib <= 4096:
        ap.error("--kv-cache-gib must be in (0, 4096]")
    if a.kv_cache_gib is None and a.gpu_memory_utilization is None:
        if a.tiny or a.device == "cpu":
            a.kv_cache_gib = 0.25
        else:
            a.gpu_memory_utilization = 0.5
    return a


def main(argv=None):
    sys.stdout.reconfigure(line_buffering=True)
    args = parse_args(argv)
    st = State(args)
    httpd = ThreadingHTTPServer((args.host, args.port), Handler)
    httpd.daemon_threads = True
    httpd.state = st
    port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, name="http", daemon=True).start()
    print(f"listening pid {os.getpid()} port {port}", flush=True)

    timings = {}
    try:
        engine = Engine(args, timings)
        if args.verify:
            ok, msg = engine.verify()
            print(msg, flush=True)
            if not ok:
                return 3
    except Exception:
        traceback.print_exc()
        log("model server: start-up failed")
        return 1
    print("startup " + " ".join(f"{k} {v:.3f}" for k, v in timings.items()), flush=True)
    st.ready.set()
    print(f"ready pid {os.getpid()} port {port} weights_gib {engine.weights_bytes / GIB:.3f} "
          f"kv_gib {engine.kv_bytes / GIB:.3f} startup_s {process_age_s():.3f}", flush=True)
    try:
        engine_loop(engine, st)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
