"""Triton kernel for `GatedPositionalAttention`: content attention flash-style plus g·P·V in one pass.

One program handles BLOCK_M query rows of one (batch, head). It streams key/value tiles
once; for each tile it updates the online-softmax state of the content attention *and*
accumulates the positional term P[rows, tile] @ V[tile] from the same V tile in
registers, so V is read once and neither the N×N content attention nor the blend is
ever written to memory. Rows and columns past N (e.g. N = 196 in 64-wide tiles) are
masked. head_dim 48 runs as two column blocks (32 + 16) so the tensor cores do no padding
work; other sizes split the same way or are padded to a power of two with masked loads.

Argument order (qk, v, pos, gate, N, out) is the TensorRT AOT calling convention:
tensor inputs, then the extra scalar arguments, then the outputs.
"""
from __future__ import annotations

import triton
import triton.language as tl

# (BLOCK_M, BLOCK_N, num_warps, num_stages) per I/O type; TensorRT tactic t uses CONFIGS[dtype][t - 1]
# and times them all (small BLOCK_M gives more programs at batch 1, large ones reuse K/V tiles more at
# batch 64). FP32 uses smaller tiles so shared memory stays under the 48 KiB a kernel gets without an
# opt-in (TensorRT AOT launches); tests/test_gpsa_kernel.py checks every config.
CONFIGS = {
    "fp16": [(64, 64, 4, 2), (32, 64, 4, 2), (16, 64, 2, 2), (128, 64, 8, 1)],
    "fp32": [(32, 32, 4, 2), (16, 32, 2, 2)],
}
TILES = {dtype: cfgs[0] for dtype, cfgs in CONFIGS.items()}  # the defaults


def config(dtype: str, tactic: int = 0) -> tuple[int, int, int, int]:
    """Tile config for a TensorRT tactic (1-based); 0 or unknown -> the default."""
    cfgs = CONFIGS[dtype]
    return cfgs[tactic - 1] if 1 <= tactic <= len(cfgs) else cfgs[0]


@triton.jit
def gpsa_fwd_kernel(
    qk_ptr,
    v_ptr,
    pos_ptr,
    gate_ptr,
    N,
    out_ptr,
    H: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    TAIL_D: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    # head_dim = BLOCK_D (+ TAIL_D): 48 runs as 32 + 16 columns, so no MMA work is spent on padding;
    # a head_dim with no such split is padded up to BLOCK_D and masked (TAIL_D = 0).
    C: tl.constexpr = H * HEAD_DIM
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_mask = offs_m < N
    d_mask = offs_d < HEAD_DIM

    qk_base = qk_ptr + b.to(tl.int64) * N * (2 * C) + h * HEAD_DIM
    v_base = v_ptr + b.to(tl.int64) * N * C + h * HEAD_DIM
    out_base = out_ptr + b.to(tl.int64) * N * C + h * HEAD_DIM
    pos_base = pos_ptr + h.to(tl.int64) * N * N

    q = tl.load(qk_base + offs_m[:, None] * (2 * C) + offs_d[None, :], mask=m_mask[:, None] & d_mask[None, :], other=0.0)
    qk_scale = SCALE * 1.4426950408889634  # softmax via exp2

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc_c = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    acc_p = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if TAIL_D > 0:
        offs_t = BLOCK_D + tl.arange(0, TAIL_D)
        q_t = tl.load(qk_base + offs_m[:, None] * (2 * C) + offs_t[None, :], mask=m_mask[:, None], other=0.0)
        acc_ct = tl.zeros([BLOCK_M, TAIL_D], tl.float32)
        acc_pt = tl.zeros([BLOCK_M, TAIL_D], tl.float32)

    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(qk_base + offs_n[:, None] * (2 * C) + C + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * C + offs_d[None, :], mask=kv_mask, other=0.0)

        s = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)
        if TAIL_D > 0:
            k_t = tl.load(qk_base + offs_n[:, None] * (2 * C) + C + offs_t[None, :], mask=n_mask[:, None], other=0.0)
            v_t = tl.load(v_base + offs_n[:, None] * C + offs_t[None, :], mask=n_mask[:, None], other=0.0)
            s = tl.dot(q_t, tl.trans(k_t), s, input_precision=INPUT_PRECISION)
        s = tl.where(n_mask[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None]).to(v.dtype)
        l_i = l_i * alpha + tl.sum(p.to(tl.float32), 1)
        m_i = m_new
        pp = tl.load(pos_base + offs_m[:, None] * N + offs_n[None, :], mask=m_mask[:, None] & n_mask[None, :],
                     other=0.0).to(v.dtype)

        acc_c = tl.dot(p, v, acc_c * alpha[:, None], input_precision=INPUT_PRECISION)
        acc_p = tl.dot(pp, v, acc_p, input_precision=INPUT_PRECISION)
        if TAIL_D > 0:
            acc_ct = tl.dot(p, v_t, acc_ct * alpha[:, None], input_precision=INPUT_PRECISION)
            acc_pt = tl.dot(pp, v_t, acc_pt, input_precision=INPUT_PRECISION)

    g = tl.load(gate_ptr + h).to(tl.float32)
    w_c = (1.0 - g) / l_i
    out = acc_c * w_c[:, None] + g * acc_p
    tl.store(out_base + offs_m[:, None] * C + offs_d[None, :], out.to(out_ptr.dtype.element_ty),
             mask=m_mask[:, None] & d_mask[None, :])
    if TAIL_D > 0:
        out_t = acc_ct * w_c[:, None] + g * acc_pt
        tl.store(out_base + offs_m[:, None] * C + offs_t[None, :], out_t.to(out_ptr.dtype.element_ty), mask=m_mask[:, None])


def head_split(head_dim: int) -> tuple[int, int]:
    """(BLOCK_D, TAIL_D): head_dim as a power of two plus a power-of-two tail >= 16 (48 = 32 + 16,
    80 = 64 + 16, 96 = 64 + 32), else one power-of-two block padded with masks (24 -> 32, 0)."""
    lead = 1 << (int(head_dim).bit_length() - 1)
    tail = head_dim - lead
    if lead >= 16 and (tail == 0 or (tail >= 16 and tail & (tail - 1) == 0)):
        return lead, tail
    return max(16, triton.next_power_of_2(int(head_dim))), 0


def constexprs(num_heads: int, head_dim: int, scale: float, dtype: str,
               block_m: int | None = None, block_n: int | None = None) -> dict:
    """The kernel's compile-time parameters; `dtype` is "fp16" or "fp32" (FP32 uses IEEE dots, not TF32)."""
    block_m = block_m or TILES[dtype][0]
    block_n = block_n or TILES[dtype][1]
    return {
        "H": int(num_heads),
        "HEAD_DIM": int(head_dim),
        "SCALE": float(scale),
        "BLOCK_M": block_m,
        "BLOCK_N": block_n,
        "BLOCK_D": head_split(head_dim)[0],
        "TAIL_D": head_split(head_dim)[1],
        "INPUT_PRECISION": "ieee" if dtype == "fp32" else "tf32",
    }


def signature(dtype: str) -> dict[str, str]:
    """Runtime argument types for ahead-of-time compilation (`vitdeploy.plugins.ptx.triton_ptx`)."""
    ptr = f"*{dtype}"
    return {"qk_ptr": ptr, "v_ptr": ptr, "pos_ptr": ptr, "gate_ptr": ptr, "N": "i32", "out_ptr": ptr}


def grid(batch: int, n: int, num_heads: int, block_m: int) -> tuple[int, int]:
    return triton.cdiv(n, block_m), batch * num_heads


def gated_positional_attention_triton(qk, v, pos, gate, *, num_heads: int, scale: float,
                                      block_m: int | None = None, block_n: int | None = None,
                                      num_warps: int | None = None, num_stages: int | None = None):
    """Torch-callable launcher: qk [B, N, 2C], v [B, N, C], pos [heads, N, N], gate [heads] -> [B, N, C]."""
    import torch

    if qk.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"GatedPositionalAttention kernel supports fp16/fp32, got {qk.dtype}")
    B, N, C2 = qk.shape
    C = C2 // 2
    hd = C // num_heads
    qk, v = qk.contiguous(), v.to(qk.dtype).contiguous()
    pos, gate = pos.to(qk.dtype).contiguous(), gate.to(qk.dtype).contiguous()
    out = torch.empty(B, N, C, dtype=qk.dtype, device=qk.device)
    dtype = "fp16" if qk.dtype == torch.float16 else "fp32"
    consts = constexprs(num_heads, hd, scale, dtype, block_m, block_n)
    _, _, default_warps, default_stages = TILES[dtype]
    num_warps, num_stages = num_warps or default_warps, num_stages or default_stages
    gpsa_fwd_kernel[grid(B, N, num_heads, consts["BLOCK_M"])](
        qk, v, pos, gate, N, out, **consts, num_warps=num_warps, num_stages=num_stages,
    )
    return out


POINTER_ARGS = ("qk_ptr", "v_ptr", "pos_ptr", "gate_ptr", "out_ptr")
NUM_KERNEL_ARGS = 6  # qk, v, pos, gate | N | out: exactly what TensorRT's AOT launcher passes


def compile_ptx(arch: int, dtype: str, num_heads: int, head_dim: int, scale: float, tactic: int = 0):
    """(name, PTX, metadata) for sm_`arch`, no GPU needed. Pointers are declared 16-byte aligned
    (TensorRT's plugin buffers are), so loads and stores vectorise as under the JIT."""
    from vitdeploy.plugins.ptx import triton_ptx

    block_m, block_n, num_warps, num_stages = config(dtype, tactic)
    return triton_ptx(gpsa_fwd_kernel, signature(dtype), constexprs(num_heads, head_dim, scale, dtype, block_m, block_n),
                      arch, num_warps=num_warps, num_stages=num_stages, aligned=POINTER_ARGS)


def ptx_for_tensorrt(arch: int, dtype: str, num_heads: int, head_dim: int, scale: float, tactic: int = 0):
    """Like `compile_ptx`, with Triton's hidden scratch parameters dropped so the entry takes the 6 TensorRT
    passes, and checked (<= 48 KiB shared memory, pinned ISA) by `plugins.trt.finish_for_tensorrt`."""
    from vitdeploy.plugins.trt import finish_for_tensorrt

    name, ptx, meta = compile_ptx(arch, dtype, num_heads, head_dim, scale, tactic)
    return finish_for_tensorrt("GatedPositionalAttention", name, ptx, meta, inputs=4, extras=1, outputs=1)
