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
from vitdeploy.plugins.trt import register_once, target_arch as _target_arch


def target_arch() -> int:
    return _target_arch("WindowAttention")


def tactics_for(num_heads: int) -> list[int]:
    """Tactic t = heads per program (1, 2 or 3 where they divide num_heads); TensorRT times each."""
    return [t for t in (1, 2, 3) if num_heads % t == 0]


MAX_STATIC_SHARED = 48 * 1024  # dynamic shared memory a launch gets without cudaFuncSetAttribute


def register() -> None:
    """Register the plugin with `tensorrt.plugin` (idempotent).

    List attributes (window_size, shift_size, scale) reach the plugin as the INT32 / FLOAT32 arrays
    TensorRT's ONNX parser makes of INTS / FLOATS, hence the `numpy.typing.NDArray` annotations.
    Once per imported tensorrt.plugin; a failed attempt is re-raised, not hidden (plugins.trt.register_once).
    """
    register_once(SPEC, _define)


def _define() -> None:
    from typing import List, Tuple, Union

    import numpy as np
    import numpy.typing as npt
    import tensorrt as trt
    import tensorrt.plugin as trtp

    @trtp.register(SPEC.plugin_id)
    def _desc(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc,
              window_size: npt.NDArray[np.int32], shift_size: npt.NDArray[np.int32], num_heads: int, height: int,
              width: int, scale: npt.NDArray[np.float32], cosine: int, mask_value: float, pad_first: int
              ) -> trtp.TensorDesc:
        out = qkv.like()
        out.shape_expr[2] = qkv.shape_expr[2] // 3
        return out

    @trtp.autotune(SPEC.plugin_id)
    def _autotune(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc, num_heads: int,
                  outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR", tactics_for(num_heads))]

    @trtp.aot_impl(SPEC.plugin_id)
    def _aot(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc,
             window_size: npt.NDArray[np.int32], shift_size: npt.NDArray[np.int32], num_heads: int, height: int,
             width: int, scale: npt.NDArray[np.float32], cosine: int, mask_value: float, pad_first: int,
             outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return launch(qkv, pad_qkv, window_size=window_size, shift_size=shift_size, num_heads=num_heads,
                      height=height, width=width, scale=scale, cosine=cosine, mask_value=mask_value,
                      pad_first=pad_first, tactic=tactic, fp16=qkv.dtype == trt.float16)


def launch(qkv, pad_qkv, *, window_size, shift_size, num_heads, height, width, scale, cosine, mask_value, pad_first,
           tactic, fp16: bool):
    """The aot_impl's body: (kernel name, PTX, launch params, extra scalars) for one tactic."""
    import tensorrt.plugin as trtp

    channels3 = pad_qkv.shape_expr[0]
    if not channels3.is_constant:
        raise ValueError("WindowAttention: pad_qkv must have a build-time constant length (3*C)")
    cfg = kernel.make_config(window_size=tuple(int(v) for v in window_size), shift_size=tuple(int(v) for v in shift_size),
                             num_heads=num_heads, height=height, width=width, scale=[float(v) for v in scale],
                             channels=channels3.constant_value() // 3, cosine=cosine, mask_value=mask_value,
                             pad_first=pad_first,
                             heads_per_program=tactic if tactic in tactics_for(num_heads) else 1)
    name, ptx, meta = kernel.ptx_for_tensorrt(target_arch(), "fp16" if fp16 else "fp32", cfg)
    if meta.shared > MAX_STATIC_SHARED:
        raise ValueError(f"WindowAttention: this variant needs {meta.shared} B of shared memory, more than a launch "
                         f"gets without an opt-in ({MAX_STATIC_SHARED} B)")

    batch = qkv.shape_expr[0]
    params = trtp.KernelLaunchParams()
    params.grid_x = batch * cfg.programs_per_image
    params.block_x = meta.num_warps * 32
    params.shared_mem = meta.shared
    extra = trtp.SymIntExprs(1)
    extra[0] = trtp.SymInt32(batch)
    return name, ptx, params, extra


def run_one_node(qkv, bias, pad_qkv, **attrs):
    """Build and run a one-node TensorRT network (FP32 inputs) with the plugin; returns a CUDA tensor.

    Used by the `trt`-marked test to compare the engine with the reference.
    """
    import tensorrt.plugin as trtp

    from vitdeploy.plugins.trt import run_plugin_network

    register()
    feeds = {"qkv": qkv.float(), "bias": bias.float(), "pad_qkv": pad_qkv.float()}
    return run_plugin_network(
        feeds,
        lambda network, itensors: network.add_plugin(trtp.op.vitdeploy.WindowAttention(*itensors, **plugin_attrs(attrs)), aot=True),
        (qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3),
        "WindowAttention",
    )


def plugin_attrs(attrs: dict) -> dict:
    """Spec attributes as `tensorrt.plugin`'s op call wants them: lists as int32 / float32 arrays."""
    import numpy as np

    from vitdeploy.plugins.spec import ListAttr

    out = {}
    for k, v in SPEC.read_attrs(SPEC.node_attrs(**attrs)).items():
        typ = SPEC.attrs[k]
        out[k] = np.asarray(v, np.int32 if typ.item is int else np.float32) if isinstance(typ, ListAttr) else v
    return out
