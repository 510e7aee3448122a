"""Issue 5: `vitdeploy doctor` shows the machine and what build will do here."""
import json

from vitdeploy.errors import EXIT_OK


def test_doctor_screen(cli_run):
    res = cli_run("doctor")
    assert res.exit_code == EXIT_OK
    for row in ("Python", "torch", "CUDA", "driver", "GPUs", "TensorRT", "Triton", "onnxruntime", "Jetson", "build here"):
        assert row in res.output, row
    assert "CPUExecutionProvider" in res.output


def test_doctor_json_matches_this_machine(cli_run):
    import onnxruntime

    from vitdeploy.machine import tensorrt_version

    info = json.loads(cli_run("doctor", "--json").output)
    assert info["onnxruntime"]["version"] == onnxruntime.__version__
    assert info["tensorrt"]["version"] == tensorrt_version()
    if tensorrt_version() is None:
        assert info["tensorrt"]["aot_plugins"] is False and info["tensorrt"]["error"]
        # what build really does without TensorRT (tests/test_build.py): exit 0, exit 4 only with --require-engine
        assert any("no TensorRT" in line and "exit 0 (4 with --require-engine)" in line for line in info["build_will"])


def test_doctor_on_a_jetpack6_jetson(monkeypatch):
    """What doctor says on a Jetson Orin with TensorRT 10.3 (JetPack 6): native rewrite, no --plugins on."""
    from vitdeploy import machine
    from vitdeploy.commands import doctor

    orin = {"gpus": [{"name": "Orin (nvgpu)", "compute_capability": "8.7"}],
            "jetson": {"module": "NVIDIA Jetson Orin Nano Developer Kit", "l4t": "36.4.0", "jetpack": "6.2", "power_mode": "15W (0)"}}
    monkeypatch.setattr(machine, "probe", lambda: orin)
    monkeypatch.setattr(machine, "tensorrt_version", lambda: "10.3.0.30")
    info = doctor.collect()
    plan = "\n".join(info["build_will"])
    assert "TensorRT 10.3.0.30" in plan and "Orin (nvgpu)" in plan and "compute capability 8.7" in plan
    assert "--plugins auto -> native" in plan
    assert "--plugins on is refused" in plan
    assert "Jetson" in plan and "--dla-core" in plan


def test_doctor_shows_each_plugins_ptx_and_refuses_an_old_driver(monkeypatch):
    """Issue 11: per plugin, the .target and pinned PTX ISA an engine built here gets; an 11.8 driver
    cannot JIT Hopper's ISA 8.0, and doctor says the build will refuse."""
    from vitdeploy import machine
    from vitdeploy.commands import doctor

    monkeypatch.delenv("VITDEPLOY_PTX_ARCH", raising=False)
    monkeypatch.delenv("VITDEPLOY_PTX_ISA", raising=False)
    h100 = {"gpus": [{"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}], "cuda_driver_api": "12.8"}
    monkeypatch.setattr(machine, "probe", lambda: h100)
    monkeypatch.setattr(machine, "tensorrt_version", lambda: "10.13.0.35")
    info = doctor.collect()["plugin_ptx"]
    assert info["driver_max_isa"] == "8.7"
    for op in ("WindowAttention", "GatedPositionalAttention", "MultiscaleDeformableAttention"):
        e = info["plugins"][op]
        assert (e["none"]["target"], e["none"]["ptx_isa"], e["none"]["driver_ok"]) == ("sm_90a", "8.0", True)
        assert (e["ampere_plus"]["target"], e["ampere_plus"]["ptx_isa"], e["ampere_plus"]["portable"]) == ("sm_80", "7.8", True)
    monkeypatch.setattr(machine, "probe", lambda: {**h100, "cuda_driver_api": "11.8"})
    plan = "\n".join(doctor.collect()["build_will"])
    assert "WindowAttention: this driver JITs PTX ISA <= 7.8, the plugin PTX needs 8.0" in plan


def test_cuda_runtime_comes_from_the_runtime_not_cuda_bindings(cli_run, monkeypatch):
    """Issue 15 item 12: doctor printed cuda-bindings' CUDA version (13.4/13.5) as "CUDA runtime"; the runtime wheel is 13.0."""
    from importlib.metadata import PackageNotFoundError, version

    import pytest

    from vitdeploy import machine

    try:
        wheel = version("nvidia-cuda-runtime")
    except PackageNotFoundError:
        pytest.skip("no nvidia-cuda-runtime wheel in this environment")
    rt = machine.cuda_runtime()
    assert rt["version"] == ".".join(wheel.split(".")[:2])
    assert rt["source"].startswith(f"nvidia-cuda-runtime {wheel} wheel (libcudart")
    info = json.loads(cli_run("doctor", "--json").output)
    assert info["gpu"]["cuda_runtime"] == rt["version"] and info["gpu"]["cuda_runtime_source"] == rt["source"]
    assert f"runtime {rt['version']}" in cli_run("doctor").output
    # Without the wheel (a system CUDA), libcudart itself answers; with neither, nothing is guessed.
    import importlib.metadata as md

    def no_wheel(name):
        raise PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", no_wheel)
    monkeypatch.setattr(machine, "_cudart_version", lambda lib: None)
    assert machine.cuda_runtime() == {}
