"""Triton kernel for multi-scale deformable attention (the stock plugin's semantics).

One program computes BLOCK_Q queries x all D channels of one (batch, head). For each
level and point it loads the queries' locations and weights, and gathers the four
bilinear corners straight from `value` [N, S, M, D] (a corner is a contiguous D-vector,
so each gather is a row load). Corners outside the map read zero; coordinates are
clamped to [-2, size + 1] first, which changes no result (everything beyond is zero
anyway) but keeps far-out locations from overflowing the int32 conversion.
Accumulation is FP32 for FP16 and FP32 inputs alike.

On the CPU the kernel runs under Triton's interpreter, which must be switched on
(TRITON_INTERPRET=1) before triton is first imported.

Argument order follows TensorRT's AOT convention: tensor inputs (value, spatial_shapes,
level_start_index, sampling_locations, attention_weights), then the extra scalars
(S, Lq, M), then the output, then compile-time constants (L, P, D, block sizes).
"""
from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

KERNEL_NAME = "msda_kernel"
NUM_KERNEL_ARGS = 9  # 5 inputs, S, Lq, M, output


@triton.jit
def msda_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, attw_ptr,
    S, Lq, M,
    out_ptr,
    L: tl.constexpr, P: tl.constexpr, D: tl.constexpr,
    BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_q = tl.program_id(0)
    pid_nm = tl.program_id(1)
    n = pid_nm // M
    m = pid_nm % M
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    qmask = q < Lq
    d = tl.arange(0, BLOCK_D)
    dmask = d < D
    row = (n * Lq + q) * M + m  # index into [N, Lq, M]
    v_base = value_ptr + n.to(tl.int64) * S * M * D + m * D
    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=tl.float32)
    for lvl in tl.static_range(L):
        h = tl.load(shapes_ptr + 2 * lvl)
        w = tl.load(shapes_ptr + 2 * lvl + 1)
        start = tl.load(starts_ptr + lvl)
        hf = h.to(tl.float32)
        wf = w.to(tl.float32)
        for pt in tl.static_range(P):
            k = (row * L + lvl) * P + pt
            lx = tl.load(loc_ptr + 2 * k, mask=qmask, other=0.0).to(tl.float32)
            ly = tl.load(loc_ptr + 2 * k + 1, mask=qmask, other=0.0).to(tl.float32)
            aw = tl.load(attw_ptr + k, mask=qmask, other=0.0).to(tl.float32)
            x = tl.minimum(tl.maximum(lx * wf - 0.5, -2.0), wf + 1.0)
            y = tl.minimum(tl.maximum(ly * hf - 0.5, -2.0), hf + 1.0)
            x0f = tl.floor(x)
            y0f = tl.floor(y)
            fx = x - x0f
            fy = y - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            for corner in tl.static_range(4):
                dy = corner // 2
                dx = corner % 2
                yy = y0 + dy
                xx = x0 + dx
                cw = (fy if dy == 1 else 1.0 - fy) * (fx if dx == 1 else 1.0 - fx)
                ok = qmask & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                tok = start + yy * w + xx
                ptrs = v_base + tok[:, None] * (M * D) + d[None, :]
                v = tl.load(ptrs, mask=ok[:, None] & dmask[None, :], other=0.0).to(tl.float32)
                acc += v * (cw * aw)[:, None]
    out_ptrs = out_ptr + row[:, None] * D + d[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=qmask[:, None] & dmask[None, :])


def interpreter_active() -> bool:
    """True when Triton was imported with TRITON_INTERPRET=1 (kernels then run on the CPU)."""
    return bool(triton.knobs.runtime.interpret)


@dataclass(frozen=True)
class LaunchConfig:
    """What fixes one compiled variant (L, P, D and the tile) plus its grid."""

    num_levels: int
    num_points: int
    head_dim: int
    block_q: int = 32
    num_warps: int = 4

    def constexprs(self) -> dict:
        return {"L": self.num_levels, "P": self.num_points, "D": self.head_dim,
                "BLOCK_Q": self.block_q, "BLOCK_D": max(16, triton.next_power_of_2(self.head_dim))}

    def grid(self, batch, queries, heads):
        """(query blocks, batch * heads); works on ints and on TensorRT's symbolic sizes."""
        return ((queries + self.block_q - 1) // self.block_q, batch * heads)


def msda_triton(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *,
                block_q: int = 32, num_warps: int = 4, out=None):
    """Run the kernel on torch tensors: CUDA tensors are compiled, CPU tensors go through Triton's interpreter.

    Returns [N, Lq, M, D] in value's dtype (FP16 or FP32; locations and weights must match it).
    """
    import torch

    if value.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"MultiscaleDeformableAttention kernel supports float16/float32, got {value.dtype}")
    if sampling_locations.dtype != value.dtype or attention_weights.dtype != value.dtype:
        raise TypeError("value, sampling_locations and attention_weights must share one dtype (as the plugin requires)")
    n, s, m, d = value.shape
    _, lq, m2, nl, p, two = sampling_locations.shape
    if m2 != m or two != 2 or tuple(attention_weights.shape) != (n, lq, m, nl, p):
        raise ValueError(f"inconsistent shapes: value {tuple(value.shape)}, locations {tuple(sampling_locations.shape)}, "
                         f"weights {tuple(attention_weights.shape)}")
    if not value.is_cuda and not interpreter_active():
        raise RuntimeError("CPU tensors need Triton's interpreter: set TRITON_INTERPRET=1 before importing triton")
    dev = value.device
    shapes = spatial_shapes.to(device=dev, dtype=torch.int32).contiguous()
    starts = level_start_index.to(device=dev, dtype=torch.int32).contiguous()
    if tuple(shapes.shape) != (nl, 2) or tuple(starts.shape) != (nl,):
        raise ValueError(f"spatial_shapes {tuple(shapes.shape)} / level_start_index {tuple(starts.shape)} do not fit L={nl}")
    cfg = LaunchConfig(nl, p, d, block_q, num_warps)
    if out is None:
        out = torch.empty(n, lq, m, d, device=dev, dtype=value.dtype)
    msda_kernel[cfg.grid(n, lq, m)](
        value.contiguous(), shapes, starts, sampling_locations.contiguous(), attention_weights.contiguous(),
        s, lq, m, out, **cfg.constexprs(), num_warps=num_warps, num_stages=1,
    )
    return out


def signature(dtype: str) -> dict:
    """Triton signature for AOT compilation; `dtype` is "fp16" or "fp32"."""
    return {"value_ptr": f"*{dtype}", "shapes_ptr": "*i32", "starts_ptr": "*i32", "loc_ptr": f"*{dtype}",
            "attw_ptr": f"*{dtype}", "S": "i32", "Lq": "i32", "M": "i32", "out_ptr": f"*{dtype}"}


def compile_ptx(arch: int, dtype: str, cfg: LaunchConfig):
    """(kernel_name, ptx, metadata) for sm_`arch`, compiled on the CPU (no GPU needed)."""
    from vitdeploy.plugins.ptx import triton_ptx

    if interpreter_active():
        raise RuntimeError("AOT compilation needs the compiler: unset TRITON_INTERPRET")
    if dtype not in ("fp16", "fp32"):
        raise ValueError(f"dtype must be fp16 or fp32, got {dtype!r}")
    consts = cfg.constexprs()
    sig = signature(dtype)
    sig.update({k: "constexpr" for k in consts})
    return triton_ptx(msda_kernel, sig, consts, arch, num_warps=cfg.num_warps, num_stages=1,
                      aligned=("value_ptr", "loc_ptr", "attw_ptr", "out_ptr"))


def ptx_for_tensorrt(arch: int, dtype: str, cfg: LaunchConfig):
    """PTX whose entry takes exactly the 9 arguments TensorRT's AOT launcher passes (Triton's unused
    trailing scratch pointers removed), with its name and metadata, checked by `plugins.trt.finish_for_tensorrt`."""
    from vitdeploy.plugins.trt import finish_for_tensorrt

    name, ptx, meta = compile_ptx(arch, dtype, cfg)
    return finish_for_tensorrt("MultiscaleDeformableAttention", name, ptx, meta, inputs=5, extras=3, outputs=1)
