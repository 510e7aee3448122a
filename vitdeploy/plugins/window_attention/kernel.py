"""Triton kernel for `WindowAttention` and `WindowAttentionRelPos`: windowed attention without moving
the activation.

One program handles one (batch, window, group of heads, block of up to 64 queries). It gathers its
window's q/k/v rows straight from the original-order qkv tensor and scatters the result back:
- window partition (`GRID` off): roll and partition are folded into the row index ((padded row +
  shift) mod H, per axis, windows wh x ww), padded tokens read `pad_qkv`, the shift mask comes from
  region ids computed in registers;
- grid partition (`GRID`, MaxViT): slot (i, j) of window (a, b) is token (i*H/gh + a, j*W/gw + b);
- query pooling (`QS` > 1, Hiera): query slot i is the max of key slots s*N/QS + i, written to the
  (H/QS, W) output map.
QK^T and PV use tl.dot with FP32 accumulation over 64-key blocks (online softmax); FP32 inputs use IEEE
dots (no TF32) to match the reference. Swin V2 (`COSINE`) L2-normalises the q and k rows in FP32 before
the dot; every head's logit scale is a compile-time constant (`SCALES`).

The bias is either loaded ([heads, N/QS, N], `bias_ptr`) or, for `WindowAttentionRelPos` (`REL_POS`),
computed here: for the query block, RH[i, ky] = q_i · rel_h[y_i - ky + wh - 1] and RW[i, kx] = q_i ·
rel_w[x_i - kx + ww - 1] ([BLOCK_M, 16+] tiles, one table row gather per key row / column), then per
key block bias = RH @ onehot(y_j) + RW @ onehot(x_j), two small dots (FP16: a hi/lo split of RH keeps
it near FP32). Nothing of size [N, N] is ever written.

On the CPU the kernel runs under Triton's interpreter, which must be switched on (TRITON_INTERPRET=1)
before triton is first imported: triton.language's own reductions are jitted at import, so the mode
cannot be chosen per call.

Argument order follows TensorRT's AOT convention: tensor inputs in node order, then the extra scalar
(`batch`), then the output, then compile-time constants. The pointers one node type lacks (rel_h and
rel_w for WindowAttention, bias for WindowAttentionRelPos) are compile-time `None`, so each PTX entry
takes exactly its node's inputs: (qkv, bias, pad_qkv, batch, out) or (qkv, rel_h, rel_w, pad_qkv,
batch, out).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import triton
import triton.language as tl

from vitdeploy.plugins.trt import finish_for_tensorrt
from vitdeploy.plugins.window_attention.spec import MASK_VALUE, check_layout, head_scales, pair

KERNEL_NAME = "window_attention_kernel"

__all__ = [
    "KERNEL_NAME", "NUM_KERNEL_ARGS", "NUM_KERNEL_ARGS_RELPOS", "LaunchConfig", "compile_ptx", "interpreter_active",
    "make_config", "num_kernel_args", "ptx_for_tensorrt", "signature",
    "window_attention_kernel", "window_attention_triton",
]


@triton.jit
def _l2_normalize(x):
    """Rows divided by max(L2 norm, 1e-12), like torch.nn.functional.normalize (Swin V2's q and k)."""
    xf = x.to(tl.float32)
    norm = tl.sqrt(tl.sum(xf * xf, 1))
    return (xf / tl.maximum(norm, 1e-12)[:, None]).to(x.dtype)


@triton.jit
def _source(slot, win_h, win_w, b, H: tl.constexpr, W: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr,
            NWH: tl.constexpr, NWW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
            PAD_FIRST: tl.constexpr, GRID: tl.constexpr):
    """(is a real token, its row in qkv, hs, ws) for window slot `slot` of window (win_h, win_w);
    (hs, ws) is the slot on the shifted, padded map (window partition; the shift mask's coordinates)."""
    r = slot // WW
    c = slot % WW
    if GRID:  # MaxViT's grid: slot (r, c) of window (a, b) is token (r * H/gh + a, c * W/gw + b)
        ph = r * NWH + win_h
        pw = c * NWW + win_w
        hs = ph
        ws = pw
    else:
        hs = win_h * WH + r
        ws = win_w * WW + c
        if PAD_FIRST:  # pad, then roll the padded map (torchvision, Hugging Face)
            ph = (hs + SH) % (NWH * WH)
            pw = (ws + SW) % (NWW * WW)
        else:  # roll, then pad (timm): slots past H x W are padding
            ph = tl.where(hs < H, (hs + SH) % H, H)
            pw = tl.where(ws < W, (ws + SW) % W, W)
    return (ph < H) & (pw < W), b.to(tl.int64) * (H * W) + ph * W + pw, hs, ws


@triton.jit
def _rel_table(q, tab_ptr, pos, valid, d, dmask, L: tl.constexpr, HEAD_DIM: tl.constexpr, RP: tl.constexpr,
               BLOCK_M: tl.constexpr):
    """[BLOCK_M, RP] with column k = q_i · table[pos_i - k + L - 1] for k < L (zeros beyond)."""
    cols = tl.arange(0, RP)
    out = tl.zeros([BLOCK_M, RP], tl.float32)
    qf = q.to(tl.float32)
    for k in tl.static_range(L):
        rows = tab_ptr + (pos - k + L - 1)[:, None] * HEAD_DIM + d[None, :]
        t = tl.load(rows, mask=valid[:, None] & dmask[None, :], other=0.0).to(tl.float32)
        out = tl.where(cols[None, :] == k, tl.sum(qf * t, 1)[:, None], out)
    return out


@triton.jit
def _rel_bias(rel, idx, RP: tl.constexpr, IEEE_DOT: tl.constexpr, DT: tl.constexpr):
    """[BLOCK_M, BLOCK_KV]: rel[i, idx_j] as rel @ onehot(idx) (exact one-hot; FP16 with a hi/lo split)."""
    onehot = (tl.arange(0, RP)[:, None] == idx[None, :])
    if IEEE_DOT:
        return tl.dot(rel, onehot.to(tl.float32), input_precision="ieee")
    hi = rel.to(DT)
    lo = (rel - hi.to(tl.float32)).to(DT)
    oh = onehot.to(DT)
    return tl.dot(hi, oh) + tl.dot(lo, oh)


@triton.jit
def window_attention_kernel(
    qkv_ptr, bias_ptr, relh_ptr, relw_ptr, pad_ptr,
    batch,
    out_ptr,
    H: tl.constexpr, W: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr,
    HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SCALES: tl.constexpr, COSINE: tl.constexpr, MASK: tl.constexpr,
    PAD_FIRST: tl.constexpr, GRID: tl.constexpr, QS: tl.constexpr, REL_POS: tl.constexpr, RPH: tl.constexpr,
    RPW: tl.constexpr,
    HEADS_PER_PROG: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_KV: tl.constexpr, BLOCK_D: tl.constexpr,
    HAS_PAD: tl.constexpr, IEEE_DOT: tl.constexpr,
):
    C: tl.constexpr = HEADS * HEAD_DIM
    N: tl.constexpr = WH * WW
    NQ: tl.constexpr = N // QS  # queries per window (Hiera pools them)
    NWH: tl.constexpr = H // WH if GRID else (H + WH - 1) // WH  # window rows (grid: the row stride)
    NWW: tl.constexpr = W // WW if GRID else (W + WW - 1) // WW
    HP: tl.constexpr = NWH * WH
    WP: tl.constexpr = NWW * WW
    GROUPS: tl.constexpr = HEADS // HEADS_PER_PROG
    NUM_M: tl.constexpr = (NQ + BLOCK_M - 1) // BLOCK_M  # query blocks per window (1 up to 64 tokens)
    NUM_KV: tl.constexpr = (N + BLOCK_KV - 1) // BLOCK_KV  # key blocks

    pid = tl.program_id(0)
    mblk = pid % NUM_M
    rest = pid // NUM_M
    group = rest % GROUPS
    rest = rest // GROUPS
    win = rest % (NWH * NWW)
    b = rest // (NWH * NWW)
    win_h = win // NWW
    win_w = win % NWW
    in_batch = b < batch

    d = tl.arange(0, BLOCK_D)
    dmask = d < HEAD_DIM

    # query slot i of this window: where its row sits in qkv (and, with QS > 1, its QS source slots)
    i = mblk * BLOCK_M + tl.arange(0, BLOCK_M)
    real_i, row_i, hs_i, ws_i = _source(i, win_h, win_w, b, H, W, WH, WW, NWH, NWW, SH, SW, PAD_FIRST, GRID)
    in_i = (i < NQ) & in_batch & real_i
    q_mask = in_i[:, None] & dmask[None, :]
    if QS > 1:  # output map (H/QS, W) in windows (WH/QS, WW); no padding, no shift
        out_row = b.to(tl.int64) * (H // QS * W) + (win_h * (WH // QS) + i // WW) * W + win_w * WW + i % WW
    else:
        out_row = row_i
    out_rows = out_ptr + out_row[:, None] * C + d[None, :]
    # timm's shift mask: region id from the three slices per axis of the padded map
    rid_i = ((hs_i >= HP - WH).to(tl.int32) + (hs_i >= HP - SH).to(tl.int32)) * 3 \
        + (ws_i >= WP - WW).to(tl.int32) + (ws_i >= WP - SW).to(tl.int32)

    for hh in tl.static_range(HEADS_PER_PROG):
        h = group * HEADS_PER_PROG + hh
        col = h * HEAD_DIM
        scale = 0.0  # this head's logit scale: a compile-time constant per head, picked without a load
        for t in tl.static_range(HEADS):
            scale = tl.where(h == t, SCALES[t], scale)
        q = tl.load(qkv_ptr + row_i[:, None] * (3 * C) + col + d[None, :], mask=q_mask, other=0.0)
        for chunk in tl.static_range(1, QS):  # Hiera: max over the QS chunks of the window's slots
            _, row_s, _, _ = _source(i + chunk * NQ, win_h, win_w, b, H, W, WH, WW, NWH, NWW, SH, SW, PAD_FIRST, GRID)
            q = tl.maximum(q, tl.load(qkv_ptr + row_s[:, None] * (3 * C) + col + d[None, :], mask=q_mask, other=0.0))
        if HAS_PAD:
            pq = tl.load(pad_ptr + col + d, mask=dmask, other=0.0).to(q.dtype)
            q = tl.where(in_i[:, None], q, pq[None, :])
        if REL_POS:  # SAM: q_i · rel_h[y_i - ky + WH - 1], q_i · rel_w[x_i - kx + WW - 1], from the raw q
            valid_i = i < N
            rh = _rel_table(q, relh_ptr + h * (2 * WH - 1) * HEAD_DIM, i // WW, valid_i, d, dmask, WH, HEAD_DIM,
                            RPH, BLOCK_M)
            rw = _rel_table(q, relw_ptr + h * (2 * WW - 1) * HEAD_DIM, i % WW, valid_i, d, dmask, WW, HEAD_DIM,
                            RPW, BLOCK_M)
        if COSINE:
            q = _l2_normalize(q)
        # online softmax over key blocks, in base 2: exp2((x - max) * log2 e) == exp(x - max)
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        denom = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for kv in range(NUM_KV):  # a real loop: unrolling 9 key blocks (24x24 windows) costs minutes of compile
            j = kv * BLOCK_KV + tl.arange(0, BLOCK_KV)
            real_j, row_j, hs_j, ws_j = _source(j, win_h, win_w, b, H, W, WH, WW, NWH, NWW, SH, SW, PAD_FIRST, GRID)
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
            s = s * scale
            if REL_POS:
                s += _rel_bias(rh, j // WW, RPH, IEEE_DOT, q.dtype) + _rel_bias(rw, j % WW, RPW, IEEE_DOT, q.dtype)
            else:
                in_pair = (i[:, None] < NQ) & (j[None, :] < N)
                bias = tl.load(bias_ptr + h * (NQ * N) + i[:, None] * N + j[None, :], mask=in_pair, other=0.0)
                s += bias.to(tl.float32)
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
    window_size: tuple[int, int]  # (wh, ww): window, or grid size with partition 1
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
    partition: int = 0  # 0 window, 1 grid (MaxViT)
    q_stride: int = 1  # Hiera's query pooling
    rel_pos: bool = False  # WindowAttentionRelPos: decomposed relative position instead of a bias input

    @property
    def plugin(self) -> str:
        return "WindowAttentionRelPos" if self.rel_pos else "WindowAttention"

    @property
    def window_tokens(self) -> int:
        return self.window_size[0] * self.window_size[1]

    @property
    def query_tokens(self) -> int:
        """Queries per window: the window's tokens, or 1/q_stride of them (Hiera)."""
        return self.window_tokens // self.q_stride

    @property
    def num_windows(self) -> int:
        return math.ceil(self.height / self.window_size[0]) * math.ceil(self.width / self.window_size[1])

    @property
    def block_m(self) -> int:
        """Query rows per program: the whole window up to 64 tokens, else 64-row blocks of it
        (Swin V2's 12x12..24x24 windows; FP32 tiles then stay far below 48 KiB of shared memory);
        32-row blocks for heads wider than 64 (SAM ViT-H's 80: 128-wide tiles), whose FP32 q tile
        alone would take 32 KiB. The same for FP16 and FP32, so the grid does not depend on the type."""
        rows = 64 if self.block_d <= 64 else 32
        return min(rows, max(16, triton.next_power_of_2(self.query_tokens)))

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
        return math.ceil(self.query_tokens / self.block_m)

    @property
    def programs_per_image(self) -> int:
        return self.num_windows * (self.num_heads // self.heads_per_program) * self.query_blocks

    @property
    def output_tokens(self) -> int:
        return self.height * self.width // self.q_stride

    def constexprs(self, fp32: bool) -> dict:
        """Compile-time constants, including the pointer this node type lacks as `None`."""
        absent = {"bias_ptr": None} if self.rel_pos else {"relh_ptr": None, "relw_ptr": None}
        return {
            **absent,
            "H": self.height, "W": self.width, "WH": self.window_size[0], "WW": self.window_size[1],
            "SH": self.shift_size[0], "SW": self.shift_size[1],
            "HEADS": self.num_heads, "HEAD_DIM": self.head_dim, "SCALES": tuple(float(s) for s in self.scale),
            "COSINE": bool(self.cosine), "MASK": float(self.mask_value), "PAD_FIRST": bool(self.pad_first),
            "GRID": self.partition == 1, "QS": self.q_stride, "REL_POS": self.rel_pos,
            "RPH": max(16, triton.next_power_of_2(self.window_size[0])),
            "RPW": max(16, triton.next_power_of_2(self.window_size[1])),
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
                cosine: int = 0, mask_value: float = MASK_VALUE, pad_first: int = 0, partition: int = 0,
                q_stride: int = 1, rel_pos: bool = False) -> LaunchConfig:
    """Validated launch config; `window_size`/`shift_size` are ints (square) or (height, width) pairs,
    `scale` a float or one value per head."""
    if channels % num_heads:
        raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
    window, shift = pair(window_size), pair(shift_size)
    check_layout(window=window, shift=shift, height=height, width=width, partition=partition, q_stride=q_stride,
                 pad_first=pad_first, rel_pos=rel_pos)
    scales = head_scales(scale, num_heads)
    n = window[0] * window[1]
    hpp = heads_per_program or default_heads_per_program(num_heads, n)
    if num_heads % hpp:
        raise ValueError(f"heads_per_program {hpp} must divide num_heads {num_heads}")
    padded = partition == 0 and (height % window[0] != 0 or width % window[1] != 0)
    return LaunchConfig(height, width, window, shift, num_heads, channels // num_heads, scales,
                        hpp, num_warps or default_num_warps(n), padded, bool(cosine), float(mask_value),
                        bool(pad_first) and padded, int(partition), int(q_stride), bool(rel_pos))


def window_attention_triton(qkv, bias, pad_qkv=None, *, window_size, shift_size, num_heads: int,
                            height: int, width: int, scale, cosine: int = 0, mask_value: float = MASK_VALUE,
                            pad_first: int = 0, partition: int = 0, q_stride: int = 1, rel_h=None, rel_w=None,
                            heads_per_program: int | None = None, num_warps: int | None = None, out=None):
    """Run the kernel on torch tensors: CUDA tensors are compiled, CPU tensors go through Triton's interpreter.
    `bias` None with `rel_h`/`rel_w`: WindowAttentionRelPos."""
    import torch

    if qkv.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"WindowAttention kernel supports float16/float32, got {qkv.dtype}")
    B, L, C3 = qkv.shape
    if L != height * width or C3 % 3:
        raise ValueError(f"qkv shape {tuple(qkv.shape)} does not fit height={height} width={width}")
    rel_pos = bias is None
    cfg = make_config(window_size=window_size, shift_size=shift_size, num_heads=num_heads, height=height,
                      width=width, scale=scale, channels=C3 // 3, heads_per_program=heads_per_program,
                      num_warps=num_warps, cosine=cosine, mask_value=mask_value, pad_first=pad_first,
                      partition=partition, q_stride=q_stride, rel_pos=rel_pos)
    n, nq, hd = cfg.window_tokens, cfg.query_tokens, cfg.head_dim
    if rel_pos:
        (wh, ww) = cfg.window_size
        for name, t, rows in (("rel_h", rel_h, 2 * wh - 1), ("rel_w", rel_w, 2 * ww - 1)):
            if t is None or tuple(t.shape) != (num_heads, rows, hd):
                raise ValueError(f"{name} shape {None if t is None else tuple(t.shape)} != {(num_heads, rows, hd)}")
        tensors = [rel_h.to(device=qkv.device).contiguous(), rel_w.to(device=qkv.device).contiguous()]
    else:
        if tuple(bias.shape) != (num_heads, nq, n):
            raise ValueError(f"bias shape {tuple(bias.shape)} != {(num_heads, nq, n)}")
        tensors = [bias.to(device=qkv.device).contiguous()]
    qkv = qkv.contiguous()
    if pad_qkv is None:
        pad_qkv = torch.zeros(C3, device=qkv.device, dtype=qkv.dtype)
    pad_qkv = pad_qkv.to(device=qkv.device).reshape(C3).contiguous()
    if out is None:
        out = torch.empty(B, cfg.output_tokens, C3 // 3, device=qkv.device, dtype=qkv.dtype)
    if not qkv.is_cuda and not interpreter_active():
        raise RuntimeError("CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before importing triton")
    grid = (B * cfg.programs_per_image,)
    consts = cfg.constexprs(qkv.dtype == torch.float32)
    ptrs = dict(zip(("relh_ptr", "relw_ptr") if rel_pos else ("bias_ptr",), tensors))
    window_attention_kernel[grid](qkv_ptr=qkv, pad_ptr=pad_qkv, batch=B, out_ptr=out, **ptrs, **consts,
                                  num_warps=cfg.num_warps, num_stages=1)
    return out


def signature(dtype: str, bias_dtype: str | None = None, pad_dtype: str | None = None, rel_pos: bool = False) -> dict:
    """Triton signature for AOT compilation; `dtype` is "fp16" or "fp32". The pointers the node type lacks
    are constexpr (None), so the entry's parameters are exactly its node's inputs."""
    tables = {"relh_ptr": f"*{bias_dtype or dtype}", "relw_ptr": f"*{bias_dtype or dtype}"}
    return {
        "qkv_ptr": f"*{dtype}",
        "bias_ptr": "constexpr" if rel_pos else f"*{bias_dtype or dtype}",
        **({k: v if rel_pos else "constexpr" for k, v in tables.items()}),
        "pad_ptr": f"*{pad_dtype or dtype}",
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
    sig = signature(dtype, rel_pos=cfg.rel_pos)
    sig.update({k: "constexpr" for k in consts})
    # TensorRT hands plugins 16-byte (in practice 256-byte) aligned buffers; telling the
    # compiler lets it use 128-bit loads/stores for the qkv rows (the JIT infers this itself).
    aligned = ("qkv_ptr", "relh_ptr", "relw_ptr") if cfg.rel_pos else ("qkv_ptr", "bias_ptr")
    return triton_ptx(window_attention_kernel, sig, consts, arch, num_warps=cfg.num_warps, num_stages=1,
                      aligned=(*aligned, "pad_ptr", "out_ptr"))


# --- PTX for TensorRT -------------------------------------------------------------------------------
# Triton appends hidden scratch pointers to every kernel; TensorRT's AOT launcher passes exactly
# tensor inputs, extra scalars, outputs (see plugins.ptx.strip_unused_scratch_params).

NUM_KERNEL_ARGS = 5  # WindowAttention: qkv, bias, pad_qkv, batch, out
NUM_KERNEL_ARGS_RELPOS = 6  # WindowAttentionRelPos: qkv, rel_h, rel_w, pad_qkv, batch, out


def num_kernel_args(cfg: LaunchConfig) -> int:
    return NUM_KERNEL_ARGS_RELPOS if cfg.rel_pos else NUM_KERNEL_ARGS


def ptx_for_tensorrt(arch: int, dtype: str, cfg: LaunchConfig):
    """(name, PTX, metadata) whose entry takes exactly the arguments TensorRT passes for the config's node
    type, checked (<= 48 KiB shared memory, pinned ISA) and recorded by `plugins.trt.finish_for_tensorrt`."""
    name, ptx, meta = compile_ptx(arch, dtype, cfg)
    return finish_for_tensorrt(cfg.plugin, name, ptx, meta, inputs=4 if cfg.rel_pos else 3, extras=1, outputs=1)
