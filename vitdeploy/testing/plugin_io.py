"""Inputs for one plugin node and its PyTorch reference output, on any device.

What the CPU launch emulator (`aot_emulator`) and the GPU launch benchmark
(benchmarks/aot_launch.py) feed a kernel launched as TensorRT launches it, and what they compare
the result with. The reference is each plugin's `reference.py` (the truth every face is tested
against); the inputs follow the node's own shapes, its constants (bias tables, positional
attention, spatial shapes) taken from the node, and values in the range the real model produces
(MSDA sampling locations around [0, 1], attention weights that sum to one).
"""
from __future__ import annotations

import numpy as np

# max |kernel - reference| / max |reference|, per I/O precision. No plugin spec states a tolerance;
# these are the ones the GPU launch benchmark has used since it was written, and the kernel tests'
# per-case tolerances are tighter or equal (FP32 IEEE dots; FP16 tiles with FP32 accumulation).
TOL = {"fp32": 1e-4, "fp16": 2e-2}


def _float_dtype(dtype, i: int):
    import torch

    d = dtype[i] if isinstance(dtype, (list, tuple)) else dtype
    return d if isinstance(d, torch.dtype) else getattr(torch, str(d))


def make_inputs(node, batch: int, dtype, gen, device: str = "cpu") -> list:
    """One tensor per node input at `batch`: constants from the node, the rest random (seeded by `gen`).

    `dtype`: the float type of every float input, or one torch dtype per input (integer inputs
    such as MSDA's spatial shapes stay int32 whatever is given for them).
    """
    import torch

    out = []
    for i, t in enumerate(node.inputs):
        want = _float_dtype(dtype, i)
        if t.constant:
            v = torch.from_numpy(np.ascontiguousarray(node.constants[t.name]))
            out.append(v.to(device) if v.dtype == torch.int32 else v.to(device, want))
            continue
        shape = [batch if isinstance(d, str) else d for d in t.dims]
        if node.op == "MultiscaleDeformableAttention" and t.name == "sampling_locations":
            x = torch.rand(shape, generator=gen) * 1.2 - 0.1  # some samples fall off the map: zero padding
        elif node.op == "MultiscaleDeformableAttention" and t.name == "attention_weights":
            x = torch.softmax(torch.randn(*shape[:3], int(np.prod(shape[3:])), generator=gen), -1).reshape(shape)
        else:
            x = torch.randn(shape, generator=gen)
        out.append(x.to(device, want).contiguous())
    return out


def attributes(node) -> dict:
    """The node's plugin attributes (plugin_namespace / plugin_version dropped)."""
    return {k: v for k, v in node.attr_values().items() if not k.startswith("plugin_")}


def reference(node, inputs):
    """The plugin's PyTorch reference output for `inputs`, in FP32."""
    import torch

    a = attributes(node)
    f32 = [x.float() if x.is_floating_point() else x for x in inputs]
    with torch.no_grad():
        if node.op == "WindowAttention":
            from vitdeploy.plugins.window_attention.reference import window_attention

            return window_attention(*f32, **a).float()
        if node.op == "WindowAttentionRelPos":
            from vitdeploy.plugins.window_attention_relpos.reference import window_attention_relpos

            return window_attention_relpos(*f32, **a).float()
        if node.op == "GatedPositionalAttention":
            from vitdeploy.plugins.gated_positional_attention.reference import gated_positional_attention

            return gated_positional_attention(*f32, **a).float()
        if node.op == "MultiscaleDeformableAttention":
            from vitdeploy.plugins.msda.reference import msda

            return msda(*f32, **a).float()  # num_points, method (a node written before them: none)
        if node.op == "HaloAttention":
            from vitdeploy.plugins.halo_attention.reference import halo_attention

            return halo_attention(*f32, **a).float()
    raise KeyError(f"no reference for plugin {node.op}")


def relative_error(out, ref) -> float:
    """max |out - ref| / max |ref| (NaN where out has NaN)."""
    scale = float(ref.abs().max()) or 1.0
    return float((out.float() - ref).abs().max()) / scale
