"""Issue 5: `vitdeploy build` up to the engine on a machine without TensorRT.

vit_t (cheap, TorchScript exporter) carries the step-cache and manifest tests;
swin_t runs once the way `make run` runs it (dynamo export, swin rewrite, FP16);
a test-sized Swin V2 at a non-square size runs the same pipeline through the V2 rewrite.
"""
import json
import re
from pathlib import Path

import onnx
import pytest

from cli_runner import invoke as _invoke
from vitdeploy.artifact import sha256_file
from vitdeploy.errors import EXIT_ENGINE_SKIPPED, EXIT_USAGE

VIT = ["build", "--model", "vit_t", "--exporter", "torchscript", "--dynamic-batch", "1:2:4"]


def manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def stage_line(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if re.match(rf"^[✔–•] {name}\b", line))


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """Three runs into one directory: FP32 (engine skipped, exit 0), then --fp16 --no-engine twice."""
    out = tmp_path_factory.mktemp("vit_build")
    runs = []
    for extra in ([], ["--fp16", "--no-engine"], ["--fp16", "--no-engine"]):
        res = _invoke([*VIT, *extra, "-o", str(out)])
        runs.append((res.exit_code, res.output, manifest(out)))
    return out, runs


def test_without_tensorrt_exit_0_and_one_line_saying_what_to_run(vit):
    """`build && bench` must not stop because this machine has no TensorRT: exit 0, the information kept."""
    out, runs = vit
    code, text, m = runs[0]
    assert code == 0
    last = text.strip().splitlines()[-1]
    assert last.startswith("engine skipped: TensorRT is not installed here")
    assert f"vitdeploy build --onnx {out / 'model.onnx'} -o {out} --dynamic-batch 1:2:4" in last
    assert (f"trtexec --onnx={out / 'model.onnx'} --stronglyTyped --noTF32 --saveEngine={out / 'model.plan'} "
            "--minShapes=input:1x3x224x224 --optShapes=input:2x3x224x224 --maxShapes=input:4x3x224x224") in last
    for step in ("export", "rewrite", "precision", "accuracy", "lint", "engine"):
        assert re.search(rf"^[✔–•] {step}", text, re.M), step
    assert "TensorRT 10.3: 0 error(s)" in stage_line(text, "lint")  # no TensorRT here, no plugins: from 10.3 on
    # Next: the trtexec line that shows whether the 12 attention blocks fused, and what to look for
    prof = next(line.strip() for line in text.splitlines() if "--exportLayerInfo=" in line)
    assert prof.startswith(f"trtexec --onnx={out / 'model.onnx'} --stronglyTyped") and "--profilingVerbosity=detailed" in prof
    assert prof.endswith(f"--exportLayerInfo={out / 'layer_info.json'} --skipInference")
    assert "look for an mha/fmha (fused attention) kernel per attention block: 12 block(s), 12 in the fusible form" in text
    assert re.search(r"^✔ export .* \d+\.\d s$", text, re.M)  # each step reports its wall time
    assert re.search(r"^… export +started$", text, re.M)  # without a TTY: a start line before minutes of work
    assert text.count("TensorRT is not installed here") == 1  # once, on the last line; the stage line points there
    assert not (out / "model.plan").exists()
    nxt = text[text.index("Next:"):].splitlines()[1:4]
    assert nxt[0].strip() == f"vitdeploy infer {out} --image IMAGE.jpg" and "vitdeploy package" in nxt[2]


def test_require_engine_keeps_the_old_exit_code(vit, cli_run):
    out, _ = vit
    res = cli_run(*VIT, "-o", str(out), "--require-engine")  # every step cached: seconds
    assert res.exit_code == EXIT_ENGINE_SKIPPED, res.output
    assert res.output.strip().splitlines()[-1].startswith("engine skipped: TensorRT is not installed here")


def test_manifest_contents(vit):
    out, runs = vit
    m = runs[0][2]
    assert m["schema"] == 1 and m["model"]["alias"] == "vit_t"
    assert m["preprocessing"]["input_size"] == [3, 224, 224]
    import math

    assert m["preprocessing"]["resize"] == {"mode": "shorter_side", "size": math.floor(224 / m["preprocessing"]["crop_pct"]),
                                            "crop": [224, 224]}
    assert m["labels"]["num_classes"] == 1000 and len(m["labels"]["names"]) == 1000
    assert m["labels"]["names"][0].startswith("tench") and "imagenet" in m["labels"]["source"]
    assert m["postprocessing"] == {"task": "classification",
                                   "scores": {"output": "logits", "activation": "softmax", "shape": "[B, classes]"}}
    assert m["files"]["onnx"]["path"] == "model.onnx"
    assert m["files"]["onnx"]["sha256"] == sha256_file(out / "model.onnx")
    assert "engine" not in m["files"]
    eng = m["engine"]
    assert eng["built"] is False and "TensorRT is not installed" in eng["skipped"]
    assert eng["tensorrt"] is None
    assert eng["profiles"] == [{"input": {"min": [1, 3, 224, 224], "opt": [2, 3, 224, 224], "max": [4, 3, 224, 224]}}]
    assert eng["hardware_compatibility"] == "none" and eng["version_compatible"] is False
    assert eng["plugin_mode"]["requested"] == "auto"
    assert m["target"]["target"] == "gpu"
    assert m["precision"] == {"applied": "fp32"}
    assert m["plugins"] == []
    lint = m["lint"]
    assert lint["target"] == "10.3" and lint["open_ended"] and lint["errors"] == 0 and lint["tensorrt"] == "10.3"
    assert len(lint["attention"]) == 12 and {a["form"] for a in lint["attention"]} == {"fusible"}
    assert m["target"]["tensorrt"] == "10.3+"
    # Issue 15 item 13: no plugin nodes, so no plugin (TensorRT >= 10.9) requirement
    assert "10.9" not in json.dumps(m["engine"]) and "no plugin nodes" in eng["plugin_mode"]["reason"]
    assert m["model"]["weights"] == "random" and m["postprocessing"]["task"] == "classification"
    from vitdeploy import machine

    assert m["build"]["machine"]["cuda"] == (machine.cuda_runtime().get("version") or machine.probe().get("cuda_driver_api"))
    assert set(m["steps"]) == {"export"} and len(m["steps"]["export"]) == 64
    assert m["build"]["versions"]["onnxruntime"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["build"]["created"])
    assert m["export"]["parity"]["passed"] and m["export"]["exporter"] == "torchscript"


def test_changed_option_redoes_only_what_depends_on_it(vit):
    out, runs = vit
    code, text, m = runs[1]
    assert code == 0  # --no-engine
    assert "cached" in stage_line(text, "export")
    assert "cached" not in stage_line(text, "precision")
    assert "cached" not in stage_line(text, "accuracy")
    assert "skipped: --no-engine" in stage_line(text, "engine")
    assert m["steps"]["export"] == runs[0][2]["steps"]["export"]
    assert m["files"]["onnx"]["path"] == "model.fp16.onnx"
    assert m["files"]["onnx_exported"]["path"] == "model.onnx"
    assert m["precision"]["applied"] == "fp16" and m["precision"]["fp16"]["io"] == {"input": "float32", "logits": "float32"}
    fp16 = onnx.load(str(out / "model.fp16.onnx"))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.graph.initializer)
    acc = m["accuracy"]
    assert acc["images"] == 8 and acc["top1_agreement"] >= 75.0 and acc["cosine_min"] > 0.999
    assert acc["data"] == "seeded random images (not real data)" and acc["weights"] == {"kind": "random", "seed": 0}
    # Issue 15 item 2: random weights get a banner and no ✔ on the agreement figure
    assert "⚠ random weights: vit_t has no --checkpoint/--pretrained weights" in text
    assert stage_line(text, "accuracy").startswith("•") and "random weights: not judged" in stage_line(text, "accuracy")
    # Issue 15 item 1: the Next block benches the directory, whose manifest names the plain export
    assert f"vitdeploy bench {out}\n" in text or text.rstrip().endswith(f"vitdeploy bench {out}")


def test_rerun_is_all_cached(vit):
    out, runs = vit
    code, text, m = runs[2]
    assert code == 0
    for step in ("export", "precision", "accuracy"):
        assert "cached" in stage_line(text, step), step
    assert m["steps"] == runs[1][2]["steps"]
    assert m["accuracy"] == runs[1][2]["accuracy"]


def test_damaged_cached_output_is_rebuilt(vit, cli_run):
    out, _ = vit
    f = out / "model.fp16.onnx"
    good = f.read_bytes()
    f.write_bytes(good[: len(good) // 2])
    res = cli_run(*VIT, "--fp16", "--no-engine", "-o", str(out))
    assert res.exit_code == 0
    assert "cached" in stage_line(res.output, "export")
    assert "cached" not in stage_line(res.output, "precision")
    assert f.read_bytes() == good  # deterministic conversion: same bytes again


def test_build_from_the_onnx_on_the_target(vit, cli_run):
    """What the skip line tells users to run: start from the final ONNX, keep the manifest's history."""
    out, _ = vit
    res = cli_run("build", "--onnx", str(out / "model.fp16.onnx"), "-o", str(out), "--no-engine")
    assert res.exit_code == 0, res.output
    assert "already has FP16/INT8 tensors" in stage_line(res.output, "precision")
    assert "kept the figures recorded when model.fp16.onnx was built" in stage_line(res.output, "accuracy")
    assert "vitdeploy build" not in res.output[res.output.index("Next:"):]  # not the command just run
    m = manifest(out)
    assert m["model"]["alias"] == "vit_t" and m["preprocessing"]["input_size"] == [3, 224, 224]
    assert m["files"]["onnx"]["path"] == "model.fp16.onnx"
    assert m["files"]["onnx_exported"]["path"] == "model.onnx"  # the history of the first build is kept
    assert m["precision"]["applied"] == "fp16" and "accuracy" in m
    assert m["engine"]["profiles"][0]["input"]["max"] == [4, 3, 224, 224]  # batch range from the manifest
    assert m["source_onnx"]["sha256"] == sha256_file(out / "model.fp16.onnx")


def test_int8_records_qdq_summary_and_calibration_cache(vit, cli_run, tmp_path):
    from PIL import Image
    from skimage import data

    out, _ = vit
    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(data, name)()).save(calib / f"{name}.png")
    res = cli_run(*VIT, "--int8", "--calib-data", str(calib), "--calib-method", "minmax", "--no-engine", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "cached" in stage_line(res.output, "export")
    assert "int8+fp16 -> model.int8.onnx" in stage_line(res.output, "precision")
    m = manifest(out)
    q = m["precision"]["int8"]
    assert m["precision"]["applied"] == "int8+fp16" and q["method"] == "minmax" and q["calibration_images"] == 2
    graph = onnx.load(str(out / "model.int8.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert q["quantize_linear"] == ops.count("QuantizeLinear") > 0
    # Q/DQ per consumer op type: only the Linear MatMuls (4 per block; the head is FP16), none on attention
    assert q["qdq_per_op"] == {"MatMul": {"nodes": 48, "quantize": 48, "dequantize": 96}}
    assert m["lint"]["qdq"] == q["qdq_per_op"] and not [a for a in m["lint"]["attention"] if a["quantized"]]
    assert m["files"]["calibration_cache"]["sha256"] == sha256_file(out / "calibration_cache.json")  # as 'calibrate' names it
    assert m["accuracy"]["data"] == "calibration images (not held out)" and m["accuracy"]["images"] == 2
    assert f"vitdeploy bench {out} --accuracy-data HELD_OUT_IMAGES/" in res.output  # the documented path: held out
    # Issue 15 item 3: INT8 agreement on the calibration images is named for what it is
    bench_json = tmp_path / "int8_bench.json"
    res = cli_run("bench", str(out), "--accuracy-data", str(calib), "--json", str(bench_json), "--duration-s", "0",
                  "--warmup-ms", "0", "--min-iters", "1", "--quiet")
    assert res.exit_code == 0, res.output
    from vitdeploy.bench import schema

    run = schema.read(bench_json)["runs"][0]
    assert run["precision"] == "int8+fp16" and run["accuracy"]["data_role"] == "calibration"
    assert run["accuracy"]["headline"]["label"] == "top-1 agreement vs the FP32 export, calibration set (not held out)"
    # --accuracy-data: the held-out set is what the accuracy step measures on
    held = tmp_path / "held"
    held.mkdir()
    Image.fromarray(data.astronaut()).save(held / "astronaut.png")
    res = cli_run(*VIT, "--int8", "--calib-data", str(calib), "--calib-method", "minmax", "--accuracy-data", str(held),
                  "--no-engine", "-o", str(out))
    assert res.exit_code == 0, res.output
    assert "cached" in stage_line(res.output, "precision") and "cached" not in stage_line(res.output, "accuracy")
    acc = manifest(out)["accuracy"]
    assert acc["data"] == "held-out images (--accuracy-data)" and acc["data_role"] == "held-out" and acc["images"] == 1


def test_int8_exclude_reaches_the_quantizer(vit, cli_run, tmp_path):
    """`--int8-exclude` (issue 4's recipe) on build: the matching layers stay FP16, recorded in the manifest."""
    import numpy as np

    out, _ = vit
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    # TorchScript names nodes by module path ("/inner/blocks/blocks.11/attn/qkv/MatMul"); dynamo records scopes
    res = cli_run(*VIT, "--int8", "--calib-data", str(calib), "--calib-method", "minmax", "--int8-exclude", "*blocks.11/*",
                  "--no-engine", "-o", str(out))
    assert res.exit_code == 0, res.output
    q = manifest(out)["precision"]["int8"]
    excluded = [k for k, why in q["excluded"].items() if why == "--int8-exclude *blocks.11/*"]
    assert len(excluded) == 4  # qkv, proj, fc1, fc2 of the last block (q@k and attn@v are FP16 in every block)
    assert not any("blocks.11/" in n["name"] for n in q["int8_nodes"])
    assert sum("blocks.10/" in n["name"] for n in q["int8_nodes"]) == 4
    graph = onnx.load(str(out / "model.int8.onnx"))
    dq_fed = {i for n in graph.graph.node if n.op_type == "DequantizeLinear" for i in n.output}
    kept = [n for n in graph.graph.node if n.name in excluded]
    assert len(kept) == 4 and not any(i in dq_fed for n in kept for i in n.input)  # no Q/DQ on their inputs


@pytest.mark.parametrize("args,message", [
    (["--model", "vit_t", "--onnx", "x.onnx"], "exactly one of --model and --onnx"),
    ([], "exactly one of --model and --onnx"),
    (["--model", "vit_t", "--int8"], "--int8 needs calibration images"),
    (["--model", "vit_t", "--int8", "--calib-data", "no_such_dir"], "calibration data no_such_dir does not exist"),
    (["--model", "vit_t", "--int8", "--calib-data", ".", "--calib-images", "0"], "--calib-images must be at least 1"),
    (["--model", "vit_t", "--calib-data", "imgs"], "--calib-data is only used with --int8"),
    (["--model", "vit_t", "--int8-exclude", "blocks.0.*"], "--int8-exclude and --quantize-first-last are only used"),
    (["--model", "vit_t", "--fp16", "--dla-core", "0", "--target", "gpu"], "--dla-core needs a Jetson target"),
    (["--model", "vit_t", "--target", "jetson", "--hardware-compat", "ampere_plus"], "not supported on Jetson"),
    (["--model", "vit_t", "--workspace", "0"], "--workspace must be positive"),
    (["--onnx", "x.onnx", "--img-size", "224"], "--img-size only apply with --model"),
    (["--model", "vit_t", "--batch", "2", "--dynamic-batch", "1:2:4"], "cannot be used together"),
    (["--model", "nope"], "unknown model 'nope'"),
])
def test_impossible_flag_combinations(cli_run, tmp_path, args, message):
    out = tmp_path / "out"
    res = cli_run("build", *args, "-o", str(out))
    assert res.exit_code == EXIT_USAGE
    assert message in res.output
    assert "Traceback" not in res.output
    assert not out.exists()  # nothing written


def test_jetson_target_defaults(monkeypatch, tmp_path):
    from vitdeploy import machine
    from vitdeploy.pipeline import options as pipeline

    orin = {"gpus": [{"name": "Orin", "compute_capability": "8.7"}],
            "jetson": {"module": "NVIDIA Jetson AGX Orin Developer Kit", "l4t": "36.4.0", "jetpack": "6.2", "power_mode": "MAXN (0)"}}
    monkeypatch.setattr(machine, "probe", lambda: orin)
    opts, target = pipeline.resolve(pipeline.BuildOptions(out_dir=tmp_path, alias="vit_t", dla_core=0))
    assert target["target"] == "jetson" and target["jetson"]["power_mode"] == "MAXN (0)"
    assert opts.fp16 is True and opts.workspace_gb == pipeline.JETSON_WORKSPACE_GB and opts.dla_core == 0


def test_engine_commands_for_the_target():
    from vitdeploy.deploy.engine import EngineSettings, target_commands

    s = EngineSettings(profiles=[], workspace_gb=1.0, dla_core=0, target="jetson", timing_cache=Path("/c/t.cache"))
    vd, te = target_commands(Path("b/m.onnx"), Path("b/model.plan"), s, plugins=[])
    assert vd == "vitdeploy build --onnx b/m.onnx -o b --target jetson --dla-core 0"
    # --noTF32: the engine vitdeploy builds (Polygraphy CreateConfig) has TF32 off; trtexec defaults to on
    assert te == ("trtexec --onnx=b/m.onnx --stronglyTyped --noTF32 --saveEngine=b/model.plan --memPoolSize=workspace:1024M "
                  "--timingCacheFile=/c/t.cache --useDLACore=0 --allowGPUFallback")
    with_plugin = target_commands(Path("m.onnx"), Path("model.plan"), s, plugins=[{"kind": "vitdeploy AOT"}])
    assert len(with_plugin) == 1  # trtexec cannot register Python plugins at build time


def test_step_cache_keys(tmp_path):
    from vitdeploy.pipeline import StepCache

    c = StepCache(tmp_path)
    k = c.key("precision", {"onnx": "a" * 64, "precision": "fp16"})
    assert k == c.key("precision", {"precision": "fp16", "onnx": "a" * 64})  # order-independent
    assert k != c.key("precision", {"onnx": "b" * 64, "precision": "fp16"})
    assert k != c.key("accuracy", {"onnx": "a" * 64, "precision": "fp16"})
    from onnx import helper

    def graph(doc: str) -> bytes:  # a real (empty) graph: a step's .onnx outputs are parsed for their data files
        return helper.make_model(helper.make_graph([], "g", [], []), doc_string=doc).SerializeToString()

    f = tmp_path / "x.onnx"
    f.write_bytes(graph("abc"))
    c.store("precision", k, {"onnx": f}, {"applied": "fp16"}, 0.1)
    assert c.lookup("precision", k)["result"] == {"applied": "fp16"}
    assert c.lookup("precision", "0" * 64) is None
    f.write_bytes(graph("abd"))  # same size, other bytes
    assert c.lookup("precision", k) is None


def test_step_keys_follow_the_code_of_their_step(tmp_path, monkeypatch):
    """A fix to a pass or plugin (same vitdeploy version) must redo the rewrite, not reuse a stale graph."""
    from vitdeploy.pipeline import StepCache, cache

    pkg = tmp_path / "pkg"
    (pkg / "plugins" / "p").mkdir(parents=True)
    (pkg / "plugins" / "p" / "spec.py").write_text("VERSION = 1\n")
    (pkg / "models.py").write_text("X = 1\n")
    before = cache.code_digest(("plugins",), pkg)
    assert before == cache.code_digest(("plugins",), pkg)
    (pkg / "models.py").write_text("X = 2\n")  # not the rewrite's code
    cache.code_digest.cache_clear()
    assert cache.code_digest(("plugins",), pkg) == before
    (pkg / "plugins" / "p" / "spec.py").write_text("VERSION = 2\n")
    cache.code_digest.cache_clear()
    assert cache.code_digest(("plugins",), pkg) != before

    c = StepCache(tmp_path)
    inputs = {"onnx": "a" * 64}
    k, k_export = c.key("rewrite", inputs), c.key("export", inputs)
    real = cache.code_digest
    monkeypatch.setattr(cache, "code_digest", lambda parts, root=None: "changed" if parts and "plugins" in parts else real(parts))
    assert c.key("rewrite", inputs) != k  # the plugin code changed
    assert c.key("export", inputs) == k_export  # the export's code did not


def test_dynamic_batch_needs_a_dynamic_graph(tmp_path):
    from vitdeploy.deploy.engine import profiles_for
    from vitdeploy.deploy.export import BatchSpec
    from vitdeploy.errors import VitdeployError

    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    p = tmp_path / "s.onnx"
    onnx.save(onnx.helper.make_model(g), str(p))
    assert profiles_for(p, BatchSpec()) == []
    with pytest.raises(VitdeployError, match="needs a graph with a symbolic batch"):
        profiles_for(p, BatchSpec(1, 4, 8))


@pytest.mark.slow
def test_swin_t_like_make_run(tmp_path, cli_run):
    """`make run`'s command: dynamo export, swin rewrite to plugin nodes, FP16, accuracy; engine skipped here, exit 0."""
    out = tmp_path / "swin_t"
    res = cli_run("build", "--model", "swin_t", "--fp16", "-o", str(out))
    assert res.exit_code == 0, res.output
    m = manifest(out)
    assert m["export"]["exporter"] == "dynamo"
    # every window attention became a plugin node (no silent pass-through when the rewrite is missing)
    assert sum(p["replaced"] for p in m["rewrite"]["passes"]) == 12
    wa = next(p for p in m["plugins"] if p["op"] == "WindowAttention")
    assert wa["count"] == 12 and wa["namespace"] == "vitdeploy" and wa["kind"] == "vitdeploy AOT"
    assert m["engine"]["plugin_mode"]["mode"] == "plugin"
    last = res.output.strip().splitlines()[-1]
    assert "trtexec" not in last  # Python AOT plugins: only vitdeploy can build this graph
    assert m["files"]["onnx"]["path"] == "model.fp16.onnx"
    assert m["accuracy"]["top1_agreement"] >= 75.0
    assert f"vitdeploy build --onnx {out / 'model.fp16.onnx'} -o {out}" in res.output.strip().splitlines()[-1]


def test_dla_on_jetson_thor_is_refused(monkeypatch, tmp_path):
    from vitdeploy import machine
    from vitdeploy.errors import VitdeployError
    from vitdeploy.pipeline import options as pipeline

    thor = {"gpus": [{"name": "NVIDIA Thor", "compute_capability": "11.0"}], "jetson": {"module": "NVIDIA Jetson AGX Thor Developer Kit"}}
    monkeypatch.setattr(machine, "probe", lambda: thor)
    with pytest.raises(VitdeployError, match="Jetson Thor has no DLA"):
        pipeline.resolve(pipeline.BuildOptions(out_dir=tmp_path, alias="vit_t", dla_core=0))


def test_empty_onnx_is_refused_before_anything_is_written(cli_run, tmp_path):
    """Zero bytes parse as an empty ModelProto: it must not be copied in and built as if it were a graph."""
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    res = cli_run("build", "--onnx", str(empty), "-o", str(out), "--no-engine")
    assert res.exit_code == EXIT_USAGE, res.output
    assert "empty.onnx is not a readable ONNX model" in res.output
    assert not out.exists()


def test_dynamic_onnx_without_a_batch_range_is_refused_before_anything_is_written(cli_run, tmp_path):
    """A given ONNX with a symbolic batch and no manifest: the engine profile would silently be 1:1:1."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])
    g = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    src = tmp_path / "in" / "dyn.onnx"
    src.parent.mkdir()
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(src))
    out = tmp_path / "out"
    res = cli_run("build", "--onnx", str(src), "-o", str(out), "--no-engine")
    assert res.exit_code == EXIT_USAGE, res.output
    assert "dyn.onnx has a dynamic batch dimension (input 'x')" in res.output and "--dynamic-batch" in res.output
    assert not out.exists()
    res = cli_run("build", "--onnx", str(src), "-o", str(out), "--no-engine", "--dynamic-batch", "1:4:8")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["engine"]["profiles"][0]["x"]["max"] == [8, 3, 8, 8]


def test_swinv2_non_square_build_up_to_the_engine(tmp_path, cli_run):
    """`build --model swinv2_t --img-size 224 320 --fp16` (test-sized): V2 blocks, a non-square window
    among them, all become plugin nodes, FP16, accuracy; exit 4 without TensorRT (--require-engine)."""
    out = tmp_path / "swinv2"
    res = cli_run("build", "--model", "swinv2_t", "--reduced", "--img-size", "224", "320", "--fp16",
                  "--exporter", "torchscript", "--require-engine", "-o", str(out))
    assert res.exit_code == EXIT_ENGINE_SKIPPED, res.output
    m = manifest(out)
    assert m["model"]["family"] == "swinv2" and m["export"]["inputs"][0]["shape"] == [1, 3, 224, 320]
    swin = next(p for p in m["rewrite"]["passes"] if p["pass"] == "swin")
    assert swin["found"] == swin["replaced"] == 5
    g = onnx.load(str(out / "model.fp16.onnx"))
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in g.graph.node if n.op_type == "WindowAttention"]
    # 56x80, 28x40, 14x20 (padded to 16x24), 7x10 maps; window 8, clamped per dimension in the last stage
    assert [(a["window_size"], a["shift_size"], a["cosine"]) for a in attrs] == [
        ([8, 8], [0, 0], 1), ([8, 8], [0, 0], 1), ([8, 8], [0, 0], 1), ([8, 8], [4, 4], 1), ([7, 8], [0, 0], 1)]
    assert m["accuracy"]["top1_agreement"] >= 75.0
