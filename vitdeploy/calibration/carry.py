"""A build's INT8 calibration, carried to another graph of the same model (the plugin-free one a server gets).

The calibration cache holds activation ranges by tensor name, for the exact graph they were measured
on (`cache.py`), and `vitdeploy package` serves a different graph where the build's has plugin nodes:
the plain export rewritten in the plugin-free mode. The layers INT8 touches are the Linear and Conv
layers, which both graphs share: a layer is found in the other graph by its weight (the same constant:
values, shape and type), and the activation it reads holds the same values in both graphs (a rewrite
moves data around the attention core, never into a Linear's input values), so the range measured for
it applies as it is. Layers the build kept FP16 stay FP16; a layer without a carried range stays FP16
and is named. The result is verified by the caller against the FP32 export, like every served graph.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import numpy as np
import onnx

from vitdeploy.errors import VitdeployError

NO_RANGE = "no calibrated range for this layer in the build's cache: kept FP16"


def _constants(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    out = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    out[n.output[0]] = a.t
    return out


def weight_key(consts: dict, node: onnx.NodeProto) -> str | None:
    """What identifies a Linear/Conv layer across graphs: a hash of its constant weight (input 1)."""
    if len(node.input) < 2 or node.input[1] not in consts:
        return None
    arr = onnx.numpy_helper.to_array(consts[node.input[1]])
    h = hashlib.sha256(np.ascontiguousarray(arr).tobytes())
    h.update(f"{node.op_type}{arr.shape}{arr.dtype}".encode())
    return h.hexdigest()


def carry(target: onnx.ModelProto, source: onnx.ModelProto, ranges: dict, excluded: dict | None = None
          ) -> tuple[dict, dict, int]:
    """(ranges by `target` tensor name, exclusions {target node: reason}, layers matched) for the
    quantizable layers of `target`, from the `ranges` and exclusions measured on `source`."""
    from vitdeploy.calibration.quantization import quantizable_nodes, structural_exclusions

    src_consts, dst_consts = _constants(source), _constants(target)
    by_weight: dict[str, onnx.NodeProto] = {}
    for n in quantizable_nodes(source):
        k = weight_key(src_consts, n)
        if k is not None:
            by_weight.setdefault(k, n)
    structural = structural_exclusions(target)
    out_ranges, why, matched = {}, {}, 0
    for n in quantizable_nodes(target):
        if n.name in structural:
            continue
        src = by_weight.get(weight_key(dst_consts, n) or "")
        if src is None or src.input[0] not in ranges:
            why[n.name] = NO_RANGE
            continue
        matched += 1
        if excluded and src.name in excluded:
            why[n.name] = excluded[src.name]  # the build kept it FP16 (first/last layer, --int8-exclude, tiny range)
        out_ranges[n.input[0]] = ranges[src.input[0]]
    return out_ranges, why, matched


def calibrated_graph(build_dir: Path, manifest: dict, model_sha256: str) -> Path | None:
    """The ONNX in the build directory the cache was measured on (by sha256)."""
    from vitdeploy.artifact import sha256_file

    listed = [build_dir / e["path"] for e in (manifest.get("files") or {}).values()
              if isinstance(e, dict) and str(e.get("path", "")).endswith(".onnx")]
    for p in dict.fromkeys([*listed, *sorted(build_dir.glob("*.onnx"))]):
        if p.is_file() and sha256_file(p) == model_sha256:
            return p
    return None


def quantize_like_build(fp32_path: Path, build_dir: Path, manifest: dict, cache_path: Path
                        ) -> tuple[onnx.ModelProto, dict]:
    """The Q/DQ (+FP16) version of the FP32 graph at `fp32_path` with the build's calibration: (model, record)."""
    from vitdeploy.calibration.cache import load_cache
    from vitdeploy.calibration.quantization import quantize_int8
    from vitdeploy.artifact import load_onnx, sha256_file

    cache = load_cache(cache_path)
    source = calibrated_graph(build_dir, manifest, cache.get("model_sha256", ""))
    if source is None:
        raise VitdeployError(f"{cache_path.name} was measured on a graph that is no longer in {build_dir}",
                             "rebuild with --int8 to calibrate again")
    excluded = (((manifest.get("precision") or {}).get("int8") or {}).get("excluded")) or {}
    target = load_onnx(fp32_path)
    ranges, why, matched = carry(target, load_onnx(source), cache["ranges"], excluded)
    if not matched:
        raise VitdeployError(f"none of {fp32_path.name}'s Linear/Conv layers is in the calibrated graph {source.name}",
                             "rebuild with --int8 to calibrate again")
    carried = {**cache, "model_sha256": sha256_file(fp32_path), "ranges": ranges}
    with tempfile.TemporaryDirectory(prefix="vitdeploy-carry-") as tmp:
        src = Path(tmp) / "fp32.onnx"
        onnx.save(target, str(src))
        carried["model_sha256"] = sha256_file(src)
        model, _, summary = quantize_int8(src, None, cache["method"], cache=carried, quantize_first_last=True,
                                          extra_exclusions=why, show_progress=False)
    no_range = sorted(k for k, v in why.items() if v == NO_RANGE)
    record = {"calibration": {"cache": cache_path.name, "measured_on": source.name, "method": cache["method"],
                              "images": cache.get("num_images")},
              "layers_int8": len(summary.get("int8_nodes") or []),
              "layers_matched": matched, "no_range": no_range, "excluded": summary.get("excluded", {})}
    return model, record
