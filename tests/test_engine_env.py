"""Issue 5: what TensorRT/GPU/Jetson environment means for the build (pure functions, no TensorRT)."""
import pytest

from vitdeploy import machine
from vitdeploy.errors import VitdeployError
from vitdeploy.machine import parse_version, select_plugin_mode, supports_aot_plugins, supports_dla


@pytest.mark.parametrize("version,aot", [
    ("10.3.0.30", False),  # JetPack 6.0/6.1
    ("10.8.0.43", False),
    ("10.9.0.34", True),
    ("10.13.3.9", True),  # 13 > 9 numerically, not as text
    ("11.4.0.106", True),
    ("8.6.1", False),
    (None, False),
    ("garbage", False),
])
def test_aot_support_by_version(version, aot):
    assert supports_aot_plugins(version) is aot


def test_parse_version():
    assert parse_version("10.13.3.9") == (10, 13, 3, 9)
    assert parse_version("11.0.0+cuda13") == (11, 0, 0)
    assert parse_version("") is None


@pytest.mark.parametrize("requested,version,target,mode", [
    ("auto", "10.9.0", "gpu", "plugin"),
    ("auto", "11.4.0.106", "jetson", "plugin"),  # JetPack 7 (Thor) has AOT support
    ("auto", "10.3.0.30", "jetson", "native"),
    ("auto", "10.8.0", "gpu", "native"),
    ("off", "11.4.0", "gpu", "native"),
    ("on", "10.9.0", "gpu", "plugin"),
    ("auto", None, "gpu", "plugin"),  # no TensorRT here: prepare for a current TensorRT
    ("auto", None, "jetson", "native"),  # ... or for JetPack 6 on a Jetson target
    ("on", None, "jetson", "plugin"),
])
def test_plugin_mode_selection(requested, version, target, mode):
    d = select_plugin_mode(requested, version, target)
    assert d.mode == mode
    assert d.reason


def test_auto_on_jetpack6_says_why():
    d = select_plugin_mode("auto", "10.3.0.30", "jetson")
    assert "10.3.0.30" in d.reason and "plugin-free" in d.reason


def test_plugins_on_with_old_tensorrt_is_a_clear_error():
    with pytest.raises(VitdeployError) as e:
        select_plugin_mode("on", "10.3.0.30", "jetson")
    assert "10.9" in e.value.message and "10.3.0.30" in e.value.message
    assert "--plugins auto" in e.value.hint


def test_smi_parsing():
    text = "NVIDIA H100 80GB HBM3, 9.0, 550.54.15, 81559 MiB\nNVIDIA A10, 8.6, 550.54.15, [N/A]\n"
    gpus = machine.parse_smi_gpus(text)
    assert gpus[0] == {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "compute_capability": "9.0", "memory": "81559 MiB"}
    assert gpus[1]["compute_capability"] == "8.6" and "memory" not in gpus[1]


def test_jetson_release_parsing():
    release = "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024"
    assert machine.parse_tegra_release(release) == "36.4.0"
    assert machine.jetpack_for_l4t("36.4.0") == "6.2"
    assert machine.jetpack_for_l4t("99.1") is None
    assert machine.parse_nvpmodel("NV Power Mode: MAXN\n0\n") == "MAXN (0)"
    assert machine.parse_nvpmodel("NV Power Mode: 15W\n") == "15W"


def test_probe_here_finds_no_gpu_without_guessing():
    env = machine.probe()
    import shutil

    if shutil.which("nvidia-smi") is None and not env.get("jetson"):
        assert "gpus" not in env and "driver" not in env


@pytest.mark.parametrize("version,dla", [("8.5.2", True), ("10.3.0.30", True), ("10.7.0", True), ("10.8.0", False),
                                         ("11.0.0", False), ("11.4.0", False), ("11.4.1", True), (None, False)])
def test_dla_support_by_version(version, dla):
    assert supports_dla(version) is dla
