"""TensorRT face of `HaloAttention`: a `tensorrt.plugin` registration with an ahead-of-time Triton kernel.

`register()` declares `vitdeploy::HaloAttention` (output = q's shape with heads*dim_head_v
channels, q's type), the type combinations it supports (all FP32 or all FP16, linear) with one
tactic per tile config (kernel.TACTICS), and an `aot_impl` that hands TensorRT the PTX of the
same Triton kernel the CPU tests run, its launch grid and the one extra scalar (batch). With AOT
the attributes are compiled into the PTX; the engine runs without Python.

TensorRT's plugin layer passes *every* attribute to `aot_impl`, positionally, in registration
order, so `_aot` declares them all in the spec's order; the kv map's H and W must be build-time
constants (only the batch may be dynamic). TensorRT is imported only inside these functions.
"""
# No `from __future__ import annotations`: tensorrt.plugin inspects real annotation objects.
from typing import List, Tuple, Union

from vitdeploy.plugins.trt import register_once, target_arch as _target_arch
from vitdeploy.plugins.halo_attention import kernel
from vitdeploy.plugins.halo_attention.spec import SPEC


def target_arch() -> int:
    return _target_arch("HaloAttention")


def tactics(dtype: str) -> List[int]:
    """1-based tactic ids, one per tile config of `dtype` ("fp16" or "fp32")."""
    return list(range(1, len(kernel.TACTICS[dtype]) + 1))


def _constant(expr, what: str) -> int:
    if not expr.is_constant:
        raise ValueError(f"HaloAttention: {what} must be a build-time constant (only the batch may be dynamic)")
    return int(expr.constant_value())


def register() -> None:
    """Register vitdeploy::HaloAttention with TensorRT's plugin registry (idempotent; once per imported
    tensorrt.plugin, and a failed attempt is re-raised rather than hidden: plugins.trt.register_once)."""
    register_once(SPEC, _define)


def _define() -> None:
    import tensorrt as trt
    import tensorrt.plugin as trtp

    @trtp.register(SPEC.plugin_id)
    def _desc(q: trtp.TensorDesc, kv: trtp.TensorDesc, height_rel: trtp.TensorDesc, width_rel: trtp.TensorDesc,
              block_size: int, halo_size: int, num_heads: int, dim_head_qk: int, dim_head_v: int, scale: float,
              scale_pos_embed: int, block_stride: int) -> trtp.TensorDesc:
        out = q.like()
        out.shape_expr[1] = num_heads * dim_head_v
        return out

    @trtp.autotune(SPEC.plugin_id)
    def _tune(q: trtp.TensorDesc, kv: trtp.TensorDesc, height_rel: trtp.TensorDesc, width_rel: trtp.TensorDesc,
              outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        # all FP16 or all FP32 (q, kv, both tables, out); TensorRT times every tile config of the type
        return [trtp.AutoTuneCombination(", ".join([t] * 5), "LINEAR", tactics(d))
                for t, d in (("FP16", "fp16"), ("FP32", "fp32"))]

    @trtp.aot_impl(SPEC.plugin_id)
    def _aot(q: trtp.TensorDesc, kv: trtp.TensorDesc, height_rel: trtp.TensorDesc, width_rel: trtp.TensorDesc,
             block_size: int, halo_size: int, num_heads: int, dim_head_qk: int, dim_head_v: int, scale: float,
             scale_pos_embed: int, block_stride: int, outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        dtype = "fp16" if q.dtype == trt.float16 else "fp32"
        height = _constant(kv.shape_expr[2], "the kv map height")
        width = _constant(kv.shape_expr[3], "the kv map width")
        cfg = kernel.make_config(height=height, width=width, block_size=block_size, halo_size=halo_size,
                                 block_stride=block_stride, num_heads=num_heads, dim_head_qk=dim_head_qk,
                                 dim_head_v=dim_head_v, scale=scale, scale_pos_embed=scale_pos_embed,
                                 dtype=dtype, tactic=tactic)
        name, ptx, meta = kernel.ptx_for_tensorrt(target_arch(), dtype, cfg)
        batch = q.shape_expr[0]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = cfg.grid_x
        launch.grid_y = batch * num_heads
        launch.block_x = meta.num_warps * 32
        launch.shared_mem = meta.shared
        extra = trtp.SymIntExprs(1)
        extra[0] = trtp.SymInt32(batch)
        return name, ptx, launch, extra


def run_one_node(q, kv, height_rel, width_rel, **attrs):
    """Build and run a one-node TensorRT network (FP32 inputs) with the plugin; returns a CUDA tensor.

    Used by the `trt`-marked test to compare the engine with the reference.
    """
    import tensorrt.plugin as trtp

    from vitdeploy.plugins.trt import run_plugin_network

    register()
    attrs = SPEC.read_attrs(attrs)
    feeds = {"q": q.float(), "kv": kv.float(), "height_rel": height_rel.float(), "width_rel": width_rel.float()}
    out_shape = (q.shape[0], attrs["num_heads"] * attrs["dim_head_v"], q.shape[2], q.shape[3])
    return run_plugin_network(
        feeds,
        lambda network, itensors: network.add_plugin(trtp.op.vitdeploy.HaloAttention(*itensors, **attrs), aot=True),
        out_shape,
        "HaloAttention",
    )
