"""The multi-scale deformable attention contract, shared by two ONNX node types.

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

from vitdeploy.plugins.spec import PluginSpec, TensorSpec

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

VITDEPLOY_SPEC = PluginSpec(
    name="MultiscaleDeformableAttention",
    inputs=_INPUTS,
    outputs=_OUTPUTS,
    attrs={},
    version="1",
    doc="vitdeploy's Triton multi-scale deformable attention; same IO and semantics as the stock plugin.",
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
