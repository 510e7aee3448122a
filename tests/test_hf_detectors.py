"""RT-DETR (v2), D-FINE and Mask2Former aliases (`vitdeploy.hf_detectors`): configurations, random weights that
decide RT-DETR's query selection, the manifest's post-processing, and one reduced build through INT8."""
import json

import numpy as np
import pytest
import torch

from vitdeploy import hf_detectors
from vitdeploy.models import build_model, check_exporter, get_info, postprocessing_for
from vitdeploy.errors import VitdeployError


@pytest.mark.parametrize("alias,levels,points,queries,d_model", [
    ("rtdetr_r18", 3, 4, 300, 256), ("rtdetr_r50", 3, 4, 300, 256), ("rtdetr_v2_r18", 3, 4, 300, 256),
    ("dfine_n", 2, [6, 6], 300, 128), ("dfine_s", 3, [3, 6, 3], 300, 256)])
def test_published_configurations(alias, levels, points, queries, d_model):
    """What the conversion scripts in transformers set for these checkpoints (levels, points per level, width)."""
    info = get_info(alias)
    cfg = hf_detectors.config_for(info.family, info.overrides["variant"])
    assert (cfg.num_feature_levels, cfg.decoder_n_points, cfg.num_queries, cfg.d_model) == (levels, points, queries, d_model)
    assert cfg.num_labels == 80 and cfg.id2label[0] == "person" and cfg.id2label[79] == "toothbrush"
    reduced = hf_detectors.config_for(info.family, info.overrides["variant"], reduced=True)
    assert (reduced.num_feature_levels, reduced.decoder_n_points) == (levels, points)  # the structure the pass sees


def test_mask2former_swin_t_configuration():
    cfg = hf_detectors.config_for("mask2former", "swin_t")
    assert cfg.backbone_config.depths == [2, 2, 6, 2] and cfg.backbone_config.embed_dim == 96
    assert (cfg.encoder_layers, cfg.num_queries, cfg.num_labels) == (6, 100, 80)


def test_exporters_and_reasons():
    assert check_exporter(get_info("rtdetr_v2_r18"), "auto") == "torchscript"
    with pytest.raises(VitdeployError, match="aten._is_all_true"):
        check_exporter(get_info("dfine_s"), "dynamo")


def test_random_weights_decide_the_query_selection():
    """transformers' own random init leaves every encoder class score at the prior bias (all tied); after
    `informative_init` the scores differ, so top-k selects the same queries in every runtime."""
    from transformers import RTDetrV2ForObjectDetection

    torch.manual_seed(0)
    config = hf_detectors.config_for("rtdetr_v2", "r18", reduced=True)
    scores = {}
    for name, model in (("init", RTDetrV2ForObjectDetection(config).eval()),
                        ("informative", build_model(get_info("rtdetr_v2_r18"), small=True, img_size=(64, 64)))):
        seen = []
        model.model.enc_score_head.register_forward_hook(lambda m, i, o: seen.append(o.max(-1).values))
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
        scores[name] = seen[0][0]
    assert float(scores["init"].std()) < 1e-5  # ties
    top = scores["informative"].sort(descending=True).values
    assert float((top[:-1] - top[1:]).min()) > 1e-6  # every score distinct


def test_postprocessing_recorded_for_runtimes():
    det = postprocessing_for(get_info("rtdetr_v2_r18"))
    assert det["boxes"]["format"] == "cxcywh" and det["scores"]["activation"] == "sigmoid"
    assert "top-300" in det["query_selection"] and "top-300" in det["select"]
    seg = postprocessing_for(get_info("mask2former_swin_t"))
    assert seg["task"] == "segmentation" and seg["scores"]["no_object"] == "last class"


def test_reduced_dfine_builds_through_int8_with_every_core_replaced(tmp_path, cli_run):
    """D-FINE-S reduced: its [3, 6, 3] cores become vitdeploy's plugin (the stock plugin takes one P per level),
    then INT8 (min-max calibration: entropy's per-tensor search costs ~1 s a tensor in ONNX Runtime), the
    detection accuracy step against the FP32 export, lint, and the engine command; the manifest records the
    post-processing a runtime needs."""
    calib = tmp_path / "calib.npz"
    np.savez(calib, images=np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32))
    out = tmp_path / "b"
    r = cli_run("build", "--model", "dfine_s", "--reduced", "--img-size", "64", "--int8", "--calib-data", calib,
                "--calib-method", "minmax", "-o", out)
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["export"]["exporter"] == "torchscript"
    (msda,) = [p for p in m["rewrite"]["passes"] if p["pass"] == "msda"]
    assert msda["found"] == msda["replaced"] == 2
    assert all("per-level point counts [3, 6, 3]" in c["emitted"] for c in msda["candidates"])
    assert {p["op"]: p["count"] for p in m["rewrite"]["plugins"]} == {"MultiscaleDeformableAttention": 2}
    assert m["precision"]["applied"] == "int8+fp16"
    acc = m["accuracy"]
    assert acc["task"] == "detection" and 0.0 <= acc["matched_iou_mean"] <= 1.0 and acc["score_delta_max"] >= 0.0
    assert m["postprocessing"]["select"].startswith("top-12")  # the reduced model's 12 queries
    assert m["labels"]["num_classes"] == 80 and m["labels"]["names"][0] == "person"
    # the engine step: here no TensorRT, so the command to run on the target, with the final graph
    assert "engine skipped: TensorRT is not installed here" in r.output and "model.int8.onnx -o" in r.output


def test_segmentation_agreement_measures_maps_and_masks():
    """Mask2Former's accuracy figures: the semantic map pixel by pixel, per-query mask IoU and class deltas."""
    from vitdeploy.calibration.accuracy import compare_segmentations, semantic_maps

    rng = np.random.default_rng(0)
    cls = rng.normal(0, 2, size=(2, 5, 4)).astype(np.float32)  # 3 classes + no-object
    masks = rng.normal(0, 3, size=(2, 5, 8, 8)).astype(np.float32)
    same = compare_segmentations(cls, masks, cls.copy(), masks.copy())
    assert same["segmentation_agreement"] == 100.0 and same["query_mask_iou_min"] == 1.0
    assert same["class_prob_delta_max"] == 0.0
    flipped = masks.copy()
    flipped[0, 2] *= -1  # one query's mask inverted
    diff = compare_segmentations(cls, masks, cls, flipped)
    assert diff["query_mask_iou_min"] == 0.0 and diff["query_mask_iou_mean"] == pytest.approx(0.9)
    assert diff["segmentation_agreement"] < 100.0
    # the map is the class of argmax_c sum_q softmax(class)[q, c] * sigmoid(mask)[q]
    one = np.zeros((1, 2, 3), np.float32)
    one[0, 0, 1], one[0, 1, 0] = 10.0, 10.0
    m = np.full((1, 2, 1, 2), -10.0, np.float32)
    m[0, 0, 0, 0], m[0, 1, 0, 1] = 10.0, 10.0
    assert semantic_maps(one, m).tolist() == [[[1, 0]]]
