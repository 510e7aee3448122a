"""Issue 26 item 6: --pretrained without network fails at once in one line saying where the weights go,
and loads them from the local cache when they are there (no 5 x 8 s retries). Nothing leaves the
machine: the "hub" is a closed port on 127.0.0.1 and the cache a temporary folder."""
from __future__ import annotations

import time

import pytest

from vitdeploy import hub
from vitdeploy.errors import VitdeployError
from vitdeploy.models import build_model, get_info

REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def no_network(monkeypatch):
    """Online as far as the environment says, but the hub endpoint refuses connections."""
    from huggingface_hub import constants

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")


def test_offline_env_and_no_cache_fails_at_once_saying_where_to_put_weights(empty_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import timm  # noqa: F401  (the import is not what is timed)

    t0 = time.perf_counter()
    with pytest.raises(VitdeployError) as e:
        build_model(get_info("vit_t"), pretrained=True)
    assert time.perf_counter() - t0 < 5
    line = e.value.one_line()
    assert "\n" not in line
    assert f"HF_HUB_OFFLINE is set (offline) and {REPO} is not in the local cache" in line
    assert f"hf download {REPO}" in line and f"models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k folder into {empty_cache}/" in line
    assert "--checkpoint FILE" in line


def test_unreachable_hub_and_no_cache_fails_without_retries(empty_cache, no_network):
    import timm  # noqa: F401

    t0 = time.perf_counter()
    with pytest.raises(VitdeployError, match=r"cannot reach 127\.0\.0\.1 \(no network\?\) and timm/vit_tiny"):
        build_model(get_info("vit_t"), pretrained=True)
    assert time.perf_counter() - t0 < hub.CONNECT_TIMEOUT_S + 2  # one connection attempt, not the client's ~40 s of retries


def test_cached_weights_load_offline_when_the_hub_is_unreachable(empty_cache, no_network):
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(1)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    snap = empty_cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / ("ab" * 20)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "model.safetensors"))
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("ab" * 20)
    src = hub.source_for(get_info("vit_t"))
    assert src.repo == REPO and hub.cached(src) and hub.plan(get_info("vit_t")) == "cache"
    model = build_model(get_info("vit_t"), pretrained=True)
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE is False  # offline only for that load


def test_transformers_models_need_config_and_weights(empty_cache):
    src = hub.source_for(get_info("deformable_detr"))
    assert src.repo == "SenseTime/deformable-detr" and src.needs[0] == ["config.json"]
    assert not hub.cached(src)
