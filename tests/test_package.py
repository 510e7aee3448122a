"""Issue 18: `vitdeploy package` hands build directories to Triton and DeepStream.

Three real build directories (no TensorRT here, so no engine): swin_t FP16 with a dynamic
batch 1:8:32, convit_t FP32 through `build --triton-repo`, and the reduced Deformable DETR
FP16. Every config.pbtxt is parsed with Triton's own ModelConfig protobuf here, in the test,
and compared with the ONNX file it serves; that file runs through vitdeploy.onnxrt.session
with the config's shapes; client.py is driven against a minimal KServe-v2 HTTP stand-in
(this is not Triton: it checks the request against config.pbtxt and runs the served ONNX).
"""
from __future__ import annotations

import importlib.util
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from cli_runner import invoke as _invoke
from vitdeploy.errors import EXIT_USAGE

pytestmark = pytest.mark.slow

TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.INT64: "TYPE_INT64"}


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image
    from skimage import data

    p = tmp_path_factory.mktemp("img") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(p)  # 451x300: the shorter-side resize and centre crop both matter
    return p


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """{name: (build dir, repo, output of the packaging run)} for the three models."""
    root = tmp_path_factory.mktemp("serving")
    repo = root / "models"
    out = {}
    swin = root / "swin_t"
    r = _invoke(["build", "--model", "swin_t", "--fp16", "--dynamic-batch", "1:8:32", "--no-engine", "-o", str(swin)])
    assert r.exit_code == 0, r.output
    r = _invoke(["package", str(swin), "--triton-repo", str(repo), "--instances", "2", "--max-queue-delay-us", "500"])
    assert r.exit_code == 0, r.output
    out["swin_t"] = (swin, repo, r.output)
    convit = root / "convit_t"
    r = _invoke(["build", "--model", "convit_t", "--exporter", "torchscript", "-o", str(convit), "--triton-repo", str(repo)])
    assert r.exit_code == 0, r.output  # no TensorRT here: exit 0, with the "engine skipped" line
    out["convit_t"] = (convit, repo, r.output)
    detr = root / "detr"
    r = _invoke(["build", "--model", "deformable_detr", "--reduced", "--img-size", "64", "--fp16", "--no-engine", "-o", str(detr)])
    assert r.exit_code == 0, r.output
    r = _invoke(["package", str(detr), "--triton-repo", str(repo), "--name", "detr"])
    assert r.exit_code == 0, r.output
    out["detr"] = (detr, repo, r.output)
    return out


def config(repo: Path, name: str):
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def onnx_io(path: Path):
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}

    def desc(vs):
        return [(v.name, TYPES[v.type.tensor_type.elem_type],
                 [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]) for v in vs]

    return desc([i for i in m.graph.input if i.name not in inits]), desc(m.graph.output)


@pytest.mark.parametrize("name", ["swin_t", "convit_t", "detr"])
def test_config_parses_with_tritons_protobuf_and_declares_the_served_graphs_io(served, name):
    build, repo, _ = served["detr" if name == "detr" else name]
    cfg = config(repo, name)
    assert cfg.name == name and cfg.platform == "onnxruntime_onnx" and cfg.default_model_filename == "model.onnx"
    model = repo / name / "1" / "model.onnx"
    inputs, outputs = onnx_io(model)
    batch = [-1] if cfg.max_batch_size else []

    def declared(ts):
        return [(t.name, mc.DataType.Name(t.data_type), batch + list(t.dims)) for t in ts]

    assert declared(cfg.input) == inputs and declared(cfg.output) == outputs
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_AUTO
    if name == "swin_t":
        assert cfg.max_batch_size == 32 and list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]
        assert cfg.dynamic_batching.max_queue_delay_microseconds == 500 and cfg.instance_group[0].count == 2
        assert inputs == [("input", "TYPE_FP32", [-1, 3, 224, 224])]
        assert cfg.output[0].label_filename == "labels.txt"
    else:  # static batch-1 builds: no batching, full dims
        assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
        assert list(cfg.input[0].dims)[0] == 1
    m = json.loads((repo / name / "1" / "manifest.json").read_text())
    assert m["serving"]["platform"] == "onnxruntime_onnx" and m["model"]["alias"] == json.loads(
        (build / "manifest.json").read_text())["model"]["alias"]


@pytest.mark.parametrize("name,form", [
    ("swin_t", "swin rewritten in native mode, 12 subgraphs"),
    ("convit_t", "gpsa+attention_scale rewritten in native mode, 12 subgraphs"),
    ("detr", "the un-rewritten export; msda left as exported"),
])
def test_served_onnx_is_plugin_free_and_says_which_it_is(served, name, form):
    _, repo, output = served[name]
    graph = onnx.load(str(repo / name / "1" / "model.onnx"), load_external_data=False)
    assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}  # nothing ONNX Runtime servers lack
    assert form in (repo / name / "README.md").read_text() and form in output
    ops = {n.op_type for n in graph.graph.node}
    if name == "detr":
        assert "GridSample" in ops  # the plain deformable attention, as exported
    precision = "FP32" if name == "convit_t" else "FP16"
    assert f"a plugin-free {precision} ONNX" in (repo / name / "config.pbtxt").read_text()
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.graph.initializer) == (precision == "FP16")


@pytest.mark.parametrize("name", ["swin_t", "convit_t", "detr"])
def test_served_onnx_runs_with_the_configs_shapes_and_agrees_with_the_build(served, name):
    from vitdeploy.onnxrt import session
    from vitdeploy.parity import random_images

    build, repo, _ = served[name]
    cfg = config(repo, name)
    sess = session(repo / name / "1" / "model.onnx")
    for b in ([1, 3] if cfg.max_batch_size else [None]):
        shape = ([b] if b else []) + list(cfg.input[0].dims)
        x = random_images(shape[0], tuple(shape[2:]), seed=7)
        outs = sess.run(None, {cfg.input[0].name: x})
        for o, got in zip(cfg.output, outs):
            assert list(got.shape) == ([b] if b else []) + list(o.dims)
    # Same numbers as the build's final graph (plugin nodes through their CPU reference).
    final = json.loads((build / "manifest.json").read_text())["files"]["onnx"]["path"]
    ref = session(build / final).run(None, {"input": x})
    for r, g in zip(ref, outs):
        r, g = r.astype(np.float64).ravel(), g.astype(np.float64).ravel()
        assert np.dot(r, g) / (np.linalg.norm(r) * np.linalg.norm(g)) > 0.999


def _load_client(repo: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"client_{name}", repo / name / "client.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["swin_t", "convit_t", "detr"])
def test_client_preprocesses_exactly_as_vitdeploy_infer(served, photo, name):
    from vitdeploy.deploy.preprocess import load_image

    build, repo, _ = served[name]
    client = _load_client(repo, name)
    spec = client.load_spec(repo / name / "preprocess.json")
    got, size = client.preprocess(photo, spec)
    want, want_size = load_image(photo, json.loads((build / "manifest.json").read_text())["preprocessing"])
    assert size == want_size and got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)  # bit for bit: same resize, crop and arithmetic


class KServeStandIn(BaseHTTPRequestHandler):
    """POST /v2/models/NAME/infer (KServe v2, binary tensors in, JSON out): checks the request against
    config.pbtxt and runs the served ONNX. Enough of the protocol for client.py; not Triton."""

    repo: Path
    seen: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        from vitdeploy.onnxrt import session

        m = re.fullmatch(r"/v2/models/([^/]+)/infer", self.path)
        name = m.group(1)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = int(self.headers.get("Inference-Header-Content-Length", len(body)))
        req, offset = json.loads(body[:n]), n
        cfg = config(self.repo, name)
        feeds = {}
        for inp, decl in zip(req["inputs"], cfg.input):
            assert inp["name"] == decl.name and inp["datatype"] == mc.DataType.Name(decl.data_type).removeprefix("TYPE_")
            assert inp["shape"][1 if cfg.max_batch_size else 0:] == list(decl.dims)
            size = inp["parameters"]["binary_data_size"]
            feeds[inp["name"]] = np.frombuffer(body[offset:offset + size], np.float32).reshape(inp["shape"])
            offset += size
        self.seen.append((name, req))
        outs = session(self.repo / name / "1" / "model.onnx").run(None, feeds)
        doc = {"model_name": name, "outputs": [
            {"name": o.name, "datatype": "FP32", "shape": list(v.shape), "data": v.astype(np.float32).ravel().tolist()}
            for o, v in zip(cfg.output, outs)]}
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def stand_in(served):
    handler = type("Handler", (KServeStandIn,), {"repo": served["swin_t"][1], "seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


@pytest.mark.parametrize("name", ["swin_t", "detr"])
def test_client_calls_the_server_and_reads_results_as_infer_does(served, photo, stand_in, name):
    url, handler = stand_in
    _, repo, _ = served[name]
    client = _load_client(repo, name)
    res = client.infer(photo, url=url, k=5, threshold=0.0, spec=client.load_spec(repo / name / "preprocess.json"))
    assert handler.seen[-1][0] == name
    # `vitdeploy infer` on the very file the server runs (its manifest sits beside it in 1/).
    r = _invoke(["infer", str(repo / name / "1" / "model.onnx"), "--image", str(photo), "--topk", "5",
                 "--threshold", "0", "--json"])
    assert r.exit_code == 0, r.output
    want = json.loads(r.stdout)
    if name == "detr":
        got = res["detections"]
        assert [d["class"] for d in got] == [d["label"] for d in want["detections"]]
        np.testing.assert_allclose([d["score"] for d in got], [d["score"] for d in want["detections"]], rtol=1e-5)
        np.testing.assert_allclose([d["box"] for d in got], [d["box"] for d in want["detections"]], rtol=1e-4, atol=1e-3)
    else:
        assert [t["class"] for t in res["topk"]] == [t["class"] for t in want["topk"]]
        assert [t["name"] for t in res["topk"]] == [t["name"] for t in want["topk"]] and res["topk"][0]["name"]
        np.testing.assert_allclose([t["probability"] for t in res["topk"]], [t["probability"] for t in want["topk"]],
                                   rtol=1e-5)


def test_deepstream_config_parses_and_reproduces_the_normalisation(served, tmp_path):
    from vitdeploy.deploy.serving.deepstream import read_config

    build, _, _ = served["convit_t"]
    ds = tmp_path / "ds"
    r = _invoke(["package", str(build), "--deepstream", str(ds)])
    assert r.exit_code == 0, r.output
    prop = read_config(ds / "config_infer_primary.txt")  # GLib key-file syntax, read with configparser
    assert prop["network-type"] == "1" and prop["network-mode"] == "0" and prop["batch-size"] == "1"
    assert prop["infer-dims"] == "3;224;224" and prop["model-color-format"] == "0"
    assert (ds / prop["onnx-file"]).is_file() and prop["output-blob-names"] == "logits"
    labels = (ds / prop["labelfile-path"]).read_text().splitlines()
    assert len(labels) == 1 and len(labels[0].split(";")) == 1000  # classifier labels: one line, ';'-separated
    assert labels[0].split(";")[0].startswith("tench")
    err = float(re.search(r"worst-case input error ([0-9.e-]+)", r.output).group(1))
    k = float(prop["net-scale-factor"])
    offsets = [float(v) for v in prop["offsets"].split(";")]
    pp = json.loads((build / "manifest.json").read_text())["preprocessing"]
    x = np.arange(256, dtype=np.float64)[:, None]
    nvinfer = k * (x - np.asarray(offsets))
    model = (x / 255 - np.asarray(pp["mean"])) / np.asarray(pp["std"])
    worst = np.abs(nvinfer - model).max()
    assert worst <= err * (1 + 1e-3) and worst >= err * (1 - 1e-3)  # the printed bound is the real worst case
    assert err < 0.03  # ImageNet std differ by < 2%: a small error on inputs of range about ±2.5


def test_deepstream_refuses_a_detector_before_writing(served, tmp_path):
    build, _, _ = served["detr"]
    r = _invoke(["package", str(build), "--deepstream", str(tmp_path / "ds")])
    assert r.exit_code == EXIT_USAGE and "is a detector" in r.output and "--triton-repo" in r.output
    assert not (tmp_path / "ds").exists()


def test_rerun_replaces_its_own_folder_and_refuses_a_foreign_one(served, tmp_path):
    build, repo, _ = served["convit_t"]
    r = _invoke(["package", str(build), "--triton-repo", str(repo)])
    assert r.exit_code == 0 and "(cached)" in r.output  # the plugin-free graph comes from the step cache
    foreign = tmp_path / "repo" / "convit_t"
    foreign.mkdir(parents=True)
    (foreign / "config.pbtxt").write_text('name: "convit_t"\n')
    r = _invoke(["package", str(build), "--triton-repo", str(tmp_path / "repo")])
    assert r.exit_code == EXIT_USAGE and "was not written by vitdeploy" in r.output
    assert (foreign / "config.pbtxt").read_text() == 'name: "convit_t"\n'


@pytest.mark.parametrize("args,message", [
    ([], "nothing to package"),
    (["--triton-repo", "R", "--instances", "0"], "--instances must be at least 1"),
    (["--triton-repo", "R", "--name", "a/b"], "is not a usable Triton model name"),
    (["--triton-repo", "R", "--platform", "tensorrt"], "has no engine (TensorRT is not installed here"),
])
def test_bad_arguments_are_one_line_and_write_nothing(served, tmp_path, args, message):
    build, _, _ = served["convit_t"]
    args = [str(tmp_path / a) if a == "R" else a for a in args]
    r = _invoke(["package", str(build), *args])
    assert r.exit_code == EXIT_USAGE and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "R").exists()


def test_engine_configs_for_the_tensorrt_backend(served):
    """The tensorrt_plan config for an engine's I/O (here the final graph's: no engine can be built on this
    machine). A config-writer test, not an engine test: the plan's own I/O is read with TensorRT where it exists."""
    from vitdeploy.deploy.serving import triton
    from vitdeploy.deploy.serving.artifact import Served, batch_of
    from vitdeploy.onnxgraph import io_signature

    for name, op in (("swin_t", "vitdeploy AOT"), ("detr", "TensorRT stock")):
        build, _, _ = served[name]
        m = json.loads((build / "manifest.json").read_text())
        final = build / m["files"]["onnx"]["path"]
        io = io_signature(final)
        s = Served("engine", build / "model.plan", io, final.name, batch_of(m, io), "fp16", m["plugins"], "the engine",
                   m, build)
        cfg = triton.parse(triton.render(triton.build_config(s, name, instances=1), s))
        triton.check(cfg, s)
        assert cfg.platform == "tensorrt_plan" and cfg.default_model_filename == "model.plan"
        assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
        assert {p["kind"] for p in m["plugins"]} == {op}
        text = triton.readme(s, name, cfg, Path("models"))
        if op == "TensorRT stock":
            assert "libnvinfer_plugin, which Triton's TensorRT backend loads itself" in text
        else:
            assert "no plugin library" in text
        if name == "swin_t":
            assert cfg.max_batch_size == 32 and [list(t.dims) for t in cfg.input] == [[3, 224, 224]]


def test_build_from_an_already_rewritten_graph_says_so(served, tmp_path):
    """`build --onnx model.rewritten.onnx`: no "0/0 subgraphs replaced", no false accuracy line, no Next: echo."""
    import shutil

    src, _, _ = served["convit_t"]
    d = tmp_path / "convit_t"
    shutil.copytree(src, d)
    r = _invoke(["build", "--onnx", str(d / "model.rewritten.onnx"), "-o", str(d), "--no-engine"])
    assert r.exit_code == 0, r.output
    line = next(x for x in r.output.splitlines() if x.startswith("– rewrite"))
    assert "model.rewritten.onnx is already rewritten (10 GatedPositionalAttention plugin nodes): kept as given" in line
    assert "0/0" not in r.output and "final graph is the exported graph" not in r.output
    acc = next(x for x in r.output.splitlines() if x.startswith(("– accuracy", "✔ accuracy")))
    assert "kept the figures recorded when model.rewritten.onnx was built" in acc
    assert "vitdeploy build" not in r.output[r.output.index("Next:"):]


def test_manifest_carries_the_detection_post_processing(served):
    build, _, _ = served["detr"]
    m = json.loads((build / "manifest.json").read_text())
    post = m["postprocessing"]
    assert post["task"] == "detection" and post["scores"] == {"output": "logits", "activation": "sigmoid",
                                                              "shape": "[B, queries, classes]"}
    assert post["boxes"]["format"] == "cxcywh" and post["boxes"]["normalized"] is True
    assert m["labels"]["num_classes"] == 91 and m["labels"]["names"][1] == "person"  # the listed model's COCO head
    assert m["preprocessing"]["resize"] == {"mode": "exact", "size": [64, 64], "crop": [64, 64]}
    spec = json.loads((served["detr"][1] / "detr" / "preprocess.json").read_text())
    assert spec["postprocessing"] == post and spec["input"]["static_batch"] == 1
