"""What each TensorRT's ONNX parser accepts: opset/IR range, operators, stock plugins.

Facts only, each with where it was read. Sources (all public):

* onnx/onnx-tensorrt tag ``10.1-GA``: ``docs/operators.md`` (the 10.0/10.1 operator table: "TensorRT 10.0
  supports operators in the inclusive range of opset 9 to opset 20"), ``onnxOpImporters.cpp`` and
  ``ModelImporter.cpp``. TensorRT 10.3 pins a later commit that is not public as git history; its
  ``docs/Changelog.md`` entries for 10.2 and 10.3 list only error-handling changes, GRU/Squeeze importer
  tweaks, tensor ``axes`` for Slice and an updated ScatterElements plugin, so 10.3 = the 10.1 table + those.
* onnx-tensorrt ``docs/Changelog.md`` (10.0 -> 10.15) for what each later release added, and
  ``docs/operators.md`` as of 10.15 ("opset 9 to opset 24") for the newest table.
* NVIDIA/TensorRT ``CHANGELOG.md`` (release/11.1): 11.0 parser "Added support for `Swish` operator";
  NVIDIA/TensorRT release notes v11.5: "Added support for ONNX opset 25", so 11.0-11.4 parse up to 24.
  No public source describes 11.2-11.4 beyond that; their rows equal 11.1's.
* NVIDIA/TensorRT ``plugin/multiscaleDeformableAttnPlugin/*.cpp`` and ``plugin/api/inferPlugin.cpp`` on
  release/10.3, 10.9, 10.10, 10.11, 11.0, 11.1: ``DMHA_VERSION`` is "1" through 10.10, "2" from 10.11,
  where the old creator lives on as ``MultiscaleDeformableAttnPluginCreatorLegacy`` (version "1").

Versions are (major, minor) tuples; a row applies from its version until the next row.
"""
from __future__ import annotations

Version = tuple[int, int]

# The TensorRT versions `vitdeploy lint --trt` names directly (JetPack 6, the first with AOT plugins, newest).
NAMED = ("10.3", "10.9", "11.4")
OLDEST: Version = (10, 0)

# Highest opset each parser documents. The parser itself sets no upper bound (10.1-GA ModelImporter.cpp
# importModel only warns below opset 7), but newer opsets bring ops and attributes it does not know.
OPSET_MAX: tuple[tuple[Version, int], ...] = (
    ((10, 0), 20),  # 10.1-GA docs/operators.md: "opset 9 to opset 20" (10.2/10.3 Changelog: no change)
    ((10, 6), 22),  # Changelog 10.6: "Updated ONNX submodule version to 1.17.0" (ONNX 1.17 = opset 22);
                    # operators.md of that period documents "opset 9 to opset 22"
    ((10, 11), 23),  # Changelog 10.11: "Updated ONNX version to 1.18" (opset 23)
    ((10, 15), 24),  # operators.md 10.15: "opset 9 to opset 24"
    ((11, 5), 25),  # TensorRT v11.5 release notes: "Added support for ONNX opset 25"
)
OPSET_MIN = 9  # every table since 10.0: "inclusive range of opset 9 to ..."

# ONNX release bundled with each parser -> the newest IR version it knows (onnx.helper.VERSION_TABLE).
IR_MAX: tuple[tuple[Version, int, str], ...] = (
    ((10, 0), 10, "1.16"),  # onnx-tensorrt commit ae67f69 "Update ONNX submodule to v1.16"
    ((10, 6), 10, "1.17"),  # Changelog 10.6
    ((10, 11), 11, "1.18"),  # Changelog 10.11
    ((11, 0), 13, "1.20"),  # TensorRT docs, ONNX opset guide: TensorRT 11.x, ONNX package 1.20.0
)

# ai.onnx operators with an importer ("Y" in operators.md), 10.0/10.1 table (10.1-GA docs/operators.md).
ONNX_OPS_10_0 = frozenset((
    "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh", "AveragePool",
    "BatchNormalization", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Constant", "ConstantOfShape",
    "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum", "DeformConv", "DepthToSpace", "DequantizeLinear", "Div",
    "Dropout", "Einsum", "Elu", "Equal", "Erf", "Exp", "Expand", "EyeLike", "Flatten", "Floor", "GRU", "Gather",
    "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool", "Greater",
    "GreaterOrEqual", "GridSample", "GroupNormalization", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "If",
    "ImageScaler", "InstanceNormalization", "IsInf", "IsNaN", "LRN", "LSTM", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "LogSoftmax", "Loop", "LpNormalization", "LpPool", "MatMul", "Max", "MaxPool",
    "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "NonMaxSuppression", "NonZero", "Not",
    "OneHot", "Or", "PRelu", "Pad", "ParametricSoftplus", "Pow", "QuantizeLinear", "RNN", "RandomNormal",
    "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Range", "Reciprocal", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum",
    "ReduceSumSquare", "Relu", "Reshape", "Resize", "ReverseSequence", "RoiAlign", "Round", "ScaledTanh", "Scan",
    "Scatter", "ScatterElements", "ScatterND", "Selu", "Shape", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh", "Size",
    "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split", "Sqrt", "Squeeze", "Sub", "Sum", "Tan",
    "Tanh", "ThresholdedRelu", "Tile", "TopK", "Transpose", "Trilu", "Unsqueeze", "Upsample", "Where", "Xor",
))

# Operators added after 10.0, with the release that added them (onnx-tensorrt Changelog; TensorRT CHANGELOG).
ONNX_OPS_ADDED: dict[str, Version] = {
    "BlackmanWindow": (10, 4), "HammingWindow": (10, 4), "HannWindow": (10, 4),  # Changelog 10.4
    "STFT": (10, 5),  # Changelog 10.5: real-valued STFT
    "Attention": (10, 14),  # Changelog 10.14: "Added support for the `Attention` operator"
    "RotaryEmbedding": (10, 15), "RMSNormalization": (10, 15), "TensorScatter": (10, 15),  # Changelog 10.15
    "Swish": (11, 0),  # TensorRT CHANGELOG 11.0 "Parsers: Added support for `Swish` operator"
}

# "N" rows of operators.md (10.1-GA and 10.15 agree on these; Col2Im appears as N in 10.15).
ONNX_OPS_UNSUPPORTED = frozenset((
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "CenterCropPad",
    "Col2Im", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear", "ImageDecoder",
    "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial", "NegativeLogLikelihoodLoss",
    "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv", "QLinearMatMul", "RegexFullMatch",
    "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength",
    "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit",
    "TfIdfVectorizer", "Unique",
))

# Restrictions that changed between releases (Changelog), as the version from which the old limit is gone.
SCATTERND_REDUCTION_ATTR_OK: Version = (10, 9)  # 10.1-GA onnxOpImporters.cpp:5150 rejects the attribute by
# name (ASSERT_NODE(!attrs.count("reduction"))); Changelog 10.9 "Fixed support for opset 18+ ScatterND" and
# operators.md 10.15 "`reduction` other than `none` is not supported"
PAD_TENSOR_AXES: Version = (10, 4)  # 10.1 operators.md "Pad: `axes` must be an initializer"; Changelog 10.4
SQUEEZE_DYNAMIC_AXES: Version = (10, 7)  # 10.1 operators.md "`axes` must be an initializer"; Changelog 10.7
CUMSUM_DYNAMIC_AXIS: Version = (10, 8)  # 10.1 operators.md "`axis` must be an initializer"; Changelog 10.8

# ONNX element types TensorRT has (10.1-GA importerUtils.cpp convertDtype; DOUBLE is mapped to FLOAT).
TRT_DTYPES = frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT8", "UINT8", "INT32", "INT64", "BOOL", "FLOAT8E4M3FN",
                        "INT4", "FLOAT4E2M1"})

# Plugins the parser narrows INT64 inputs to INT32 for (10.1-GA onnxOpImporters.cpp:118-134,
# onlySupportInt32TRTPlugin); every other plugin receives INT64 tensors as INT64.
INT32_NARROWED_PLUGINS = frozenset({
    "CustomQKVToContextPluginDynamic", "EfficientNMS_TRT", "EfficientNMS_ONNX_TRT", "EfficientNMS_Implicit_TF_TRT",
    "EfficientNMS_Explicit_TF_TRT", "VoxelGeneratorPlugin", "ScatterND", "ROIAlign_TRT", "PillarScatterPlugin",
    "MultiscaleDeformableAttnPlugin_TRT", "CustomEmbLayerNormPluginDynamic",
})

# Stock plugins (libnvinfer_plugin) vitdeploy emits: name -> {version: (first TensorRT, last TensorRT or None)}.
# The parser looks a plugin up by (op_type, plugin_version attribute, default "1", plugin_namespace
# attribute, default ""): 10.1-GA onnxOpImporters.cpp:6440-6449; from 10.10 it retries with the node's
# domain as the namespace (Changelog 10.10).
STOCK_PLUGINS: dict[str, dict[str, tuple[Version, Version | None]]] = {
    "MultiscaleDeformableAttnPlugin_TRT": {
        "1": ((8, 6), None),  # v1 on release/10.3-10.10; the Legacy creator, still "1", on 10.11-11.1
        "2": ((10, 11), None),  # release/10.11 multiscaleDeformableAttnPlugin.cpp: DMHA_VERSION{"2"} (IPluginV3)
    },
}

# vitdeploy's own plugins are tensorrt.plugin plugins with ahead-of-time implementations: TensorRT >= 10.9
# (Changelog 10.9 "Added support for Python AOT plugins"; vitdeploy.machine.AOT_PLUGINS_MIN).
AOT_PLUGINS: Version = (10, 9)

# FP16 fused multi-head attention (TensorRT developer guide, MHA fusion restrictions, as quoted in
# NVIDIA/TensorRT#4167): head size 16..256 and a multiple of 8; INT8 MHA needs Q/DQ before BMM1, after
# the Softmax and after BMM2, head size 16/32/64 and sequences <= 512.
MHA_HEAD_SIZE = (16, 256, 8)


def row(table, version: Version):
    """The entry of a (version, ...) table that applies to `version` (the last row at or below it)."""
    found = table[0]
    for entry in table:
        if entry[0] <= version:
            found = entry
    return found


def opset_max(version: Version) -> int:
    return row(OPSET_MAX, version)[1]


def ir_max(version: Version) -> tuple[int, str]:
    r = row(IR_MAX, version)
    return r[1], r[2]


def onnx_op_since(op: str) -> Version | None:
    """The first TensorRT (>= 10.0) whose parser imports ai.onnx `op`; None if none does."""
    if op in ONNX_OPS_10_0:
        return OLDEST
    return ONNX_OPS_ADDED.get(op)


def opset_since(opset: int) -> Version | None:
    """The first TensorRT whose parser documents `opset`."""
    for v, top in OPSET_MAX:
        if top >= opset:
            return v
    return None
