"""Triton kernel for `WindowAttention`: shifted-window attention without moving the activation.

One program handles one (batch, window, group of heads, block of up to 64 queries). It
gathers its window's q/k/v rows straight from the original-order qkv tensor: roll and
partition are folded into the row index ((padded row + shift) mod H, per axis, windows
wh x ww), padded tokens read `pad_qkv`, the shift mask comes from region ids computed in
registers, and the result is scattered back to the original token order. QK^T and PV use
tl.dot with FP32 accumulation over 64-key blocks (online softmax); FP32 inputs use IEEE dots
(no TF32) to match the reference. Swin V2 (`COSINE`) L2-normalises the q and k rows in FP32
before the dot; every head's logit scale is a compile-time constant (`SCALES`).

On the CPU the kernel runs under Triton's interpreter, which must be switched on
(TRITON_INTERPRET=1) before triton is first imported: triton.language's own
reductions are jitted at import, so the mode cannot be chosen per call.

Argument order follows TensorRT's AOT convention: tensor inputs (qkv, bias, pad_qkv),
then the extra scalar (`batch`), then the output, then compile-time constants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import triton
import triton.language as tl

from vitdeploy.plugins.trt import finish_for_tensorrt
from vitdeploy.plugins.window_attention.spec import MASK_VALUE, head_scales, pair

KERNEL_NAME = "window_attention_kernel"

__all__ = [
    "KERNEL_NAME", "NUM_KERNEL_ARGS", "LaunchConfig", "compile_ptx", "interpreter_active",
    "make_config", "ptx_for_tensorrt", "signature",
    "window_attention_kernel", "window_attention_triton",
]


@triton.jit
def _l2_normalize(x):
    """Rows divided by max(L2 norm, 1e-12), like torch.nn.functional.normalize (Swin V2's q and k)."""
    xf = x.to(tl.float32)
    norm = tl.sqrt(tl.sum(xf * xf, 1))
    return (xf / tl.maximum(norm, 1e-12)[:, None]).to(x.dtype)


@triton.jit
def _source(hs, ws, b, H: tl.constexpr, W: tl.constexpr, HP: tl.constexpr, WP: tl.constexpr,
            SH: tl.constexpr, SW: tl.constexpr, PAD_FIRST: tl.constexpr):
    """(is a real token, its row in qkv) for slot (hs, ws) of the shifted, padded map."""
    if PAD_FIRST:  # pad, then roll the padded map (torchvision, Hugging Face)
        ph = (hs + SH) % HP
        pw = (ws + SW) % WP
    else:  # roll, then pad (timm): slots past H x W are padding
        ph = tl.where(hs < H, (hs + SH) % H, H)
        pw = tl.where(ws < W, (ws + SW) % W, W)
    return (ph < H) & (pw < W), b.to(tl.int64) * (H * W) + ph * W + pw


@triton.jit
def window_attention_kernel(
    qkv_ptr, bias_ptr, pad_ptr,
    batch,
    out_ptr,
    H: tl.constexpr, W: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SCALES: tl.constexpr, COSINE: tl.constexpr, MASK: tl.constexpr,
    PAD_FIRST: tl.constexpr,
    HEADS_PER_PROG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_KV: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_PAD: tl.constexpr, IEEE_DOT: tl.constexpr,
):
    C: tl.constexpr = HEADS * HEAD_DIM
    N: tl.constexpr = WH * WW
    NWH: tl.constexpr = (H + WH - 1) // WH
    NWW: tl.constexpr = (W + WW - 1) // WW
    HP: tl.constexpr = NWH * WH
    WP: tl.constexpr = NWW * WW
    GROUPS: tl.constexpr = HEADS // HEADS_PER_PROG
    NUM_M: tl.constexpr = (N + BLOCK_M - 1) // BLOCK_M  # query blocks per window (1 up to 64 tokens)
    NUM_KV: tl.constexpr = (N + BLOCK_KV - 1) // BLOCK_KV  # key blocks

    pid = tl.program_id(0)
    mblk = pid % NUM_M
    rest = pid // NUM_M
    group = rest % GROUPS
    rest = rest // GROUPS
    win = rest % (NWH * NWW)
    b = rest // (NWH * NWW)
    win_h0 = (win // NWW) * WH
    win_w0 = (win % NWW) * WW
    in_batch = b < batch

    d = tl.arange(0, BLOCK_D)
    dmask = d < HEAD_DIM

    # Query token i of this window sits at (hs, ws) on the shifted, padded map, which is
    # token ((hs + sh) % H, (ws + sw) % W) of the original map (timm: outside H x W is padding;
    # pad-first: ((hs + sh) % HP, (ws + sw) % WP), padding where that is outside H x W).
    i = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    hs_i = win_h0 + i // WW
    ws_i = win_w0 + i % WW
    real_i, row_i = _source(hs_i, ws_i, b, H, W, HP, WP, SH, SW, PAD_FIRST)
    in_i = (i < N) & in_batch & real_i
    q_mask = in_i[:, None] & dmask[None, :]
    q_rows = qkv_ptr + row_i[:, None] * (3 * C) + d[None, :]
    out_rows = out_ptr + row_i[:, None] * C + d[None, :]
    # timm's shift mask: region id from the three slices per axis of the padded map
    rid_i = ((hs_i >= HP - WH).to(tl.int32) + (hs_i >= HP - SH).to(tl.int32)) * 3 \
        + (ws_i >= WP - WW).to(tl.int32) + (ws_i >= WP - SW).to(tl.int32)

    for hh in tl.static_range(HEADS_PER_PROG):
        h = group * HEADS_PER_PROG + hh
        col = h * HEAD_DIM
        scale = 0.0  # this head's logit scale: a compile-time constant per head, picked without a load
        for t in tl.static_range(HEADS):
            scale = tl.where(h == t, SCALES[t], scale)
        q = tl.load(q_rows + col, mask=q_mask, other=0.0)
        if HAS_PAD:
            pq = tl.load(pad_ptr + col + d, mask=dmask, other=0.0).to(q.dtype)
            q = tl.where(in_i[:, None], q, pq[None, :])
        if COSINE:
            q = _l2_normalize(q)
        # online softmax over key blocks, in base 2: exp2((x - max) * log2 e) == exp(x - max)
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        denom = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for kv in range(NUM_KV):  # a real loop: unrolling 9 key blocks (24x24 windows) costs minutes of compile
            j = kv * BLOCK_KV + tl.arange(0, BLOCK_KV)
            hs_j = win_h0 + j // WW
            ws_j = win_w0 + j % WW
            real_j, row_j = _source(hs_j, ws_j, b, H, W, HP, WP, SH, SW, PAD_FIRST)
            in_j = (j < N) & in_batch & real_j
            kv_mask = in_j[:, None] & dmask[None, :]
            kv_rows = qkv_ptr + row_j[:, None] * (3 * C) + d[None, :]
            k = tl.load(kv_rows + (C + col), mask=kv_mask, other=0.0)
            v = tl.load(kv_rows + (2 * C + col), mask=kv_mask, other=0.0)
            if HAS_PAD:
                pk = tl.load(pad_ptr + (C + col) + d, mask=dmask, other=0.0).to(k.dtype)
                pv = tl.load(pad_ptr + (2 * C + col) + d, mask=dmask, other=0.0).to(v.dtype)
                k = tl.where(in_j[:, None], k, pk[None, :])
                v = tl.where(in_j[:, None], v, pv[None, :])
            if COSINE:
                k = _l2_normalize(k)
            if IEEE_DOT:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            in_pair = (i[:, None] < N) & (j[None, :] < N)
            bias = tl.load(bias_ptr + h * (N * N) + i[:, None] * N + j[None, :], mask=in_pair, other=0.0)
            s = s * scale + bias.to(tl.float32)
            if SH + SW > 0:
                rid_j = ((hs_j >= HP - WH).to(tl.int32) + (hs_j >= HP - SH).to(tl.int32)) * 3 \
                    + (ws_j >= WP - WW).to(tl.int32) + (ws_j >= WP - SW).to(tl.int32)
                s = tl.where(rid_i[:, None] == rid_j[None, :], s, s + MASK)
            s = tl.where((j < N)[None, :], s * 1.4426950408889634, float("-inf"))
            m_new = tl.maximum(m, tl.max(s, 1))
            alpha = tl.math.exp2(m - m_new)
            p = tl.math.exp2(s - m_new[:, None])
            denom = denom * alpha + tl.sum(p, 1)
            if IEEE_DOT:
                acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m = m_new
        o = acc / denom[:, None]
        tl.store(out_rows + col, o.to(out_ptr.dtype.element_ty), mask=q_mask)


def interpreter_active() -> bool:
    """True when Triton was imported with TRITON_INTERPRET=1 (kernels then run on the CPU)."""
    return bool(triton.knobs.runtime.interpret)


@dataclass(frozen=True)
class LaunchConfig:
    """Everything that fixes one compiled variant of the kernel plus its grid."""

    height: int
    width: int
    window_size: tuple[int, int]  # (wh, ww)
    shift_size: tuple[int, int]  # (sh, sw)
    num_heads: int
    head_dim: int
    scale: tuple[float, ...]  # one logit scale per head
    heads_per_program: int
    num_warps: int
    has_pad: bool
    cosine: bool = False
    mask_value: float = MASK_VALUE
    pad_first: bool = False

    @property
    def window_tokens(self) -> int:
        return self.window_size[0] * self.window_size[1]

    @property
    def num_windows(self) -> int:
        return math.ceil(self.height / self.window_size[0]) * math.ceil(self.width / self.window_size[1])

    @property
    def block_m(self) -> int:
        """Query rows per program: the whole window up to 64 tokens, else 64-row blocks of it
        (Swin V2's 12x12..24x24 windows; FP32 tiles then stay far below 48 KiB of shared memory)."""
        return min(64, max(16, triton.next_power_of_2(self.window_tokens)))

    @property
    def block_d(self) -> int:
        return max(16, triton.next_power_of_2(self.head_dim))

    def block_kv(self, fp32: bool) -> int:
        """Keys per inner block: 64, fewer for FP32 tiles of wide heads, which take twice the shared
        memory of FP16 ones; every variant stays within the 48 KiB a launch gets without an opt-in."""
        n = max(16, triton.next_power_of_2(self.window_tokens))
        if fp32 and self.block_d > 32:
            return min(n, 32 if self.block_d <= 64 else 16)
        return min(n, 64)

    @property
    def query_blocks(self) -> int:
        return math.ceil(self.window_tokens / self.block_m)

    @property
    def programs_per_image(self) -> int:
        return self.num_windows * (self.num_heads // self.heads_per_program) * self.query_blocks

    def constexprs(self, fp32: bool) -> dict:
        return {
            "H": self.height, "W": self.width, "WH": self.window_size[0], "WW": self.window_size[1],
            "SH": self.shift_size[0], "SW": self.shift_size[1],
            "HEADS": self.num_heads, "HEAD_DIM": self.head_dim, "SCALES": tuple(float(s) for s in self.scale),
            "COSINE": bool(self.cosine), "MASK": float(self.mask_value), "PAD_FIRST": bool(self.pad_first),
            "HEADS_PER_PROG": self.heads_per_program,
            "BLOCK_M": self.block_m,
            "BLOCK_KV": self.block_kv(fp32),
            "BLOCK_D": self.block_d,
            "HAS_PAD": self.has_pad, "IEEE_DOT": fp32,
        }


def default_heads_per_program(num_heads: int, window_tokens: int) -> int:
    """Heads per program. 1 keeps the most parallelism; 2-3 share index math and load longer rows.

    Stays 1 until GPU measurements (benchmarks/kernels/window_attention.py times every variant;
    TensorRT times them as tactics) show another choice is better.
    """
    return 1


def default_num_warps(window_tokens: int) -> int:
    return 4  # tiles are at most 64 x 64 (queries x keys) since queries are blocked


def make_config(*, window_size, shift_size, num_heads: int, height: int, width: int, scale,
                channels: int, heads_per_program: int | None = None, num_warps: int | None = None,
                cosine: int = 0, mask_value: float = MASK_VALUE, pad_first: int = 0) -> LaunchConfig:
    """Validated launch config; `window_size`/`shift_size` are ints (square) or (height, width) pairs,
    `scale` a float or one value per head."""
    if channels % num_heads:
        raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
    window, shift = pair(window_size), pair(shift_size)
    if min(window) < 1 or not all(0 <= s < w for s, w in zip(shift, window)):
        raise ValueError(f"shift_size {shift} must be in [0, window_size={window}) per dimension")
    scales = head_scales(scale, num_heads)
    n = window[0] * window[1]
    hpp = heads_per_program or default_heads_per_program(num_heads, n)
    if num_heads % hpp:
        raise ValueError(f"heads_per_program {hpp} must divide num_heads {num_heads}")
    padded = height % window[0] != 0 or width % window[1] != 0
    return LaunchConfig(height, width, window, shift, num_heads, channels // num_heads, scales,
                        hpp, num_warps or default_num_warps(n), padded, bool(cosine), float(mask_value),
                        bool(pad_first) and padded)


def window_attention_triton(qkv, bias, pad_qkv=None, *, window_size, shift_size, num_heads: int,
                            height: int, width: int, scale, cosine: int = 0, mask_value: float = MASK_VALUE,
                            pad_first: int = 0, heads_per_program: int | None = None, num_warps: int | None = None,
                            out=None):
    """Run the kernel on torch tensors: CUDA tensors are compiled, CPU tensors go through Triton's interpreter."""
    import torch

    if qkv.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"WindowAttention kernel supports float16/float32, got {qkv.dtype}")
    B, L, C3 = qkv.shape
    if L != height * width or C3 % 3:
        raise ValueError(f"qkv shape {tuple(qkv.shape)} does not fit height={height} width={width}")
    cfg = make_config(window_size=window_size, shift_size=shift_size, num_heads=num_heads, height=height,
                      width=width, scale=scale, channels=C3 // 3, heads_per_program=heads_per_program,
                      num_warps=num_warps, cosine=cosine, mask_value=mask_value, pad_first=pad_first)
    n = cfg.window_tokens
    if tuple(bias.shape) != (num_heads, n, n):
        raise ValueError(f"bias shape {tuple(bias.shape)} != {(num_heads, n, n)}")
    qkv = qkv.contiguous()
    bias = bias.to(device=qkv.device).contiguous()
    if pad_qkv is None:
        pad_qkv = torch.zeros(C3, device=qkv.device, dtype=qkv.dtype)
    pad_qkv = pad_qkv.to(device=qkv.device).reshape(C3).contiguous()
    if out is None:
        out = torch.empty(B, L, C3 // 3, device=qkv.device, dtype=qkv.dtype)
    if not qkv.is_cuda and not interpreter_active():
        raise RuntimeError("CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before importing triton")
    grid = (B * cfg.programs_per_image,)
    window_attention_kernel[grid](qkv, bias, pad_qkv, B, out, **cfg.constexprs(qkv.dtype == torch.float32),
             num_warps=cfg.num_warps, num_stages=1)
    return out


def signature(dtype: str, bias_dtype: str | None = None, pad_dtype: str | None = None) -> dict:
    """Triton signature for AOT compilation; `dtype` is "fp16" or "fp32"."""
    return {
        "qkv_ptr": f"*{dtype}", "bias_ptr": f"*{bias_dtype or dtype}", "pad_ptr": f"*{pad_dtype or dtype}",
        "batch": "i32", "out_ptr": f"*{dtype}",
    }


def compile_ptx(arch: int, dtype: str, cfg: LaunchConfig):
    """(kernel_name, ptx, metadata) for sm_`arch`, compiled on the CPU (no GPU needed)."""
    from vitdeploy.plugins.ptx import triton_ptx

    if interpreter_active():
        raise RuntimeError("AOT compilation needs the compiler: unset TRITON_INTERPRET")
    if dtype not in ("fp16", "fp32"):
        raise ValueError(f"dtype must be fp16 or fp32, got {dtype!r}")
    consts = cfg.constexprs(dtype == "fp32")
    sig = signature(dtype)
    sig.update({k: "constexpr" for k in consts})
    # TensorRT hands plugins 16-byte (in practice 256-byte) aligned buffers; telling the
    # compiler lets it use 128-bit loads/stores for the qkv rows (the JIT infers this itself).
    return triton_ptx(window_attention_kernel, sig, consts, arch, num_warps=cfg.num_warps, num_stages=1,
                      aligned=("qkv_ptr", "bias_ptr", "pad_ptr", "out_ptr"))


# --- PTX for TensorRT -------------------------------------------------------------------------------
# Triton appends hidden scratch pointers to every kernel; TensorRT's AOT launcher passes exactly
# tensor inputs, extra scalars, outputs (see plugins.ptx.strip_unused_scratch_params).

NUM_KERNEL_ARGS = 5  # qkv, bias, pad_qkv, batch, out


def ptx_for_tensorrt(arch: int, dtype: str, cfg: LaunchConfig):
    """(name, PTX, metadata) whose entry takes exactly the 5 arguments TensorRT passes, checked
    (<= 48 KiB shared memory, pinned ISA) and recorded by `plugins.trt.finish_for_tensorrt`."""
    name, ptx, meta = compile_ptx(arch, dtype, cfg)
    return finish_for_tensorrt("WindowAttention", name, ptx, meta, inputs=3, extras=1, outputs=1)
