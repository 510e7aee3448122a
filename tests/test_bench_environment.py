"""What a bench record says about the machine: parsed nvidia-smi fields, versions, commit."""
from __future__ import annotations

from vitdeploy.bench import environment


def test_parse_nvidia_smi_drops_unreadable_fields():
    line = "NVIDIA H100 80GB HBM3, 550.54.15, 00000000:19:00.0, 1980 MHz, 2619 MHz, 1980 MHz, 2619 MHz, [N/A], 120.50 W, 700.00 W, Enabled, 34, P0"
    info = environment.parse_nvidia_smi(line)
    assert info["name"] == "NVIDIA H100 80GB HBM3"
    assert info["clocks.sm"] == "1980 MHz" and info["power.limit"] == "700.00 W" and info["pstate"] == "P0"
    assert "clocks.applications.graphics" not in info


def test_collect_on_cpu_records_versions_cpu_and_commit():
    env = environment.collect("cpu")
    assert env["versions"]["python"] and env["versions"]["torch"] and env["versions"]["vitdeploy"]
    assert env["cpu"]["cores"] >= 1
    assert "gpu" not in env
    git = environment.git_commit()
    if git is not None:  # running from a checkout
        assert len(git["commit"]) == 40 and env["git"]["commit"] == git["commit"]
    assert environment.device_name(env, "cpu")
    assert environment.device_name({"gpu": {"nvidia_smi": {"name": "Orin"}}}, "cuda") == "Orin"
