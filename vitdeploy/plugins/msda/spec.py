"""The multi-scale deformable attention contract, shared by two ONNX node types.

Semantics (both node types): for each query, head and level l, P_l sampling points; each samples
level l of `value` at its location and the samples are summed with their attention weights:

    out[n, q, m] = sum_l sum_{p < P_l} w[n, q, m, l, p] * sample_l(value[n, :, m], loc[n, q, m, l, p])

`default` sampling (Deformable DETR, RT-DETR, RT-DETR v2's default, D-FINE, Mask2Former) is bilinear
on pixel coordinates (x * W - 0.5, y * H - 0.5) with zero padding: grid_sample(2 * loc - 1,
align_corners=False). `discrete` sampling (RT-DETR v2's `decoder_method="discrete"`, transformers'
`multi_scale_deformable_attention_v2`) reads one pixel, column clamp(int(x * W + 0.5), 0, W - 1) and row
clamp(int(y * H + 0.5), 0, H - 1), both products and sums in FP32 as transformers computes them.

Layouts of sampling_locations / attention_weights:
* [N, Lq, M, L, P, 2] / [N, Lq, M, L, P]: every level has P points (Deformable DETR's layout; the only
  one TensorRT's stock plugin takes);
* [N, Lq, M, sum(P_l), 2] / [N, Lq, M, sum(P_l)]: points of all levels concatenated level by level
  (RT-DETR v2 and D-FINE, whose `num_points_list` may differ per level, e.g. D-FINE's [3, 6, 3]).
Both are the same memory order, so one kernel serves both.

`MultiscaleDeformableAttnPlugin_TRT` is the plugin TensorRT ships (libnvinfer_plugin): version
"2" (IPluginV3) from TensorRT 10.11, version "1" (IPluginV2DynamicExt) before and, as the
"Legacy" creator, after; which one a graph asks for follows the TensorRT that builds it
(`machine.stock_msda_version`, recorded in the manifest). `MultiscaleDeformableAttention` (namespace
vitdeploy) is vitdeploy's own Triton implementation of the same op, with the
same inputs and output, selectable with `--msda-impl vitdeploy`.

What was confirmed, and where (TensorRT OSS, `plugin/multiscaleDeformableAttnPlugin/`):

* README.md: 5 inputs in this order -- value `[N, S, M, D]`, spatial_shapes
  `[L, 2]`, level_start_index `[L]`, sampling_locations `[N, Lq, M, L, P, 2]`,
  attention_weights `[N, Lq, M, L, P]`; output `[N, Lq, M, D]` (4-D, *not*
  `[N, Lq, M*D]`: the caller reshapes). No plugin attributes. Version 2
  (IPluginV3) "mirrors version 1 in IO and attributes"; version 1 is deprecated
  since TensorRT 10.11.
* multiscaleDeformableAttnPlugin.cpp (v2): `DMHA_NAME = "MultiscaleDeformableAttnPlugin_TRT"`,
  `DMHA_VERSION = "2"`; `getOutputShapes` = (value[0], locations[1], value[2], value[3]);
  `supportsFormatCombination`: inputs 1 and 2 INT32, inputs 0/3/4 and the output
  all FP32 or all FP16 (same type as value), LINEAR only; `configurePlugin`
  checks ranks 4/2/1/6/5 and that M, L, P, Lq agree; creator has no fields.
* multiscaleDeformableIm2ColCuda.cuh (`ms_deformable_im2col_gpu_kernel`):
  spatial_shapes rows are (H, W); locations[..., 0] is x (width), [..., 1] is y;
  pixel coordinates are `h = y * H - 0.5`, `w = x * W - 0.5` (normalized [0, 1]
  locations, i.e. grid_sample with align_corners=False on grid `2 * loc - 1`);
  bilinear interpolation where each of the 4 corners outside the map reads 0
  (zero padding), and a sample with h <= -1, w <= -1, h >= H or w >= W adds
  nothing; output = sum over levels and points of weight * sample. The FP16
  kernel computes in half (FP32 accumulation is not guaranteed there).
* onnx-tensorrt onnxOpImporters.cpp: an op with no builtin importer goes to
  `FallbackPluginImporter`, which looks the plugin up by `node.op_type`, the
  `plugin_version` attribute (default "1" -- so "2" must be written) and the
  `plugin_namespace` attribute (default ""; TensorRT's stock plugins live in the
  "" namespace). `MultiscaleDeformableAttnPlugin_TRT` is in the parser's
  `onlySupportInt32TRTPlugin` list (INT64 inputs are cast to INT32); vitdeploy
  emits INT32 anyway.

Not confirmed from sources: which ONNX *domain* the node should carry. The
parser dispatches on op_type and does not appear to read the domain; vitdeploy
uses "trt.plugins" (the domain NVIDIA's ModelOpt tooling uses for TensorRT
plugin nodes -- from memory, not re-checked) because the default ONNX domain
would make `onnx.checker` reject the unknown op.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vitdeploy.plugins.spec import ListAttr, PluginSpec, TensorSpec

STOCK_NAME = "MultiscaleDeformableAttnPlugin_TRT"
STOCK_VERSION = "2"
STOCK_DOMAIN = "trt.plugins"

_INPUTS = (
    TensorSpec("value", doc="[N, S, M, D] all levels' value maps, flattened row-major per level and concatenated"),
    TensorSpec("spatial_shapes", "int32", doc="[L, 2] (H, W) of each level"),
    TensorSpec("level_start_index", "int32", doc="[L] offset of each level along S"),
    TensorSpec("sampling_locations", doc="[N, Lq, M, L, P, 2] normalized (x, y) in [0, 1] (may lie outside)"),
    TensorSpec("attention_weights", doc="[N, Lq, M, L, P]"),
)
_OUTPUTS = (TensorSpec("output", doc="[N, Lq, M, D]"),)


@dataclass(frozen=True)
class StockPluginSpec(PluginSpec):
    """A TensorRT stock plugin: empty plugin namespace, but its ONNX node needs a non-default domain."""

    onnx_domain: str = STOCK_DOMAIN

    @property
    def domain(self) -> str:
        return self.onnx_domain


STOCK_SPEC = StockPluginSpec(
    name=STOCK_NAME,
    inputs=_INPUTS,
    outputs=_OUTPUTS,
    attrs={},
    version=STOCK_VERSION,
    namespace="",
    doc="TensorRT's MultiscaleDeformableAttnPlugin_TRT v2 (IPluginV3), FP32/FP16, INT32 shapes.",
)

# Version 1 (IPluginV2DynamicExt): same IO, no attributes; deprecated since TensorRT 10.11 but the one
# older TensorRT has (e.g. JetPack 6's 10.3). The pass emits it in "native" mode, where the graph
# must not depend on TensorRT's Python-plugin support.
STOCK_V1_SPEC = StockPluginSpec(
    name=STOCK_NAME,
    inputs=_INPUTS,
    outputs=_OUTPUTS,
    attrs={},
    version="1",
    namespace="",
    doc="TensorRT's MultiscaleDeformableAttnPlugin_TRT v1 (IPluginV2DynamicExt), for TensorRT before 10.11.",
)

METHODS = ("default", "discrete")

_VITDEPLOY_INPUTS = (
    _INPUTS[0], _INPUTS[1], _INPUTS[2],
    TensorSpec("sampling_locations", doc="[N, Lq, M, L, P, 2] or [N, Lq, M, sum(num_points), 2] normalized (x, y)"),
    TensorSpec("attention_weights", doc="sampling_locations' shape without its last axis"),
)

VITDEPLOY_SPEC = PluginSpec(
    name="MultiscaleDeformableAttention",
    inputs=_VITDEPLOY_INPUTS,
    outputs=_OUTPUTS,
    # num_points: points per level (length L); method: "default" (bilinear, zero padding) or "discrete".
    # Both are compile-time constants of the AOT kernel (loop bounds and code path), hence attributes.
    attrs={"num_points": ListAttr(int), "method": str},
    # Graphs written before these attributes existed (6-D locations, bilinear) read as method "default";
    # their num_points comes from the locations' shape (`ort.compute`).
    defaults={"method": "default"},
    version="1",
    doc="vitdeploy's Triton multi-scale deformable attention: the stock plugin's semantics and IO, plus "
        "per-level point counts and RT-DETR v2's discrete sampling.",
)

SPECS = {"stock": STOCK_SPEC, "vitdeploy": VITDEPLOY_SPEC}


STOCK_SPECS = {"1": STOCK_V1_SPEC, "2": STOCK_SPEC}


def spec_for(impl: str, mode: str = "plugin", stock_version: str = "1") -> PluginSpec:
    """The node type `--msda-impl stock|vitdeploy` selects in a rewrite mode.

    "plugin" mode: the stock plugin at `stock_version` ("1" everywhere, "2" from TensorRT 10.11;
    see machine.stock_msda_version) or vitdeploy's. "native" mode (no vitdeploy/Python
    plugins, e.g. TensorRT 10.3): the stock v1 plugin, which every TensorRT 8.6-11.1 ships.
    """
    from vitdeploy.errors import VitdeployError

    if impl not in SPECS:
        raise VitdeployError(f"unknown --msda-impl '{impl}'", "choose stock or vitdeploy")
    if str(stock_version) not in STOCK_SPECS:
        raise VitdeployError(f"MultiscaleDeformableAttnPlugin_TRT has no version '{stock_version}'", "use 1 or 2")
    if mode == "native" or impl == "stock":
        return STOCK_V1_SPEC if mode == "native" else STOCK_SPECS[str(stock_version)]
    return SPECS[impl]


def check_num_points(num_points, locations_shape) -> tuple[int, ...]:
    """Points per level, checked against a locations shape (6-D or 5-D); None reads them from a 6-D shape.

    Raises ValueError naming the mismatch (the rewrite never emits one; a hand-edited graph can).
    """
    shape = tuple(int(d) if isinstance(d, (int, np.integer)) else d for d in locations_shape)
    if len(shape) not in (5, 6) or shape[-1] != 2:
        raise ValueError(f"sampling_locations must be [N, Lq, M, L, P, 2] or [N, Lq, M, sum(P), 2], got {list(shape)}")
    if num_points is None:
        if len(shape) != 6:
            raise ValueError("5-D sampling_locations need the num_points attribute (points per level)")
        return (shape[4],) * shape[3]
    pts = tuple(int(p) for p in num_points)
    if not pts or any(p < 1 for p in pts):
        raise ValueError(f"num_points must hold at least one positive count per level, got {list(pts)}")
    if len(shape) == 6 and (shape[3] != len(pts) or any(p != shape[4] for p in pts)):
        raise ValueError(f"num_points {list(pts)} do not fit [.., L={shape[3]}, P={shape[4]}, 2] locations "
                         "(per-level counts need the 5-D layout)")
    if len(shape) == 5 and shape[3] != sum(pts):
        raise ValueError(f"num_points {list(pts)} sum to {sum(pts)}, the locations hold {shape[3]} points per query")
    return pts


def vitdeploy_attrs(num_points, method: str = "default") -> dict:
    """The vitdeploy node's attributes (every one written: TensorRT's plugin layer has no defaults)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return {"num_points": [int(p) for p in num_points], "method": method}


def stock_compatible(num_points, method: str) -> str | None:
    """None when TensorRT's stock plugin computes exactly this core, else why it cannot.

    The stock plugin samples bilinearly with zero padding and takes [N, Lq, M, L, P, 2] locations:
    equal point counts per level (a reshape of the concatenated layout), nothing else.
    """
    if method != "default":
        return f"{method} sampling (the stock plugin only samples bilinearly)"
    if len(set(num_points)) > 1:
        return f"per-level point counts {list(num_points)} (the stock plugin takes one P for every level)"
    return None
