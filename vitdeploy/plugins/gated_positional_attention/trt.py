"""TensorRT face of `GatedPositionalAttention`: `tensorrt.plugin` registration with an AOT Triton kernel.

Imported only where TensorRT is present (engine build). `register()` declares the plugin's
I/O (output like `v`: [B, N, C], same type), its type combinations (all FP32 or all FP16,
linear) with one tactic per tile config, and an `aot_impl` that compiles the Triton kernel
to PTX for the build GPU. With AOT
the attributes are not serialized into the engine, so `num_heads`/`scale` and head_dim are
compiled into the PTX as constants; N travels as the one extra scalar argument.
"""
# No `from __future__ import annotations`: tensorrt.plugin reads the annotations with
# inspect.signature and compares them with real types (TensorDesc, int, float).
from typing import List, Tuple, Union

from vitdeploy.plugins.gated_positional_attention.spec import SPEC
from vitdeploy.plugins.trt import register_once, target_arch as _target_arch


def target_arch() -> int:
    return _target_arch("GatedPositionalAttention")


def register() -> None:
    """Register the plugin with `tensorrt.plugin` (idempotent; a failed attempt is re-raised, not hidden)."""
    register_once(SPEC, _define)


def _define() -> None:
    """The `tensorrt.plugin` decorators (run once by `register`)."""
    import tensorrt as trt
    import tensorrt.plugin as trtp

    from vitdeploy.plugins.gated_positional_attention import kernel as K

    @trtp.register(SPEC.plugin_id)
    def _desc(qk: trtp.TensorDesc, v: trtp.TensorDesc, pos: trtp.TensorDesc, gate: trtp.TensorDesc,
              num_heads: int, scale: float) -> trtp.TensorDesc:
        return v.like()

    @trtp.autotune(SPEC.plugin_id)
    def _tune(qk: trtp.TensorDesc, v: trtp.TensorDesc, pos: trtp.TensorDesc, gate: trtp.TensorDesc,
              num_heads: int, scale: float, outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        # all FP16 or all FP32; one tactic per tile config (kernel.CONFIGS), TensorRT times each
        return [trtp.AutoTuneCombination(", ".join([t] * 5), "LINEAR", list(range(1, len(K.CONFIGS[d]) + 1)))
                for t, d in (("FP16", "fp16"), ("FP32", "fp32"))]

    @trtp.aot_impl(SPEC.plugin_id)
    def _aot(qk: trtp.TensorDesc, v: trtp.TensorDesc, pos: trtp.TensorDesc, gate: trtp.TensorDesc,
             num_heads: int, scale: float, outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        # the return annotation is required: tensorrt.plugin's _validate_aot_impl raises without one
        dtype = "fp16" if qk.dtype == trt.float16 else "fp32"
        channels = v.shape_expr[2]
        if not channels.is_constant:
            raise ValueError("GatedPositionalAttention needs a static channel dimension")
        head_dim = channels.constant_value() // num_heads
        name, ptx, meta = K.ptx_for_tensorrt(target_arch(), dtype, num_heads, head_dim, scale, tactic)
        block_m = K.config(dtype, tactic)[0]
        batch, tokens = qk.shape_expr[0], qk.shape_expr[1]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(tokens, block_m)
        launch.grid_y = batch * num_heads
        launch.block_x = meta.num_warps * 32
        launch.shared_mem = meta.shared
        extra = trtp.SymIntExprs(1)
        extra[0] = trtp.SymInt32(tokens)
        return name, ptx, launch, extra
