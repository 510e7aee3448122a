"""Triton kernel for `HaloAttention`: blocked local attention read straight from the unpadded map.

One program handles BLOCK_M queries of one query block of one (batch, head). It loads its
queries from the NCHW q map, computes the relative logits of every query once (q @ height_relᵀ
and q @ width_relᵀ, [BLOCK_M, 2*win - 1] each, with tensor-core dots), then streams the
block's (block + 2*halo)² neighbourhood in key tiles of BLOCK_N: each key's pixel is computed
from its tile index, read from the *unpadded* kv map with a bounds check, and a pixel outside
the map reads 0 -- timm zero-pads kv and does not mask, so those keys still take part in the
softmax with logit 0·q + rel. The relative logit of (query m, key n) is gathered from the
per-query rows (index u - i + win - 1 and v - j + win - 1) in registers. Softmax is online
(base 2) with FP32 statistics and accumulator; FP32 inputs use IEEE dots (no TF32) to match the
reference. Nothing is unfolded, padded or transposed in memory; the result is stored in NCHW.

On the CPU the kernel runs under Triton's interpreter, which must be switched on
(TRITON_INTERPRET=1) before triton is first imported.

Argument order follows TensorRT's AOT convention: tensor inputs (q, kv, height_rel,
width_rel), then the extra scalar (`batch`), then the output, then compile-time constants.
"""
from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from vitdeploy.plugins.trt import finish_for_tensorrt
from vitdeploy.plugins.halo_attention.spec import check_attrs, window_size

KERNEL_NAME = "halo_attention_kernel"
NUM_KERNEL_ARGS = 6  # q, kv, height_rel, width_rel | batch | out: exactly what TensorRT's AOT launcher passes
POINTER_ARGS = ("q_ptr", "kv_ptr", "hrel_ptr", "wrel_ptr", "out_ptr")
SHARED_MEMORY_LIMIT = 48 * 1024  # what a launch gets without the dynamic shared-memory opt-in

# (BLOCK_M, BLOCK_N, num_warps) per I/O type; TensorRT tactic t uses TACTICS[dtype][t - 1] and times
# them all. BLOCK_M is clamped to the queries of a block (16 for stride-2 blocks of 8), so small
# BLOCK_M buys programs at batch 1 and large ones reuse every key tile for more queries at batch 64.
TACTICS = {
    "fp16": [(64, 64, 4), (32, 64, 4), (16, 64, 2), (64, 32, 4), (64, 128, 8)],
    "fp32": [(32, 32, 4), (16, 32, 2), (64, 32, 4)],
}


@triton.jit
def halo_attention_kernel(
    q_ptr, kv_ptr, hrel_ptr, wrel_ptr,
    batch,
    out_ptr,
    H: tl.constexpr, W: tl.constexpr, BLOCK: tl.constexpr, HALO: tl.constexpr, STRIDE: tl.constexpr,
    HEADS: tl.constexpr, DQK: tl.constexpr, DV: tl.constexpr, SCALE: tl.constexpr, SCALE_POS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK_R: tl.constexpr, IEEE_DOT: tl.constexpr,
):
    BSD: tl.constexpr = BLOCK // STRIDE  # query block side
    M: tl.constexpr = BSD * BSD  # queries per block
    WIN: tl.constexpr = BLOCK + 2 * HALO  # neighbourhood side
    K: tl.constexpr = WIN * WIN  # keys per block
    R: tl.constexpr = 2 * WIN - 1  # rows of each relative table
    NBW: tl.constexpr = W // BLOCK
    HQ: tl.constexpr = H // STRIDE
    WQ: tl.constexpr = W // STRIDE
    M_TILES: tl.constexpr = (M + BLOCK_M - 1) // BLOCK_M
    LOG2E: tl.constexpr = 1.4426950408889634
    QK_SCALE: tl.constexpr = SCALE * LOG2E
    REL_SCALE: tl.constexpr = (SCALE if SCALE_POS else 1.0) * LOG2E

    pid0 = tl.program_id(0)  # block * M_TILES + query tile
    pid1 = tl.program_id(1)  # batch * HEADS + head
    m_tile = pid0 % M_TILES
    blk = pid0 // M_TILES
    b = pid1 // HEADS
    head = pid1 % HEADS
    by = blk // NBW
    bx = blk % NBW
    in_batch = b < batch

    # this program's queries: (i, j) inside the block, pixel (qy, qx) of the q map
    m = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = (m < M) & in_batch
    qi = m // BSD
    qj = m % BSD
    q_pix = (by * BSD + qi) * WQ + bx * BSD + qj
    dq = tl.arange(0, BLOCK_DQK)
    dq_ok = dq < DQK
    q_base = q_ptr + b.to(tl.int64) * (HEADS * DQK * HQ * WQ) + head * (DQK * HQ * WQ)
    q = tl.load(q_base + dq[None, :] * (HQ * WQ) + q_pix[:, None], mask=m_ok[:, None] & dq_ok[None, :], other=0.0)

    # relative logits of each query against every table row: [BLOCK_M, BLOCK_R]
    r = tl.arange(0, BLOCK_R)
    t_mask = dq_ok[:, None] & (r < R)[None, :]
    th_t = tl.load(hrel_ptr + r[None, :] * DQK + dq[:, None], mask=t_mask, other=0.0).to(q.dtype)  # [DQK, R]
    tw_t = tl.load(wrel_ptr + r[None, :] * DQK + dq[:, None], mask=t_mask, other=0.0).to(q.dtype)
    if IEEE_DOT:
        rel_h = tl.dot(q, th_t, input_precision="ieee") * REL_SCALE
        rel_w = tl.dot(q, tw_t, input_precision="ieee") * REL_SCALE
    else:
        rel_h = tl.dot(q, th_t) * REL_SCALE
        rel_w = tl.dot(q, tw_t) * REL_SCALE

    dv = tl.arange(0, BLOCK_DV)
    dv_ok = dv < DV
    kv_base = kv_ptr + b.to(tl.int64) * (HEADS * (DQK + DV) * H * W) + head * ((DQK + DV) * H * W)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start in range(0, K, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < K
        ku = n // WIN
        kw = n % WIN
        ky = by * BLOCK + ku - HALO
        kx = bx * BLOCK + kw - HALO
        # a halo pixel outside the map is a zero key/value (timm's zero padding), not a masked one
        inside = n_ok & (ky >= 0) & (ky < H) & (kx >= 0) & (kx < W) & in_batch
        pix = ky * W + kx
        k_t = tl.load(kv_base + dq[:, None] * (H * W) + pix[None, :], mask=dq_ok[:, None] & inside[None, :], other=0.0)
        if IEEE_DOT:
            s = tl.dot(q, k_t, input_precision="ieee")
        else:
            s = tl.dot(q, k_t)
        # relative logit of (m, n): table rows u - i + win - 1 and v - j + win - 1 (clamped: only
        # padding rows/columns, masked below, fall outside)
        idx_h = tl.minimum(tl.maximum(ku[None, :] - qi[:, None] + (WIN - 1), 0), BLOCK_R - 1)
        idx_w = tl.minimum(tl.maximum(kw[None, :] - qj[:, None] + (WIN - 1), 0), BLOCK_R - 1)
        rel = tl.gather(rel_h, idx_h, 1) + tl.gather(rel_w, idx_w, 1)
        s = tl.where(n_ok[None, :], s * QK_SCALE + rel, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(kv_base + (DQK + dv)[None, :] * (H * W) + pix[:, None], mask=inside[:, None] & dv_ok[None, :], other=0.0)
        if IEEE_DOT:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    o = acc / l_i[:, None]
    out_base = out_ptr + b.to(tl.int64) * (HEADS * DV * HQ * WQ) + head * (DV * HQ * WQ)
    tl.store(out_base + dv[None, :] * (HQ * WQ) + q_pix[:, None], o.to(out_ptr.dtype.element_ty),
             mask=m_ok[:, None] & dv_ok[None, :])


def interpreter_active() -> bool:
    """True when Triton was imported with TRITON_INTERPRET=1 (kernels then run on the CPU)."""
    return bool(triton.knobs.runtime.interpret)


def _pow2(n: int) -> int:
    return max(16, triton.next_power_of_2(int(n)))


@dataclass(frozen=True)
class LaunchConfig:
    """Everything that fixes one compiled variant of the kernel plus its grid."""

    height: int  # kv map
    width: int
    block_size: int
    halo_size: int
    block_stride: int
    num_heads: int
    dim_head_qk: int
    dim_head_v: int
    scale: float
    scale_pos_embed: int
    block_m: int
    block_n: int
    num_warps: int

    @property
    def queries_per_block(self) -> int:
        return (self.block_size // self.block_stride) ** 2

    @property
    def num_blocks(self) -> int:
        return (self.height // self.block_size) * (self.width // self.block_size)

    @property
    def grid_x(self) -> int:
        """Programs along x: blocks x query tiles (grid y = batch x heads)."""
        return self.num_blocks * triton.cdiv(self.queries_per_block, self.block_m)

    def constexprs(self, fp32: bool) -> dict:
        win = window_size(self.block_size, self.halo_size)
        return {
            "H": self.height, "W": self.width, "BLOCK": self.block_size, "HALO": self.halo_size,
            "STRIDE": self.block_stride, "HEADS": self.num_heads, "DQK": self.dim_head_qk, "DV": self.dim_head_v,
            "SCALE": float(self.scale), "SCALE_POS": bool(self.scale_pos_embed),
            "BLOCK_M": self.block_m, "BLOCK_N": self.block_n,
            "BLOCK_DQK": _pow2(self.dim_head_qk), "BLOCK_DV": _pow2(self.dim_head_v), "BLOCK_R": _pow2(2 * win - 1),
            "IEEE_DOT": fp32,
        }


def tactic_tiles(dtype: str, tactic: int = 0) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps) for a TensorRT tactic (1-based); 0 or unknown -> the default."""
    tiles = TACTICS[dtype]
    return tiles[tactic - 1] if 1 <= tactic <= len(tiles) else tiles[0]


def make_config(*, height: int, width: int, block_size: int, halo_size: int, block_stride: int, num_heads: int,
                dim_head_qk: int, dim_head_v: int, scale: float, scale_pos_embed: int, dtype: str = "fp16",
                tactic: int = 0, block_m: int | None = None, block_n: int | None = None,
                num_warps: int | None = None) -> LaunchConfig:
    check_attrs(block_size=block_size, halo_size=halo_size, num_heads=num_heads, dim_head_qk=dim_head_qk,
                dim_head_v=dim_head_v, block_stride=block_stride, scale_pos_embed=scale_pos_embed)
    if height % block_size or width % block_size:
        raise ValueError(f"HaloAttention: map {height}x{width} is not a multiple of block_size {block_size}")
    if dtype not in TACTICS:
        raise ValueError(f"dtype must be fp16 or fp32, got {dtype!r}")
    bm, bn, nw = tactic_tiles(dtype, tactic)
    queries = (block_size // block_stride) ** 2
    bm = min(block_m or bm, _pow2(queries))  # never more rows than a block has (16 for stride-2 blocks of 8)
    return LaunchConfig(height, width, block_size, halo_size, block_stride, num_heads, dim_head_qk, dim_head_v,
                        float(scale), int(scale_pos_embed), bm, block_n or bn, num_warps or nw)


def halo_attention_triton(q, kv, height_rel, width_rel, *, block_size: int, halo_size: int, num_heads: int,
                          dim_head_qk: int, dim_head_v: int, scale: float, scale_pos_embed: int, block_stride: int,
                          tactic: int = 0, block_m: int | None = None, block_n: int | None = None,
                          num_warps: int | None = None, out=None):
    """Run the kernel on torch tensors: CUDA tensors are compiled, CPU tensors go through Triton's interpreter."""
    import torch

    if q.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"HaloAttention kernel supports float16/float32, got {q.dtype}")
    B, Cq, Hq, Wq = q.shape
    _, Ckv, H, W = kv.shape
    win = window_size(block_size, halo_size)
    if (Cq != num_heads * dim_head_qk or Ckv != num_heads * (dim_head_qk + dim_head_v)
            or (Hq, Wq) != (H // block_stride, W // block_stride) or kv.shape[0] != B):
        raise ValueError(f"q {tuple(q.shape)} / kv {tuple(kv.shape)} do not fit heads={num_heads}, "
                         f"dims {dim_head_qk}/{dim_head_v}, stride {block_stride}")
    if tuple(height_rel.shape) != (2 * win - 1, dim_head_qk) or tuple(width_rel.shape) != (2 * win - 1, dim_head_qk):
        raise ValueError(f"relative tables {tuple(height_rel.shape)} / {tuple(width_rel.shape)} must be [{2 * win - 1}, {dim_head_qk}]")
    dtype = "fp16" if q.dtype == torch.float16 else "fp32"
    cfg = make_config(height=H, width=W, block_size=block_size, halo_size=halo_size, block_stride=block_stride,
                      num_heads=num_heads, dim_head_qk=dim_head_qk, dim_head_v=dim_head_v, scale=scale,
                      scale_pos_embed=scale_pos_embed, dtype=dtype, tactic=tactic, block_m=block_m,
                      block_n=block_n, num_warps=num_warps)
    q = q.contiguous()
    kv = kv.to(q.dtype).contiguous()
    height_rel = height_rel.to(device=q.device, dtype=q.dtype).contiguous()
    width_rel = width_rel.to(device=q.device, dtype=q.dtype).contiguous()
    if out is None:
        out = torch.empty(B, num_heads * dim_head_v, Hq, Wq, device=q.device, dtype=q.dtype)
    if not q.is_cuda and not interpreter_active():
        raise RuntimeError("CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before importing triton")
    grid = (cfg.grid_x, B * num_heads)
    halo_attention_kernel[grid](q, kv, height_rel, width_rel, B, out, **cfg.constexprs(dtype == "fp32"),
                                num_warps=cfg.num_warps, num_stages=1)
    return out


def signature(dtype: str) -> dict[str, str]:
    """Runtime argument types for ahead-of-time compilation; `dtype` is "fp16" or "fp32"."""
    ptr = f"*{dtype}"
    return {"q_ptr": ptr, "kv_ptr": ptr, "hrel_ptr": ptr, "wrel_ptr": ptr, "batch": "i32", "out_ptr": ptr}


def compile_ptx(arch: int, dtype: str, cfg: LaunchConfig):
    """(kernel_name, ptx, metadata) for sm_`arch`, compiled on the CPU (no GPU needed)."""
    from vitdeploy.plugins.ptx import triton_ptx

    if interpreter_active():
        raise RuntimeError("AOT compilation needs the compiler: unset TRITON_INTERPRET")
    if dtype not in TACTICS:
        raise ValueError(f"dtype must be fp16 or fp32, got {dtype!r}")
    consts = cfg.constexprs(dtype == "fp32")
    sig = signature(dtype)
    sig.update({k: "constexpr" for k in consts})
    return triton_ptx(halo_attention_kernel, sig, consts, arch, num_warps=cfg.num_warps, num_stages=1,
                      aligned=POINTER_ARGS)


def ptx_for_tensorrt(arch: int, dtype: str, cfg: LaunchConfig):
    """(name, PTX, metadata) whose entry takes exactly the 6 arguments TensorRT passes.

    Refuses a variant that needs more shared memory than a launch gets without an opt-in.
    """
    name, ptx, meta = compile_ptx(arch, dtype, cfg)
    if meta.shared > SHARED_MEMORY_LIMIT:
        raise ValueError(f"HaloAttention {dtype} tiles {cfg.block_m}x{cfg.block_n} need {meta.shared} B of shared "
                         f"memory (> {SHARED_MEMORY_LIMIT})")
    # scratch parameters dropped, ABI/shared memory/pinned ISA checked, recorded for the manifest
    return finish_for_tensorrt("HaloAttention", name, ptx, meta, inputs=4, extras=1, outputs=1)
