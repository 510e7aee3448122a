"""TensorRT face of `WindowAttention`: a `tensorrt.plugin` registration with an ahead-of-time Triton kernel.

`register()` declares `vitdeploy::WindowAttention` (output = qkv with its last dim / 3), the
type combinations it supports (all FP32 or all FP16) with one tactic per heads-per-program
variant, and an `aot_impl` that hands TensorRT the PTX of the same Triton kernel the CPU tests
run, its launch grid, and the one extra scalar (batch). With AOT the PTX lives in the engine,
so the engine runs without Python. TensorRT is imported only inside these functions.
"""
# No `from __future__ import annotations` here: tensorrt.plugin inspects real annotation objects.

from vitdeploy.plugins.window_attention import kernel
from vitdeploy.plugins.window_attention.spec import SPEC
from vitdeploy.plugins.base import register_once, target_arch as _target_arch


def target_arch() -> int:
    return _target_arch("WindowAttention")


def tactics_for(num_heads: int) -> list[int]:
    """Tactic t = heads per program (1, 2 or 3 where they divide num_heads); TensorRT times each."""
    return [t for t in (1, 2, 3) if num_heads % t == 0]


def register() -> None:
    """Register the plugin with `tensorrt.plugin` (idempotent; a failed attempt is re-raised, not hidden)."""
    register_once(SPEC, _define)


def _define() -> None:
    """The `tensorrt.plugin` decorators (run once by `register`)."""
    from typing import List, Tuple, Union

    import tensorrt as trt
    import tensorrt.plugin as trtp

    @trtp.register(SPEC.plugin_id)
    def _desc(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc, window_size: int,
              shift_size: int, num_heads: int, height: int, width: int, scale: float) -> trtp.TensorDesc:
        out = qkv.like()
        out.shape_expr[2] = qkv.shape_expr[2] // 3
        return out

    @trtp.autotune(SPEC.plugin_id)
    def _autotune(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc, num_heads: int,
                  outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR", tactics_for(num_heads))]

    @trtp.aot_impl(SPEC.plugin_id)
    def _aot(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc, window_size: int,
             shift_size: int, num_heads: int, height: int, width: int, scale: float,
             outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        channels3 = pad_qkv.shape_expr[0]
        if not channels3.is_constant:
            raise ValueError("WindowAttention: pad_qkv must have a build-time constant length (3*C)")
        cfg = kernel.make_config(window_size=window_size, shift_size=shift_size, num_heads=num_heads,
                                 height=height, width=width, scale=scale, channels=channels3.constant_value() // 3,
                                 heads_per_program=tactic if tactic in tactics_for(num_heads) else 1)
        dtype = "fp16" if qkv.dtype == trt.float16 else "fp32"
        name, ptx, meta = kernel.ptx_for_tensorrt(target_arch(), dtype, cfg)

        batch = qkv.shape_expr[0]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = batch * cfg.programs_per_image(dtype == "fp32")
        launch.block_x = meta.num_warps * 32
        launch.shared_mem = meta.shared
        extra = trtp.SymIntExprs(1)
        extra[0] = trtp.SymInt32(batch)
        return name, ptx, launch, extra

def run_one_node(qkv, bias, pad_qkv, **attrs):
    """Build and run a one-node TensorRT network (FP32 inputs) with the plugin; returns a CUDA tensor.

    Used by the `trt`-marked test to compare the engine with the reference.
    """
    import tensorrt.plugin as trtp

    from vitdeploy.plugins.base import run_plugin_network

    register()
    feeds = {"qkv": qkv.float(), "bias": bias.float(), "pad_qkv": pad_qkv.float()}
    return run_plugin_network(
        feeds,
        lambda network, itensors: network.add_plugin(trtp.op.vitdeploy.WindowAttention(*itensors, **SPEC.read_attrs(attrs)), aot=True),
        (qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3),
        "WindowAttention",
    )
