"""What the target TensorRT's ONNX parser accepts: opset and IR, operators and their attributes, types, plugins."""
from __future__ import annotations

from collections import defaultdict

import onnx

from vitdeploy.deploy.lint import tables as T
from vitdeploy.deploy.lint.core import Finding, GraphIndex, attr, dtype_name, fmt, node_label

_STD = ("", "ai.onnx")


def check_model_header(ix: GraphIndex, v: T.Version) -> list[Finding]:
    out: list[Finding] = []
    opset = ix.opset
    if opset is None:
        return [Finding("error", "opset", "the model imports no ai.onnx opset", "re-export the model")]
    top = T.opset_max(v)
    if opset > top:
        since = T.opset_since(opset)
        out.append(Finding(
            "warning", "opset", f"opset {opset} is above what TensorRT {fmt(v)} documents (opsets {T.OPSET_MIN}-{top}); "
            "ops that changed after it may not import", f"export with --opset {top} (vitdeploy build lowers it for "
            "its target)", fixed_in=since))
    elif opset < T.OPSET_MIN:
        out.append(Finding("warning", "opset", f"opset {opset} is below TensorRT's documented minimum {T.OPSET_MIN}",
                           f"export with --opset {max(17, T.OPSET_MIN)} or later"))
    ir, onnx_release = T.ir_max(v)
    if ix.model.ir_version > ir:
        later = next((r[0] for r in T.IR_MAX if r[1] >= ix.model.ir_version), None)
        out.append(Finding(
            "warning", "ir-version", f"IR version {ix.model.ir_version} is newer than the ONNX {onnx_release} (IR {ir}) "
            f"TensorRT {fmt(v)} bundles", f"save with ir_version {ir} (onnx.save after setting model.ir_version)",
            fixed_in=later))
    return out


def _functions(model: onnx.ModelProto) -> set[tuple[str, str]]:
    return {(f.domain, f.name) for f in model.functions}


def check_operators(ix: GraphIndex, v: T.Version) -> list[Finding]:
    """Every ai.onnx node: imported by this TensorRT, with attributes its importer accepts."""
    out: list[Finding] = []
    local = _functions(ix.model)
    for i, n in enumerate(ix.nodes):
        if n.domain not in _STD or (n.domain, n.op_type) in local:
            continue  # plugins: check_plugins; local functions: the parser imports them (Changelog 9.0)
        name = node_label(n, i)
        since = T.onnx_op_since(n.op_type)
        if since is None or since > v:
            if n.op_type == "Attention":
                msg, fix = (f"ONNX Attention (opset 23) is imported only from TensorRT {fmt(since)}",
                            "export with --opset 20 so the exporter writes MatMul/Softmax, or target TensorRT >= 10.14")
            elif since is not None:
                msg, fix = (f"TensorRT imports {n.op_type} only from {fmt(since)}",
                            "replace it with supported ops (onnx-graphsurgeon) or target a newer TensorRT")
            elif n.op_type in T.ONNX_OPS_UNSUPPORTED:
                msg, fix = (f"TensorRT does not import {n.op_type} (operators.md: N)",
                            "replace it with supported ops or a plugin")
            else:
                msg, fix = (f"{n.op_type} is not in TensorRT's operator table: the parser would look for a plugin "
                            f"named {n.op_type}", "replace it with supported ops or register a plugin of that name")
            out.append(Finding("error", "operator", msg, fix, name, n.op_type, fixed_in=since))
            continue
        out.extend(_attribute_rules(ix, n, name, v))
    return out


_REDUCE = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
           "ReduceProd", "ReduceSum", "ReduceSumSquare")
_RESIZE_COORD = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners")


def _used(ix: GraphIndex, name: str) -> bool:
    return bool(name) and (bool(ix.users(name)) or name in ix.graph_outputs)


def _attribute_rules(ix: GraphIndex, n: onnx.NodeProto, name: str, v: T.Version) -> list[Finding]:
    op = n.op_type
    out: list[Finding] = []

    def err(rule, msg, fix, fixed_in=None, severity="error"):
        out.append(Finding(severity, rule, msg, fix, name, op, fixed_in=fixed_in))

    if op == "ScatterND" and any(a.name == "reduction" for a in n.attribute):
        red = attr(n, "reduction")
        if red != "none":  # operators.md 10.15: "`reduction` other than `none` is not supported"
            err("attribute", f'reduction="{red}" is not supported by TensorRT', "rewrite the update without reduction")
        elif v < T.SCATTERND_REDUCTION_ATTR_OK:  # 10.1-GA onnxOpImporters.cpp:5150
            err("attribute", f'attribute reduction="none" is rejected by TensorRT < {fmt(T.SCATTERND_REDUCTION_ATTR_OK)}'
                " whatever its value", 'delete the attribute ("none" is the default; vitdeploy export does this)',
                fixed_in=T.SCATTERND_REDUCTION_ATTR_OK)
    elif op == "ScatterElements" and attr(n, "reduction", "none") != "none":
        err("attribute", f'reduction="{attr(n, "reduction")}" runs through TensorRT\'s ScatterElements plugin',
            "nothing to fix; expect a plugin layer in the engine", severity="note")
    elif op == "Constant" and any(a.name in ("sparse_value", "value_string", "value_strings") for a in n.attribute):
        err("attribute", "sparse or string Constant values are unsupported", "store a dense numeric tensor")
    elif op == "Pad" and len(n.input) > 3 and n.input[3] and not ix.is_const(n.input[3]) and v < T.PAD_TENSOR_AXES:
        err("attribute", "Pad axes must be an initializer before TensorRT 10.4", "fold the axes to a constant",
            fixed_in=T.PAD_TENSOR_AXES)
    elif op in ("Squeeze", "Unsqueeze") and len(n.input) > 1 and n.input[1] and not ix.is_const(n.input[1]) \
            and v < T.SQUEEZE_DYNAMIC_AXES:
        err("attribute", f"{op} axes must be a constant before TensorRT 10.7", "fold the axes to a constant",
            fixed_in=T.SQUEEZE_DYNAMIC_AXES)
    elif op == "CumSum" and len(n.input) > 1 and not ix.is_const(n.input[1]) and v < T.CUMSUM_DYNAMIC_AXIS:
        err("attribute", "CumSum axis must be an initializer before TensorRT 10.8", "fold the axis to a constant",
            fixed_in=T.CUMSUM_DYNAMIC_AXIS)
    elif op in _REDUCE and len(n.input) > 1 and n.input[1] and not ix.is_const(n.input[1]):
        err("attribute", f"{op} axes must be an initializer", "fold the axes to a constant (polygraphy surgeon sanitize "
            "--fold-constants)")
    elif op == "Resize":
        coord = attr(n, "coordinate_transformation_mode", "half_pixel")
        mode = attr(n, "mode", "nearest")
        if coord not in _RESIZE_COORD:
            err("attribute", f"coordinate_transformation_mode={coord} is unsupported", f"use one of {', '.join(_RESIZE_COORD)}")
        if mode not in ("nearest", "linear", "cubic"):
            err("attribute", f"mode={mode} is unsupported", "use nearest or linear")
        if coord == "tf_half_pixel_for_nn" and attr(n, "nearest_mode", "round_prefer_floor") != "round_prefer_floor":
            err("attribute", "tf_half_pixel_for_nn needs nearest_mode=round_prefer_floor", "change nearest_mode")
        if attr(n, "antialias", 0):
            err("attribute", "antialiasing is unsupported", "set antialias=0")
        if attr(n, "keep_aspect_ratio_policy", "stretch") != "stretch":
            err("attribute", "only keep_aspect_ratio_policy=stretch is supported", "resize with explicit sizes")
    elif op == "LayerNormalization" and any(_used(ix, o) for o in n.output[1:]):
        err("outputs", "only LayerNormalization's first output Y is supported", "drop the Mean/InvStdDev outputs")
    elif op == "MaxPool" and any(_used(ix, o) for o in n.output[1:]):
        err("outputs", "the Indices output of MaxPool is unsupported", "drop the Indices output")
    elif op == "BatchNormalization" and attr(n, "training_mode", 0):
        err("attribute", "training_mode=1 is unsupported", "export in eval mode")
    elif op == "Dropout" and len(n.input) > 2 and n.input[2]:
        t = ix.const(n.input[2])
        if t is None or bool(t.reshape(-1)[0]):
            err("attribute", "Dropout training_mode must be a constant False", "export in eval mode")
    elif op == "TopK" and attr(n, "sorted", 1) != 1:
        err("attribute", "TopK sorted must be 1", "sort the result (sorted=1)")
    elif op == "Cast":
        to = attr(n, "to")
        if to == onnx.TensorProto.DOUBLE:
            err("dtype", "Cast to DOUBLE becomes FLOAT in TensorRT (no FP64)", "cast to FLOAT", severity="warning")
        elif dtype_name(to) not in T.TRT_DTYPES:
            err("dtype", f"Cast to {dtype_name(to)}: TensorRT has no such type", "cast to a TensorRT type")
    elif op == "GridSample":
        shape = ix.shapes.get(n.input[0])
        if shape is not None and len(shape) != 4:
            err("shape", f"GridSample input is {len(shape)}-D; TensorRT supports 4-D only", "reshape to 4-D")
    if op in ("MaxPool", "AveragePool", "LpPool") and any(d != 1 for d in (attr(n, "dilations") or [])):
        err("attribute", f"{op} dilations other than 1 are unsupported", "use dilations of 1")
    if op == "Attention":
        if any(t for t in n.input[4:]):
            err("inputs", "past_key/past_value/nonpad_kv_seqlen inputs are unsupported", "drop the KV-cache inputs")
        if any(_used(ix, o) for o in n.output[1:]):
            err("outputs", "present_key/present_value/qk_matmul_output outputs are unsupported", "drop those outputs")
        if attr(n, "softcap", 0.0) or attr(n, "qk_matmul_output_mode", 0) or any(
                a.name == "softmax_precision" for a in n.attribute):
            err("attribute", "softcap, qk_matmul_output_mode and softmax_precision are unsupported",
                "remove the attribute")
        for t in n.input[:3]:
            shape = ix.shapes.get(t)
            if shape is not None and len(shape) != 4:
                err("shape", f"Attention input {t} is {len(shape)}-D; TensorRT needs 4-D Q/K/V", "reshape to 4-D")
                break
    return out


def check_dtypes(ix: GraphIndex, v: T.Version) -> list[Finding]:
    """No FP64 at the I/O (bindings would change type), no type TensorRT lacks; one finding per kind."""
    out: list[Finding] = []
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    qdq_io = {t for n in ix.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear") for t in [*n.input, *n.output]}
    for name, t in ix.types.items():
        dn = dtype_name(t)
        io = name in ix.graph_inputs or name in ix.graph_outputs
        if dn == "DOUBLE":
            grouped[("error" if io else "warning", "DOUBLE")].append(name)
        elif dn not in T.TRT_DTYPES:
            grouped[("error", dn)].append(name)
        elif dn == "UINT8" and not io and name not in qdq_io:
            grouped[("warning", "UINT8")].append(name)
    for (sev, dn), names in grouped.items():
        more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
        if dn == "DOUBLE" and sev == "error":
            msg, fix = "graph input/output is DOUBLE: TensorRT has no FP64 and would bind it as FLOAT", \
                "export the model in FP32 (model.float())"
        elif dn == "DOUBLE":
            msg, fix = "DOUBLE tensor: TensorRT casts it down to FLOAT, clamping to +-FLT_MAX", "store it as FLOAT"
        elif dn == "UINT8":
            msg, fix = "UINT8 is supported only as a network input or output", "use INT32 or a float type inside"
        else:
            msg, fix = f"{dn} tensor: TensorRT has no such type", "cast to INT32/INT64 or a float type"
        out.append(Finding(sev, "dtype", msg + more, fix, names[0]))
    return out


def _vitdeploy_specs() -> dict[str, object]:
    """op_type -> PluginSpec of every vitdeploy (AOT) plugin this install has: the `spec.py` beside each
    TensorRT face in `vitdeploy.plugins.TRT_FACES`, so a new plugin folder is known here without edits."""
    import importlib

    from vitdeploy.plugins import TRT_FACES
    from vitdeploy.plugins.spec import NAMESPACE, PluginSpec

    specs = {}
    for op, face in TRT_FACES.items():
        try:
            mod = importlib.import_module(face.rsplit(".", 1)[0] + ".spec")
        except ImportError:
            continue
        for value in vars(mod).values():
            if isinstance(value, PluginSpec) and value.name == op and value.namespace == NAMESPACE:
                specs[op] = value
    return specs


def check_plugins(ix: GraphIndex, v: T.Version) -> list[Finding]:
    """Nodes outside ai.onnx are plugins to the parser: each must exist, by (name, version, namespace), here."""
    out: list[Finding] = []
    local = _functions(ix.model)
    ours = _vitdeploy_specs()
    for i, n in enumerate(ix.nodes):
        if n.domain in _STD or (n.domain, n.op_type) in local:
            continue
        name = node_label(n, i)
        version = str(attr(n, "plugin_version", "1"))  # the parser's defaults (10.1-GA onnxOpImporters.cpp:6442)
        namespace = str(attr(n, "plugin_namespace", ""))
        if n.op_type in T.STOCK_PLUGINS:
            known = T.STOCK_PLUGINS[n.op_type]
            if version not in known:
                out.append(Finding("error", "plugin", f"TensorRT has no {n.op_type} version {version} "
                                   f"(versions {', '.join(sorted(known))})", f"set plugin_version to one of "
                                   f"{', '.join(sorted(known))}", name, n.op_type))
            else:
                first, last = known[version]
                if v < first or (last is not None and v > last):
                    alt = sorted(k for k, (a, b) in known.items() if a <= v and (b is None or v <= b))
                    out.append(Finding(
                        "error", "plugin", f"{n.op_type} version {version} exists only from TensorRT {fmt(first)}",
                        f"emit version {alt[0]} for TensorRT {fmt(v)}" if alt else "target a newer TensorRT",
                        name, n.op_type, fixed_in=first if v < first else None))
            if namespace:
                out.append(Finding("error", "plugin", f"stock plugins live in the empty namespace, not '{namespace}'",
                                   'set plugin_namespace to ""', name, n.op_type))
        elif n.domain == "vitdeploy" or n.op_type in ours:
            spec = ours.get(n.op_type)
            if spec is None:
                out.append(Finding("error", "plugin", "not a vitdeploy plugin this install registers",
                                   "rebuild the ONNX with this vitdeploy, or --plugins off", name, n.op_type))
                continue
            if v < T.AOT_PLUGINS:
                out.append(Finding(
                    "error", "plugin", f"vitdeploy plugins are ahead-of-time tensorrt.plugin plugins, which TensorRT "
                    f"{fmt(v)} cannot load (needs >= {fmt(T.AOT_PLUGINS)})", "rebuild with --plugins off "
                    "(the plugin-free rewrite)", name, n.op_type, fixed_in=T.AOT_PLUGINS))
            if version != spec.version or namespace != spec.namespace:
                out.append(Finding(
                    "error", "plugin", f"vitdeploy registers {spec.name} as version {spec.version} in namespace "
                    f"'{spec.namespace}', the node asks for version {version} in '{namespace}'",
                    f'set plugin_version="{spec.version}" plugin_namespace="{spec.namespace}" (rebuild the ONNX)',
                    name, n.op_type))
        else:
            out.append(Finding(
                "warning", "plugin", f"custom op ({n.domain or 'no domain'}): the parser will look up a plugin "
                f"({n.op_type}, version {version}, namespace '{namespace}') that vitdeploy cannot check",
                "load the library that registers it (trtexec --staticPlugins/--dynamicPlugins)", name, n.op_type))
        if n.op_type not in T.INT32_NARROWED_PLUGINS:
            wide = [t for t in n.input if t and ix.types.get(t) == onnx.TensorProto.INT64]
            if wide:
                out.append(Finding(
                    "error", "plugin", f"input {wide[0]} is INT64: the parser narrows INT64 to INT32 only for its "
                    "own list of stock plugins, so this plugin would receive INT64", "cast the input to INT32 in the graph",
                    name, n.op_type))
    return out
