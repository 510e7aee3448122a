"""INT8 as explicit Q/DQ ONNX, calibrated with ONNX Runtime on the CPU.

The recipe transformer deployments converged on (FasterTransformer, ModelOpt):
quantize only the inputs of Linear layers (MatMul/Gemm whose second operand is a
constant weight) and Convs, weights per output channel and activations per tensor,
both symmetric (zero point 0, as TensorRT requires); leave the attention BMMs
(q·kᵀ, attn·v), LayerNorm, Softmax, GELU, residual Adds and plugin nodes
unquantized, and put no Q/DQ on the outputs, so TensorRT's explicit-quantization
fusions fold each DQ->MatMul into an INT8 GEMM and the FP16 attention can become
TensorRT's fused attention kernel. Everything that is not INT8 is FP16: TensorRT
10/11 strongly typed networks take precision from the ONNX alone. Every activation
scale must be a normal FP16 number (`check_activation_scales`).

`onnxruntime.quantization` does the work. We run its calibrators ourselves
(rather than through `quantize_static`) so that graphs with vitdeploy plugin
nodes calibrate through `vitdeploy.onnxrt.session`, so entropy calibration can
use enough histogram bins, and so the measured ranges become a cache we own.
"""
from __future__ import annotations

import ast
import contextlib
import fnmatch
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from vitdeploy.calibration.cache import check_cache, make_cache, ort_method, to_tensors_data
from vitdeploy.calibration.data import CalibrationData, check_shape, progress
from vitdeploy.calibration.precision import declare_plugin_outputs, convert_fp16
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxgraph import model_input

QUANT_OPS = ("MatMul", "Gemm", "Conv")
ENTROPY_BINS = 1024  # TensorRT uses 2048; ORT's pure-Python KL search is O(bins^2), 1024 keeps it fast
PERCENTILE = 99.99

# What makes ORT's QDQ output what TensorRT's explicit quantization expects.
QDQ_EXTRA_OPTIONS = {
    "ActivationSymmetric": True,  # zero point 0 for activations
    "WeightSymmetric": True,
    "OpTypesToExcludeOutputQuantization": list(QUANT_OPS),  # Q/DQ on inputs only, never on outputs
    "QuantizeBias": False,  # biases stay float (FP16); TensorRT fuses them into the INT8 GEMM epilogue
    "DedicatedQDQPair": False,  # one Q/DQ per tensor, shared by its consumers (q/k/v)
    "ForceQuantizeNoInputCheck": False,  # never quantize Transpose/Reshape on their own
    "QDQKeepRemovableActivations": True,  # never drop activations the Q/DQ would absorb
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # MatMul weights are K x N: per output channel N
}


def node_scope(node: onnx.NodeProto) -> str:
    """The PyTorch module path of a node (e.g. "blocks.0.attn.qkv") when the exporter recorded it."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = [s for s in ast.literal_eval(p.value) if s]  # a Python list literal
            except (ValueError, SyntaxError, TypeError):
                return ""
            mods = scopes[:-1] or scopes
            return mods[-1].removeprefix("inner.") if mods else ""
    return ""


def quantizable_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in QUANT_OPS and n.domain in ("", "ai.onnx")]


BMM_REASON = "activation x activation MatMul (attention): FP16, for TensorRT's fused attention"
CONST_A_REASON = "constant first operand: not a weight TensorRT can quantize per channel"


def _constants(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}


def structural_exclusions(model: onnx.ModelProto) -> dict[str, str]:
    """MatMul/Gemm/Conv that must stay FP16 whatever the user asks: only a constant weight operand
    (input 1) is quantized. Activation x activation MatMuls (q·kᵀ, attn·v) keep attention in FP16, the
    form of TensorRT's FP16 fused attention (INT8 MHA would also need Q/DQ after the second BMM,
    which TensorRT's recipe places and ours does not); a constant *first* operand (ConViT's folded g·P)
    would get a per-channel DQ on a non-weight input, which TensorRT's IDequantizeLayer does not support."""
    const = _constants(model)
    why = {}
    for n in quantizable_nodes(model):
        if len(n.input) < 2 or n.input[1] not in const:
            why[n.name] = BMM_REASON if n.op_type == "MatMul" else "non-constant weight"
        elif n.input[0] in const:
            why[n.name] = CONST_A_REASON
    return why


def select_exclusions(model: onnx.ModelProto, exclude=(), quantize_first_last=False) -> dict[str, str]:
    """node name -> why it stays in FP16 (attention BMM, constant first operand, first/last layer, or the
    --int8-exclude pattern it matched)."""
    why = structural_exclusions(model)
    nodes = [n for n in quantizable_nodes(model) if n.name not in why]
    if nodes and not quantize_first_last:
        why[nodes[0].name] = "first layer"
        why.setdefault(nodes[-1].name, "last layer")
    used = set()
    for n in quantizable_nodes(model):
        scope = node_scope(n)
        for pat in exclude or ():
            if fnmatch.fnmatchcase(n.name, pat) or (scope and fnmatch.fnmatchcase(scope, pat)):
                why.setdefault(n.name, f"--int8-exclude {pat}")
                used.add(pat)
    unused = [p for p in exclude or () if p not in used]
    if unused:
        raise VitdeployError(
            f"--int8-exclude {unused[0]} matches no MatMul/Gemm/Conv node",
            "patterns match node names or module paths, e.g. 'blocks.0.*' or '*head*'",
        )
    return why


FP16_TINY = float(np.finfo(np.float16).tiny)  # 6.1e-5: smallest normal FP16 number


def tiny_range_exclusions(model: onnx.ModelProto, ranges: dict) -> dict[str, str]:
    """Layers whose calibrated input range is so small that its INT8 scale (range / 127) would be an
    FP16 subnormal (or zero): they stay FP16 (a tensor spanning +-0.002 loses nothing there) instead of
    getting a scale that `check_activation_scales` must refuse. Seen with random weights (e.g. a
    Deformable DETR projection); the manifest names each one."""
    why = {}
    for n in quantizable_nodes(model):
        r = ranges.get(n.input[0]) if n.input else None
        if r is None:
            continue
        amax = max(abs(float(r[0])), abs(float(r[1])))
        if amax / 127.0 < FP16_TINY:
            why[n.name] = f"input {n.input[0]} spans only +-{amax:.3g}: its INT8 scale would be an FP16 subnormal"
    return why


class _Reader:
    """ORT CalibrationDataReader over CalibrationData, advancing a progress bar."""

    def __init__(self, data: CalibrationData, input_name: str, batch: int, advance):
        self._it = data.batches(batch)
        self.input_name, self.advance = input_name, advance

    def get_next(self):
        x = next(self._it, None)
        if x is None:
            return None
        self.advance(len(x))
        return {self.input_name: x}


def _calibrator(method: str, model_path: str, augmented_path: str, entropy_bins: int, percentile: float):
    from onnxruntime.quantization import calibrate as c

    common = dict(op_types_to_calibrate=list(QUANT_OPS), augmented_model_path=augmented_path, symmetric=True)
    if method == "minmax":
        return c.MinMaxCalibrater(model_path, **common)
    if method == "entropy":
        return c.EntropyCalibrater(model_path, **common, num_bins=entropy_bins, num_quantized_bins=128)
    if method == "percentile":
        return c.PercentileCalibrater(model_path, **common, num_bins=2048, percentile=percentile)
    ort_method(method)  # raises the one-line error


def calibrate(model: onnx.ModelProto, calib: CalibrationData, method: str = "entropy", batch: int = 8,
              entropy_bins: int = ENTROPY_BINS, percentile: float = PERCENTILE, show_progress: bool = True):
    """Run `calib` through the model and return ORT's TensorsData (per-tensor ranges)."""
    from vitdeploy.onnxrt import session

    if len(calib) == 0:
        raise VitdeployError("no calibration images", "pass a folder or array file with images")
    from vitdeploy.onnx_files import as_file, is_large

    large = is_large(model)  # over the protobuf limit: declared in place (no copy), written with external data
    m = model if large else onnx.ModelProto.FromString(model.SerializeToString())
    declare_plugin_outputs(m, onnx.TensorProto.FLOAT)
    in_name, shape = model_input(m)
    check_shape(calib.images, calib.source or "the calibration data", shape)
    parts = [calib]
    if shape and isinstance(shape[0], int) and shape[0] > 0:  # static batch: whole batches only
        batch = shape[0]
        if len(calib) < batch:
            reps = -(-batch // len(calib))
            calib = CalibrationData(np.concatenate([calib.images] * reps)[:batch], None, calib.source)
        else:
            calib = calib.take(len(calib) - len(calib) % batch)
        parts = [calib]
    elif len(calib) % batch:
        # Dynamic batch: ORT's calibrators stack the outputs of one collect_data call into one array, so
        # every batch of a call must have the same size. Whole batches first, then the rest in a second
        # call; both calibrators merge ranges/histograms across calls.
        whole = len(calib) - len(calib) % batch
        parts = [p for p in (_slice(calib, 0, whole), _slice(calib, whole, len(calib))) if len(p)]
    with tempfile.TemporaryDirectory(prefix="vitdeploy-calib-") as tmp, as_file(m) as src:
        aug = os.path.join(tmp, "augmented.onnx")
        cal = _calibrator(method, str(src), aug, entropy_bins, percentile)
        cal.augment_graph()
        if large:  # the augmented copy's tensors go to disk as they are written, and out of memory
            onnx.save_model(cal.model, aug, save_as_external_data=True, location="augmented.onnx.data")
        else:
            onnx.save(cal.model, aug)
        cal.infer_session = session(aug)  # runs plugin nodes through their ORT faces
        with progress(len(calib), f"calibrating ({method})", show_progress) as advance:
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints histogram details
                for part in parts:
                    cal.collect_data(_Reader(part, in_name, min(batch, len(part)), advance))
        collector = getattr(cal, "collector", None)
        search = getattr(collector, "get_entropy_threshold", None) if method == "entropy" else None
        with progress(len(getattr(collector, "histogram_dict", {}) or {}), "entropy threshold search", show_progress and
                      search is not None, unit="tensors") as advance:
            if search is not None:  # ORT searches each tensor's histogram in turn: count them
                def counted(*args, **kwargs):
                    out = search(*args, **kwargs)
                    advance(1)
                    return out

                collector.get_entropy_threshold = counted
            with contextlib.redirect_stdout(io.StringIO()):
                ranges = cal.compute_data()
    return ranges


def _slice(calib: CalibrationData, start: int, stop: int) -> CalibrationData:
    labels = None if calib.labels is None else calib.labels[start:stop]
    return CalibrationData(calib.images[start:stop], labels, calib.source)


@contextlib.contextmanager
def _quiet_ort_logging():
    """ORT's quantizer logs advice on the root logger ("consider pre-processing"); keep CLI output to our lines."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def model_sha256(model_path: str | os.PathLike) -> str:
    """The graph's sha256 with its external data (the file's own hash when it has none)."""
    from vitdeploy.onnx_files import sha256_onnx

    return sha256_onnx(model_path)


def quantize_int8(model_path, calib: CalibrationData | None, method: str = "entropy", exclude=(),
                  quantize_first_last: bool = False, cache: dict | None = None, batch: int = 8,
                  show_progress: bool = True, entropy_bins: int = ENTROPY_BINS,
                  extra_exclusions: dict[str, str] | None = None) -> tuple[onnx.ModelProto, dict, dict]:
    """(Q/DQ + FP16 ONNX, calibration cache, summary) for the FP32 ONNX at `model_path`.

    With `cache` (from an earlier run on the same file) calibration is skipped; a cache
    measured on another model or with another method raises VitdeployError.
    `extra_exclusions` ({node name: reason}) keeps more layers FP16 (`carry.py`: layers the
    build kept FP16, or without a carried range).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    model_path = Path(model_path)
    sha = model_sha256(model_path)
    model = onnx.load(str(model_path))
    fold_constant_identities(model)
    if not quantizable_nodes(model):
        raise VitdeployError(f"{model_path.name} has no MatMul/Gemm/Conv to quantize", "INT8 would change nothing")
    if cache is not None:
        check_cache(cache, sha, method)
    elif calib is None:
        raise VitdeployError("INT8 needs calibration data or a calibration cache", "pass --calib-data DIR or a --calib-cache")
    else:
        ranges = calibrate(model, calib, method, batch=batch, show_progress=show_progress, entropy_bins=entropy_bins)
        settings = {"entropy_bins": entropy_bins} if method == "entropy" else (
            {"percentile": PERCENTILE} if method == "percentile" else {})
        cache = make_cache(ranges, sha, method, len(calib), settings)
    why = select_exclusions(model, exclude, quantize_first_last)
    for name, reason in (extra_exclusions or {}).items():
        why.setdefault(name, reason)
    for name, reason in tiny_range_exclusions(model, cache["ranges"]).items():
        why.setdefault(name, reason)
    from vitdeploy.onnx_files import as_file, is_large

    large = is_large(model)
    declared = model if large else onnx.ModelProto.FromString(model.SerializeToString())
    declare_plugin_outputs(declared, onnx.TensorProto.FLOAT)
    with tempfile.TemporaryDirectory(prefix="vitdeploy-qdq-") as tmp, \
            (as_file(declared) if large else contextlib.nullcontext(declared)) as source:
        # a model over the protobuf limit goes to ORT's quantizer as a file (it would deep-copy a ModelProto)
        ort_cache, out = os.path.join(tmp, "ranges.json"), os.path.join(tmp, "qdq.onnx")
        save_tensors_data(to_tensors_data(cache), ort_cache)
        try:
            with _quiet_ort_logging():
                quantize_static(
                    str(source) if large else source, out, None,
                    use_external_data_format=large,
                    calibration_cache_path=ort_cache,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANT_OPS),
                    per_channel=True,
                    activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=ort_method(method),
                    nodes_to_exclude=sorted(why),
                    extra_options=dict(QDQ_EXTRA_OPTIONS),
                )
        except VitdeployError:
            raise
        except Exception as e:
            raise VitdeployError(f"INT8 quantization failed: {str(e).splitlines()[0][:200]}", "try --int8-exclude for the failing node") from None
        qdq = onnx.load(out)
    float_for_other_consumers(qdq)
    _require_opset(qdq, 19)
    fp16, precision = convert_fp16(qdq, keep_io_fp32=True)
    check_activation_scales(fp16)
    summary = qdq_summary(fp16)
    summary.update(method=method, excluded={k: v for k, v in why.items()}, precision=precision,
                   calibration_images=cache.get("num_images"), model_sha256=sha)
    return fp16, cache, summary


def fold_constant_identities(model: onnx.ModelProto) -> int:
    """Consumers of `Identity(initializer)` read the initializer itself; returns how many Identities went.

    The TorchScript exporter writes a tied weight (RT-DETR / D-FINE's decoder heads shared across layers) as
    Identity nodes of one initializer. The quantizer would put the weight's per-channel DequantizeLinear
    before the Identity, which is then not a weight input and something sits between the DQ and its MatMul
    (both refused by `lint`, after TensorRT's rules); reading the initializer directly is the same graph."""
    inits = {i.name for i in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}
    alias = {n.output[0]: n.input[0] for n in model.graph.node
             if n.op_type == "Identity" and n.input and n.input[0] in inits and n.output[0] not in outputs}
    if not alias:
        return 0
    keep = [n for n in model.graph.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for n in keep:
        for k, name in enumerate(n.input):
            if name in alias:
                n.input[k] = alias[name]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(alias)


def float_for_other_consumers(model: onnx.ModelProto) -> int:
    """ORT's QDQ quantizer feeds the DequantizeLinear output to *every* consumer of a quantized tensor
    (e.g. Deformable DETR's LayerNorm output reaching an Unsqueeze next to its MatMul); give the
    consumers that are not quantized ops their float tensor back, so Q/DQ sit only before the
    MatMul/Gemm/Conv they quantize (nothing between a DQ and its consumer). Returns how many inputs moved."""
    producer = {o: n for n in model.graph.node for o in n.output}
    outputs = {o.name for o in model.graph.output}
    moved = 0
    for dq in [n for n in model.graph.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or dq.output[0] in outputs:
            continue
        for c in model.graph.node:
            if c.op_type in QUANT_OPS or c.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            for k, name in enumerate(c.input):
                if name == dq.output[0]:
                    c.input[k] = q.input[0]
                    moved += 1
    return moved


def _require_opset(model: onnx.ModelProto, version: int) -> None:
    """Raise the default-domain opset to `version` (19: Q/DQ with FP16 scales).

    Every op that changed between opsets 17 and 19 only gained types or optional
    attributes with backward-compatible defaults, so the graph means the same.
    """
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < version:
            op.version = version


def check_activation_scales(model: onnx.ModelProto) -> None:
    """Refuse a QuantizeLinear whose scale is zero, negative, not finite or subnormal in its (FP16) type:
    TensorRT accepts a subnormal scale, but it clips the tensor at 127 * scale (e.g. attention
    probabilities at 0.0074), so it is a calibration failure, named here before anything is written."""
    from vitdeploy.deploy.lint.qdq import scale_problem

    init = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 1 and n.input[1] in init:
            t = init[n.input[1]]
            why = scale_problem(onnx.numpy_helper.to_array(t), t.data_type)
            if why:
                users = [c.name for c in model.graph.node if any(i in n.output for i in c.input)]
                raise VitdeployError(
                    f"INT8 scale of tensor {n.input[0]} {why}",
                    f"try --calib-method minmax or percentile, or keep its consumer FP16 with --int8-exclude "
                    f"'{users[0] if users else n.input[0]}'")


def qdq_summary(model: onnx.ModelProto) -> dict:
    """Which MatMul/Gemm/Conv nodes read DequantizeLinear outputs, and Q/DQ counts (also per op type)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    quantized, float_nodes = [], []
    for n in quantizable_nodes(model):
        srcs = [producer.get(i) for i in n.input[:2]]
        (quantized if all(s is not None and s.op_type == "DequantizeLinear" for s in srcs[:1]) else float_nodes).append(
            {"name": n.name, "op_type": n.op_type, "scope": node_scope(n)}
        )
    from vitdeploy.deploy.lint.core import GraphIndex
    from vitdeploy.deploy.lint.qdq import qdq_counts

    ops = [n.op_type for n in model.graph.node]
    return {
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
        "qdq_per_op": qdq_counts(GraphIndex(model)),  # consumer op type -> nodes, Q and DQ feeding them
        "int8_nodes": quantized,
        "fp16_nodes": float_nodes,
    }


def int8_input_scales(model: onnx.ModelProto) -> list[float]:
    """Activation scales of the Q nodes (tests and reports check none is 0 or subnormal in FP16)."""
    init = {i.name: i for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in init:
            out.extend(onnx.numpy_helper.to_array(init[n.input[1]]).astype(np.float32).ravel().tolist())
    return out
