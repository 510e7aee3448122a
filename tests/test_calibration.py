"""INT8 Q/DQ: placement TensorRT expects, the calibration cache, data loading errors, running in ORT."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from vitdeploy.calibration.cache import check_cache, load_cache, save_cache
from vitdeploy.calibration.data import CalibrationData, load_data
from vitdeploy.calibration.quantization import int8_input_scales, quantize_int8
from vitdeploy.deploy.export import BatchSpec, export_onnx
from vitdeploy.errors import VitdeployError
from vitdeploy.onnxrt import session

FAST = dict(show_progress=False, entropy_bins=512)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-block timm ViT (exported once) and 32 calibration inputs."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2).eval()
    path = tmp_path_factory.mktemp("int8") / "tiny_vit.onnx"
    export_onnx(model, torch.randn(2, 3, 16, 16), path, batch=BatchSpec.parse("1:4:16"))
    x = np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32)
    return path, CalibrationData(x)


@pytest.fixture(scope="module")
def int8(tiny):
    path, calib = tiny
    return quantize_int8(path, calib, "entropy", **FAST)


def _consumers(model):
    out = {}
    for n in model.graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def test_qdq_placement(tiny, int8):
    path, _ = tiny
    qdq, _, summary = int8
    producer = {o: n for n in qdq.graph.node for o in n.output}
    consumers = _consumers(qdq)
    fp32 = onnx.load(str(path))
    inits = {i.name for i in fp32.graph.initializer}
    mm_fp32 = [n for n in fp32.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    linear = [n.name for n in mm_fp32 if n.input[1] in inits]  # constant weight: Conv, Linears, head
    bmm = [n.name for n in mm_fp32 if n.input[1] not in inits]  # q·kᵀ and attn·v of each block
    assert len(bmm) == 4 and len(linear) == len(mm_fp32) - 4
    first, last = linear[0], linear[-1]
    # Every Linear reads DQ on both inputs (activation, INT8 weight) ...
    for n in qdq.graph.node:
        if n.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        srcs = [producer.get(i) for i in n.input[:2]]
        if n.name in (first, last) or n.name in bmm:
            # ... except the patch embedding and the head (FP16 by default) and the attention BMMs, which
            # stay FP16 (no Q/DQ on q, kᵀ, v or the Softmax output) for TensorRT's fused attention
            assert not any(s is not None and s.op_type in ("DequantizeLinear", "QuantizeLinear") for s in srcs), n.name
        else:
            assert [s.op_type for s in srcs] == ["DequantizeLinear", "DequantizeLinear"], n.name
    reason = "activation x activation MatMul (attention): FP16, for TensorRT's fused attention"
    assert summary["excluded"] == {**{b: reason for b in bmm}, first: "first layer", last: "last layer"}
    assert len(summary["int8_nodes"]) == len(linear) - 2
    assert summary["qdq_per_op"] == {"MatMul": {"nodes": len(linear) - 2, "quantize": len(linear) - 2,
                                                "dequantize": 2 * (len(linear) - 2)}}
    softmax_out = {n.output[0] for n in qdq.graph.node if n.op_type == "Softmax"}
    assert not [n for n in qdq.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in softmax_out]
    # DQ feeds only MatMul/Gemm/Conv: no Q/DQ before LayerNorm, Softmax, Add, GELU (Erf), nor on outputs.
    for n in qdq.graph.node:
        if n.op_type == "DequantizeLinear":
            assert {c.op_type for c in consumers[n.output[0]]} <= {"MatMul", "Gemm", "Conv"}, n.name
        if n.op_type == "QuantizeLinear":
            assert {c.op_type for c in consumers[n.output[0]]} == {"DequantizeLinear"}
            assert producer.get(n.input[0]) is None or producer[n.input[0]].op_type not in ("MatMul", "Gemm", "Conv")
    # Symmetric INT8: zero points are int8 zeros; weights are stored as INT8 with per-channel scales.
    init = {i.name: i for i in qdq.graph.initializer}
    for n in qdq.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            zp = init[n.input[2]]
            assert zp.data_type == TensorProto.INT8 and not onnx.numpy_helper.to_array(zp).any()
    weight_dqs = [n for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init]
    assert weight_dqs and all(init[n.input[0]].data_type == TensorProto.INT8 for n in weight_dqs)
    assert all(onnx.numpy_helper.to_array(init[n.input[1]]).size > 1 for n in weight_dqs)  # per channel
    # Everything else is FP16; I/O stays FP32; activation scales are normal FP16 numbers.
    assert summary["precision"]["io"] == {"input": "float32", "logits": "float32"}
    assert summary["precision"]["fp32_ops"] == {"LayerNormalization": 5}
    assert all(init[n.input[1]].data_type == TensorProto.FLOAT16 for n in qdq.graph.node if n.op_type == "DequantizeLinear")
    scales = int8_input_scales(qdq)
    assert scales and min(scales) > 6.1e-5
    onnx.checker.check_model(qdq, full_check=True)


@pytest.mark.parametrize("method", ["entropy", "percentile", "minmax"])
def test_int8_runs_in_ort_close_to_fp32(tiny, int8, method):
    path, calib = tiny
    qdq = int8[0] if method == "entropy" else quantize_int8(path, calib, method, **FAST)[0]
    x = calib.images[:8]
    ref = session(str(path)).run(None, {"input": x})[0]
    got = session(qdq).run(None, {"input": x})[0]
    cos = (ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)
    assert got.dtype == np.float32 and np.isfinite(got).all()
    assert cos > 0.99, cos
    assert not np.array_equal(ref, got)  # it really is quantized


def test_cache_round_trip_and_refusal(tiny, int8, tmp_path):
    path, calib = tiny
    qdq, cache, _ = int8
    f = tmp_path / "cache.json"
    save_cache(f, cache)
    loaded = load_cache(f)
    assert loaded == json.loads(json.dumps(cache))
    assert loaded["method"] == "entropy" and len(loaded["ranges"]) > 0
    # Activation scales are the symmetric ranges over 127 (zero point 0), stored in FP16.
    init = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    checked = 0
    for n in qdq.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] in loaded["ranges"]:
            lo, hi = loaded["ranges"][n.input[0]]
            np.testing.assert_allclose(float(init[n.input[1]]), max(abs(lo), abs(hi)) / 127, rtol=1e-3)
            checked += 1
    assert checked >= 8
    # Reusing the cache (no data) gives the identical graph.
    again, cache2, _ = quantize_int8(path, None, "entropy", cache=loaded, **FAST)
    assert cache2 is loaded
    assert again.SerializeToString() == qdq.SerializeToString()
    # Another model: refused, naming both hashes.
    other = tmp_path / "other.onnx"
    m = onnx.load(str(path))
    m.graph.initializer[0].raw_data = bytes(len(m.graph.initializer[0].raw_data))
    onnx.save(m, str(other))
    with pytest.raises(VitdeployError) as e:
        quantize_int8(other, None, "entropy", cache=loaded, **FAST)
    assert loaded["model_sha256"][:12] in e.value.message and "this model is sha256" in e.value.message
    with pytest.raises(VitdeployError, match="measured with --calib-method entropy"):
        check_cache(loaded, loaded["model_sha256"], "minmax")
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(VitdeployError, match="not a vitdeploy calibration cache"):
        load_cache(tmp_path / "bad.json")
    (tmp_path / "binary.cache").write_bytes(b"\xff\xfe\x00binary")  # e.g. a TensorRT calibration cache
    with pytest.raises(VitdeployError, match="binary.cache is not a JSON text file"):
        load_cache(tmp_path / "binary.cache")


def test_int8_exclude_patterns(tiny):
    path, calib = tiny
    _, _, s = quantize_int8(path, calib.take(8), "minmax", exclude=["blocks.1.*"], **FAST)
    excluded = [k for k, v in s["excluded"].items() if v == "--int8-exclude blocks.1.*"]
    assert len(excluded) == 4  # qkv, proj, fc1, fc2 of block 1 (its q@k and attn@v are FP16 anyway)
    assert all(n["scope"].startswith("blocks.0") for n in s["int8_nodes"])
    _, _, s = quantize_int8(path, calib.take(8), "minmax", quantize_first_last=True, **FAST)
    assert set(s["excluded"].values()) == {"activation x activation MatMul (attention): FP16, for TensorRT's fused attention"}
    assert sorted(n["name"] for n in s["fp16_nodes"]) == sorted(s["excluded"]) and len(s["excluded"]) == 4
    with pytest.raises(VitdeployError, match="matches no MatMul/Gemm/Conv"):
        quantize_int8(path, calib.take(8), "minmax", exclude=["nothing.here*"], **FAST)


# ---- data loading -------------------------------------------------------------------------------------------

PP = {"input_size": [3, 16, 16], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
      "crop_pct": 1.0, "crop_mode": "center"}


def _photos(folder, n=3):
    from PIL import Image
    from skimage import data

    (folder / "nested" / "deeper").mkdir(parents=True)
    imgs = [data.astronaut(), data.coffee(), data.chelsea()][:n]
    for i, img in enumerate(imgs):
        sub = folder if i == 0 else (folder / "nested" if i == 1 else folder / "nested" / "deeper")
        Image.fromarray(img).save(sub / f"img{i}.{'png' if i % 2 else 'jpg'}")


def test_image_folder_with_timm_preprocessing(tmp_path):
    _photos(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    d = load_data(tmp_path, PP, [1, 3, 16, 16], show_progress=False)
    assert d.images.shape == (3, 3, 16, 16) and d.images.dtype == np.float32
    assert d.skipped == 1
    # Same numbers as timm's own eval transform.
    from PIL import Image
    from timm.data import create_transform

    t = create_transform(input_size=(3, 16, 16), interpolation="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    first = sorted(d.files)[0]
    i = d.files.index(first)
    np.testing.assert_allclose(d.images[i], t(Image.open(first).convert("RGB")).numpy(), atol=1e-6)
    assert d.take(2).images.shape[0] == 2


def test_data_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VitdeployError, match="no images found under"):
        load_data(empty, PP)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"junk")
    (bad / "b.png").write_bytes(b"")
    with pytest.raises(VitdeployError, match="none of the 2 image files"):
        load_data(bad, PP, show_progress=False)
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 32, 32), np.float32))
    with pytest.raises(VitdeployError, match=r"images of shape 3x32x32, the model expects 3x16x16"):
        load_data(tmp_path / "wrong.npy", input_shape=[1, 3, 16, 16])
    np.save(tmp_path / "flat.npy", np.zeros((4, 10), np.float32))
    with pytest.raises(VitdeployError, match=r"shape \(4, 10\), expected N x C x H x W"):
        load_data(tmp_path / "flat.npy")
    np.savez(tmp_path / "labels.npz", images=np.zeros((4, 3, 16, 16), np.float32), labels=np.arange(3))
    with pytest.raises(VitdeployError, match="4 images but 3 labels"):
        load_data(tmp_path / "labels.npz")
    np.savez(tmp_path / "keys.npz", a=np.zeros((1, 3, 16, 16)), b=np.zeros(1))
    with pytest.raises(VitdeployError, match="none is named images"):
        load_data(tmp_path / "keys.npz")
    with pytest.raises(VitdeployError, match="does not exist"):
        load_data(tmp_path / "missing")
    np.save(tmp_path / "u8.npy", np.zeros((2, 3, 16, 16), np.uint8))
    with pytest.raises(VitdeployError, match="dtype uint8"):
        load_data(tmp_path / "u8.npy")


def test_cli_calibrate(tiny, tmp_path, capsys):
    from test_precision import run_cli

    path, calib = tiny
    np.savez(tmp_path / "calib.npz", images=calib.images)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["calibrate", "--onnx", str(path), "--calib-data", str(tmp_path / "calib.npz"),
                                 "--calib-method", "minmax", "--calib-images", "16", "-o", str(out)], capsys)
    assert code == 0, err
    assert "calibrate" in stdout and "INT8 vs FP32 on 16 calibration images (not held out)" in stdout
    # Issue 15 item 3: agreement on the calibration images earns no ✔ (not held out), and says so
    check = next(line for line in stdout.splitlines() if " check " in line and not line.startswith("…"))
    assert check.startswith("•") and "measure held-out data with 'vitdeploy accuracy'" in check
    assert "--accuracy-data HELD_OUT_IMAGES/ --min-agreement" in stdout  # the Next block points at held-out data
    report = json.loads((out / "calibration.json").read_text())
    assert report["check_vs_fp32"]["top1_agreement"] >= 80.0 and report["calibration_images"] == 16
    assert report["check_vs_fp32"]["data_role"] == "calibration" and report["weights"] == {"kind": "unknown"}
    assert load_cache(out / "calibration_cache.json")["num_images"] == 16
    session(str(out / "model.int8.onnx"))
    # Reuse the cache (no data read), then refuse a cache from another method.
    code, stdout, err = run_cli(["calibrate", "--onnx", str(path), "--calib-data", str(tmp_path / "calib.npz"), "--calib-method",
                                 "minmax", "--calib-cache", str(out / "calibration_cache.json"), "-o", str(tmp_path / "o2")], capsys)
    assert code == 0 and "(ranges from cache)" in stdout, err
    code, _, err = run_cli(["calibrate", "--onnx", str(path), "--calib-data", str(tmp_path / "calib.npz"),
                            "--calib-cache", str(out / "calibration_cache.json"), "-o", str(tmp_path / "o3")], capsys)
    assert code == 2 and "measured with --calib-method minmax" in err and not (tmp_path / "o3").exists()
    code, _, err = run_cli(["calibrate", "--calib-data", str(tmp_path / "calib.npz"), "-o", str(tmp_path / "o4")], capsys)
    assert code == 2 and "exactly one of --model and --onnx" in err


def test_static_batch_graph_calibrates_in_whole_batches(tiny, tmp_path):
    from vitdeploy.calibration.accuracy import compare_models

    path, calib = tiny
    m = onnx.load(str(path))
    for vi in (m.graph.input[0], m.graph.output[0]):
        vi.type.tensor_type.shape.dim[0].dim_value = 4  # clears the symbolic batch
    static = tmp_path / "static.onnx"
    onnx.save(m, str(static))
    qdq, cache, _ = quantize_int8(static, calib.take(10), "minmax", **FAST)  # 10 images -> 2 batches of 4
    assert cache["num_images"] == 10
    res = compare_models(str(static), qdq, calib.take(10))  # 10 images on a batch-4 graph: padded, trimmed
    assert res["images"] == 10 and res["cosine_min"] > 0.99


def test_wrong_shape_arrays_are_one_line_errors(tiny):
    from vitdeploy.calibration.accuracy import compare_models

    path, _ = tiny
    nhwc = CalibrationData(np.zeros((4, 16, 16, 3), np.float32), source="nhwc.npy")
    with pytest.raises(VitdeployError, match="nhwc.npy has images of shape 16x16x3, the model expects 3x16x16"):
        quantize_int8(path, nhwc, "minmax", **FAST)
    with pytest.raises(VitdeployError, match="the model expects 3x16x16"):
        compare_models(str(path), str(path), nhwc)


def test_cli_calibrate_next_trtexec_has_the_exports_batch_profile(tiny, int8, tmp_path, capsys):
    """A dynamic-batch export: the suggested trtexec line carries its profile (else trtexec builds batch 1 only)."""
    import shutil

    from test_precision import run_cli

    from vitdeploy.artifact import atomic_write_json, new_manifest

    path, calib = tiny
    src = tmp_path / "src"
    src.mkdir()
    shutil.copyfile(path, src / "model.onnx")
    manifest = new_manifest()
    manifest["batch"] = {"min": 1, "opt": 4, "max": 16, "dynamic": True}
    manifest["export"] = {"inputs": [{"name": "input", "shape": ["batch", 3, 16, 16], "dtype": "float32"}]}
    atomic_write_json(src / "manifest.json", manifest)
    save_cache(tmp_path / "cache.json", int8[1])  # ranges from the cache: no data is read
    np.savez(tmp_path / "calib.npz", images=calib.images[:2])
    code, stdout, err = run_cli(["calibrate", "--onnx", str(src / "model.onnx"), "--calib-data", str(tmp_path / "calib.npz"),
                                 "--calib-cache", str(tmp_path / "cache.json"), "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "--minShapes=input:1x3x16x16 --optShapes=input:4x3x16x16 --maxShapes=input:16x3x16x16" in stdout


def test_dynamic_batch_calibrates_any_image_count(tiny):
    """Issue 12 finding 8: 11 images on a dynamic-batch graph (batch 8) crashed ORT's calibrator on the short
    last batch; now every image is used (8 + 3, merged), for each method, and the ranges match one run
    over all 11 images at batch 1 for minmax (min/max merge exactly)."""
    from vitdeploy.calibration.quantization import calibrate

    path, calib = tiny
    eleven = calib.take(11)
    model = onnx.load(str(path))
    for method in ("minmax", "entropy", "percentile"):
        _, cache, summary = quantize_int8(path, eleven, method, **FAST)
        assert cache["num_images"] == 11 and summary["calibration_images"] == 11
    at8 = calibrate(model, eleven, "minmax", batch=8, show_progress=False)
    at1 = calibrate(model, eleven, "minmax", batch=1, show_progress=False)
    assert set(at8.data) == set(at1.data)
    for name in at1.data:
        np.testing.assert_allclose(at8.data[name].range_value, at1.data[name].range_value, rtol=1e-6)
    three = calibrate(model, calib.take(3), "entropy", batch=8, show_progress=False, entropy_bins=512)  # < one batch
    assert len(three.data) == len(at1.data)


def test_subnormal_activation_scale_is_refused(tiny):
    """A Q scale below FP16's smallest normal number clips its tensor (at 127 x scale): refused, naming the tensor."""
    from vitdeploy.calibration.quantization import check_activation_scales

    qdq = onnx.ModelProto()
    qdq.CopyFrom(quantize_int8(tiny[0], tiny[1].take(8), "minmax", **FAST)[0])
    check_activation_scales(qdq)  # the real graph passes
    init = {i.name: i for i in qdq.graph.initializer}
    q = next(n for n in qdq.graph.node if n.op_type == "QuantizeLinear")
    init[q.input[1]].CopyFrom(onnx.numpy_helper.from_array(np.array(4.9e-5, np.float16), q.input[1]))
    with pytest.raises(VitdeployError) as e:
        check_activation_scales(qdq)
    assert f"INT8 scale of tensor {q.input[0]} is 4.9e-05, a subnormal FLOAT16 number" in e.value.message
    assert "--int8-exclude" in e.value.hint
