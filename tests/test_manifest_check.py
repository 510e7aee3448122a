"""Issue 5: an engine's manifest against the running TensorRT and GPU; damaged plan files."""
import json

import pytest

from vitdeploy.artifact import sha256_file
from vitdeploy.deploy.manifest_check import differences, ensure_compatible, verify_plan_file
from vitdeploy.errors import VitdeployError

H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
A100 = {"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}
H100_PCIE = {"name": "NVIDIA H100 PCIe", "compute_capability": "9.0"}
ORIN = {"name": "Jetson AGX Orin", "compute_capability": "8.7"}
T4 = {"name": "Tesla T4", "compute_capability": "7.5"}


def engine(**kw):
    base = {"tensorrt": "10.9.0.34", "gpu": H100, "hardware_compatibility": "none", "version_compatible": False}
    base.update(kw)
    return base


def env(trt="10.9.0.34", gpu=H100, jetson=None, cuda_driver=None):
    return {"tensorrt": trt, "gpu": gpu, "jetson": jetson, "cuda_driver": cuda_driver}


def test_same_environment_passes():
    assert differences(engine(), env()) == ([], [])


def test_other_tensorrt_is_refused_naming_both_versions():
    refuse, _ = differences(engine(), env(trt="10.13.0.35"))
    assert len(refuse) == 1 and "10.13.0.35" in refuse[0] and "10.9.0.34" in refuse[0]
    with pytest.raises(VitdeployError, match="TensorRT 10.13.0.35 here, engine built with TensorRT 10.9.0.34"):
        ensure_compatible(engine(), env(trt="10.13.0.35"))


def test_version_compatible_engine_runs_on_later_tensorrt_including_the_next_major():
    """TensorRT's Engine Compatibility docs: version-compatible engines built with 10 run with 11."""
    vc = engine(version_compatible=True)
    assert differences(vc, env(trt="10.13.0.35"))[0] == []
    assert differences(vc, env(trt="11.0.0"))[0] == []
    refuse, _ = differences(vc, env(trt="10.8.0"))  # older than the builder
    assert "runs on TensorRT >= 10.9.0.34 only" in refuse[0]
    refuse, _ = differences(engine(version_compatible=True, tensorrt="8.6.1"), env(trt="11.1.0"))
    assert "from 8 to 9/10 and 10 to 11" in refuse[0]  # the 11.4 support matrix: no 8 -> 11


def test_other_compute_capability_is_refused():
    refuse, _ = differences(engine(), env(gpu=A100))
    assert len(refuse) == 1
    assert "compute capability 8.0" in refuse[0] and "compute capability 9.0" in refuse[0] and "A100" in refuse[0]


def test_same_compute_capability_other_model_only_warns():
    refuse, warn = differences(engine(), env(gpu=H100_PCIE))
    assert refuse == [] and "H100 PCIe" in warn[0]


def test_hardware_compatible_engine():
    hc = engine(hardware_compatibility="ampere_plus", gpu=A100)
    assert differences(hc, env(gpu=H100))[0] == []
    refuse, _ = differences(hc, env(gpu=T4))
    assert "8.0" in refuse[0]


PTX_H100 = {"WindowAttention": {"target": "sm_90a", "ptx_isa": "8.0", "portable": False, "max_shared_bytes": 24832}}
PTX_PORTABLE = {"WindowAttention": {"target": "sm_80", "ptx_isa": "7.0", "portable": True, "max_shared_bytes": 24832}}


def test_hardware_compatible_plugin_engine_needs_portable_ptx_on_another_gpu():
    """Finding 5: sm_90a plugin PTX loads on exactly Hopper; only portable sm_80 PTX goes elsewhere."""
    fixed = engine(hardware_compatibility="ampere_plus", plugins_registered=["WindowAttention"], plugin_ptx=PTX_H100)
    refuse, _ = differences(fixed, env(gpu=A100))
    assert len(refuse) == 1 and "plugin kernels (WindowAttention) were compiled for the build GPU only" in refuse[0]
    assert differences(fixed, env(gpu=H100))[0] == []  # same compute capability: fine
    old = engine(hardware_compatibility="ampere_plus", plugins_registered=["WindowAttention"])  # manifest without PTX record
    assert differences(old, env(gpu=A100))[0]
    portable = engine(hardware_compatibility="ampere_plus", plugins_registered=["WindowAttention"], plugin_ptx=PTX_PORTABLE)
    assert differences(portable, env(gpu=A100))[0] == []
    assert differences(portable, env(gpu=T4))[0]  # still Ampere or later only


def test_driver_too_old_for_the_plugin_ptx_is_refused_in_one_line():
    eng = engine(plugins_registered=["WindowAttention"], plugin_ptx=PTX_H100)
    assert differences(eng, env(cuda_driver="12.0"))[0] == []  # ISA 8.0: CUDA 12.0 drivers JIT it
    refuse, _ = differences(eng, env(cuda_driver="11.8"))
    assert refuse == ["this machine's CUDA driver (CUDA 11.8) JIT-compiles PTX ISA up to 7.8, but the engine's "
                      "WindowAttention PTX is ISA 8.0 (sm_90a); update the driver"]
    assert differences(eng, env(cuda_driver=None))[0] == []  # unknown driver: TensorRT checks at load


def test_jetson_engine_on_a_discrete_gpu_and_no_tensorrt_both_named():
    refuse, _ = differences(engine(gpu=ORIN, tensorrt="10.3.0.30"), env(trt=None, gpu=H100))
    assert any("TensorRT is not importable" in r for r in refuse)
    assert any("8.7" in r and "9.0" in r for r in refuse)


def test_no_gpu_is_refused():
    refuse, _ = differences(engine(), env(gpu={}))
    assert refuse == ["no CUDA GPU found here"]


@pytest.fixture
def plan(tmp_path):
    p = tmp_path / "model.plan"
    p.write_bytes(bytes(range(256)) * 64)
    return p, {"plan": {"path": "model.plan", "bytes": p.stat().st_size, "sha256": sha256_file(p)}}


def test_intact_plan_passes(plan):
    verify_plan_file(*plan)


def test_truncated_plan(plan):
    p, eng = plan
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(VitdeployError, match="truncated: 1000 bytes, manifest says 16384"):
        verify_plan_file(p, eng)


def test_garbage_plan_same_size(plan):
    p, eng = plan
    p.write_bytes(b"\x00" * eng["plan"]["bytes"])
    with pytest.raises(VitdeployError, match="corrupted"):
        verify_plan_file(p, eng)


def test_empty_and_missing_plan(plan):
    p, eng = plan
    p.write_bytes(b"")
    with pytest.raises(VitdeployError, match="empty"):
        verify_plan_file(p, eng)
    with pytest.raises(VitdeployError, match="does not exist"):
        verify_plan_file(p.parent / "nope.plan", eng)


def _write_build(tmp_path, data: bytes, **engine_kw):
    p = tmp_path / "model.plan"
    p.write_bytes(data)
    entry = {"path": "model.plan", "bytes": len(data), "sha256": sha256_file(p)}
    manifest = {"schema": 1, "files": {"engine": entry}, "engine": {**engine(**engine_kw), "plan": entry}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return p


def test_engine_refuses_a_truncated_plan_before_tensorrt_loads(tmp_path):
    """Here TensorRT is absent: reaching TensorRT would say so. The damage must be named first."""
    import vitdeploy

    p = _write_build(tmp_path, b"ftrt" + bytes(4000))
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(VitdeployError, match="truncated"):
        vitdeploy.Engine(p)
    with pytest.raises(VitdeployError, match="truncated"):
        vitdeploy.Engine(tmp_path)  # a build directory works too


def test_engine_refuses_other_environment_naming_it(tmp_path):
    import vitdeploy

    p = _write_build(tmp_path, b"ftrt" + bytes(4000), tensorrt="8.6.1")
    with pytest.raises(VitdeployError, match="engine cannot run here: .*8.6.1"):
        vitdeploy.Engine(p)


def test_engine_without_manifest(tmp_path):
    import vitdeploy

    p = tmp_path / "model.plan"
    p.write_bytes(b"x" * 10)
    with pytest.raises(VitdeployError, match="no manifest.json next to"):
        vitdeploy.Engine(p)


def test_importing_vitdeploy_does_not_import_tensorrt_or_numpy():
    import subprocess
    import sys

    code = "import sys, vitdeploy; vitdeploy.__version__; print(any(m in sys.modules for m in ('tensorrt', 'numpy', 'torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_plan_not_described_by_its_manifest_is_refused(tmp_path):
    """A stale model.plan next to a manifest whose build skipped the engine must not load."""
    import vitdeploy

    (tmp_path / "model.plan").write_bytes(b"ftrt" + bytes(100))
    (tmp_path / "manifest.json").write_text(json.dumps({"schema": 1, "files": {}, "engine": {"built": False, "skipped": "--no-engine"}}))
    with pytest.raises(VitdeployError, match=r"does not describe it \(engine step: --no-engine\)"):
        vitdeploy.Engine(tmp_path / "model.plan")
