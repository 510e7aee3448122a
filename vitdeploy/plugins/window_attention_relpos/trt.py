"""TensorRT face of `WindowAttentionRelPos`: a `tensorrt.plugin` registration whose `aot_impl` hands TensorRT
the PTX of WindowAttention's kernel compiled with its REL_POS branch (`window_attention.trt.launch`), the
launch grid and the one extra scalar (batch). TensorRT is imported only inside these functions.
"""
# No `from __future__ import annotations` here: tensorrt.plugin inspects real annotation objects.

from vitdeploy.plugins.trt import register_once
from vitdeploy.plugins.window_attention.trt import launch, output_desc, plugin_attrs, run_network, tactics_for
from vitdeploy.plugins.window_attention_relpos.spec import SPEC

__all__ = ["SPEC", "launch", "plugin_attrs", "register", "run_one_node", "tactics_for"]


def register() -> None:
    """Register the plugin with `tensorrt.plugin` (idempotent; a failed attempt is re-raised)."""
    register_once(SPEC, _define)


def _define() -> None:
    from typing import List, Tuple, Union

    import numpy as np
    import numpy.typing as npt
    import tensorrt as trt
    import tensorrt.plugin as trtp

    @trtp.register(SPEC.plugin_id)
    def _desc(qkv: trtp.TensorDesc, rel_h: trtp.TensorDesc, rel_w: trtp.TensorDesc, pad_qkv: trtp.TensorDesc,
              window_size: npt.NDArray[np.int32], shift_size: npt.NDArray[np.int32], num_heads: int, height: int,
              width: int, scale: npt.NDArray[np.float32], cosine: int, mask_value: float, pad_first: int,
              partition: int, q_stride: int) -> trtp.TensorDesc:
        return output_desc(qkv, q_stride)

    @trtp.autotune(SPEC.plugin_id)
    def _autotune(qkv: trtp.TensorDesc, rel_h: trtp.TensorDesc, rel_w: trtp.TensorDesc, pad_qkv: trtp.TensorDesc,
                  num_heads: int, outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR",
                                         tactics_for(num_heads))]

    @trtp.aot_impl(SPEC.plugin_id)
    def _aot(qkv: trtp.TensorDesc, rel_h: trtp.TensorDesc, rel_w: trtp.TensorDesc, pad_qkv: trtp.TensorDesc,
             window_size: npt.NDArray[np.int32], shift_size: npt.NDArray[np.int32], num_heads: int, height: int,
             width: int, scale: npt.NDArray[np.float32], cosine: int, mask_value: float, pad_first: int,
             partition: int, q_stride: int, outputs: Tuple[trtp.TensorDesc], tactic: int
             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return launch(qkv, pad_qkv, window_size=window_size, shift_size=shift_size, num_heads=num_heads,
                      height=height, width=width, scale=scale, cosine=cosine, mask_value=mask_value,
                      pad_first=pad_first, partition=partition, q_stride=q_stride, tactic=tactic,
                      fp16=qkv.dtype == trt.float16, rel_pos=True)


def run_one_node(qkv, rel_h, rel_w, pad_qkv, **attrs):
    """Build and run a one-node TensorRT network (FP32 inputs); used by the `trt`-marked test."""
    import tensorrt.plugin as trtp

    register()
    return run_network(trtp.op.vitdeploy.WindowAttentionRelPos, {"qkv": qkv, "rel_h": rel_h, "rel_w": rel_w,
                                                                  "pad_qkv": pad_qkv}, attrs)
