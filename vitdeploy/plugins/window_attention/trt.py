"""TensorRT face of `WindowAttention`: a `tensorrt.plugin` registration with an ahead-of-time Triton kernel
(`launch` serves the sibling `WindowAttentionRelPos` too: one kernel).

`register()` declares `vitdeploy::WindowAttention` (output = qkv with its tokens / q_stride and its last
dim / 3), the type combinations it supports (all FP32 or all FP16) with one tactic per heads-per-program
variant, and an `aot_impl` that hands TensorRT the PTX of the same Triton kernel the CPU tests run, its
launch grid, and the one extra scalar (batch). With AOT the PTX lives in the engine, so the engine
runs without Python. TensorRT is imported only inside these functions.
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
              width: int, scale: npt.NDArray[np.float32], cosine: int, mask_value: float, pad_first: int,
              partition: int, q_stride: int) -> trtp.TensorDesc:
        return output_desc(qkv, q_stride)

    @trtp.autotune(SPEC.plugin_id)
    def _autotune(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc, num_heads: int,
                  outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR", tactics_for(num_heads))]

    @trtp.aot_impl(SPEC.plugin_id)
    def _aot(qkv: trtp.TensorDesc, bias: trtp.TensorDesc, pad_qkv: trtp.TensorDesc,
             window_size: npt.NDArray[np.int32], shift_size: npt.NDArray[np.int32], num_heads: int, height: int,
             width: int, scale: npt.NDArray[np.float32], cosine: int, mask_value: float, pad_first: int,
             partition: int, q_stride: int, outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return launch(qkv, pad_qkv, window_size=window_size, shift_size=shift_size, num_heads=num_heads,
                      height=height, width=width, scale=scale, cosine=cosine, mask_value=mask_value,
                      pad_first=pad_first, partition=partition, q_stride=q_stride, tactic=tactic,
                      fp16=qkv.dtype == trt.float16)


def output_desc(qkv, q_stride: int):
    """[B, L / q_stride, 3C / 3]: the output in original token order (Hiera's pooled queries are fewer)."""
    out = qkv.like()
    out.shape_expr[2] = qkv.shape_expr[2] // 3
    if q_stride != 1:
        out.shape_expr[1] = qkv.shape_expr[1] // q_stride
    return out


def launch(qkv, pad_qkv, *, window_size, shift_size, num_heads, height, width, scale, cosine, mask_value, pad_first,
           tactic, fp16: bool, partition: int = 0, q_stride: int = 1, rel_pos: bool = False):
    """The aot_impl's body: (kernel name, PTX, launch params, extra scalars) for one tactic."""
    import tensorrt.plugin as trtp

    what = "WindowAttentionRelPos" if rel_pos else SPEC.name
    channels3 = pad_qkv.shape_expr[0]
    if not channels3.is_constant:
        raise ValueError(f"{what}: pad_qkv must have a build-time constant length (3*C)")
    cfg = kernel.make_config(window_size=tuple(int(v) for v in window_size), shift_size=tuple(int(v) for v in shift_size),
                             num_heads=num_heads, height=height, width=width, scale=[float(v) for v in scale],
                             channels=channels3.constant_value() // 3, cosine=cosine, mask_value=mask_value,
                             pad_first=pad_first, partition=partition, q_stride=q_stride, rel_pos=rel_pos,
                             heads_per_program=tactic if tactic in tactics_for(num_heads) else 1)
    name, ptx, meta = kernel.ptx_for_tensorrt(target_arch(), "fp16" if fp16 else "fp32", cfg)
    if meta.shared > MAX_STATIC_SHARED:
        raise ValueError(f"{what}: this variant needs {meta.shared} B of shared memory, more than a launch "
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

    register()
    return run_network(trtp.op.vitdeploy.WindowAttention, {"qkv": qkv, "bias": bias, "pad_qkv": pad_qkv}, attrs)


def run_network(op, feeds: dict, attrs: dict):
    """One `op` node over FP32 `feeds` (qkv first), run by TensorRT; the output as a CUDA tensor."""
    from vitdeploy.plugins.trt import run_plugin_network

    qkv = feeds["qkv"]
    q_stride = int(attrs.get("q_stride", 1))
    return run_plugin_network(
        {k: v.float() for k, v in feeds.items()},
        lambda network, itensors: network.add_plugin(op(*itensors, **plugin_attrs(attrs)), aot=True),
        (qkv.shape[0], qkv.shape[1] // q_stride, qkv.shape[2] // 3),
        str(getattr(op, "__name__", "WindowAttention")),
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
