"""Every registered model on small random inputs (timm style): shapes, no NaN, gradients reach the new head.

Nothing is downloaded: models are built with ``pretrained="none"``, and the weight-loading path is exercised
against fake cached checkpoints written to a temporary TORCH_HOME / HF cache with downloads disabled.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
import torch
import torch.nn.functional as F

from spinebench import FINDINGS, LABEL_MAP
from spinebench.errors import SpinebenchError
from spinebench.models import create_model, list_models, model_info
from spinebench.models import pretrained as pretrained_mod

PAPER_MODELS = ["cls_resnet50", "cls_densenet121", "cls_squeezenet1_1", "cls_inception_v3",
                "det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2"]
DET_KW = dict(min_size=128, max_size=160)  # CPU-sized for tests; defaults are 512 / 832


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """No test may touch the network, whatever it builds."""
    monkeypatch.setenv("SPINEBENCH_OFFLINE", "1")
    torch.manual_seed(0)


def _n_params(model: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 3)


def _cumulative_batchnorm(model: torch.nn.Module) -> None:
    """Random-init Inception activations grow ~1e9 through eval-mode BN until statistics are learned; reset and
    switched to a cumulative average (momentum None), one training forward sets real statistics for eval."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None


def _det_batch() -> tuple[list[torch.Tensor], list[dict]]:
    images = [torch.rand(1, 128, 96), torch.rand(1, 112, 96)]
    targets = [
        dict(boxes=torch.tensor([[30.0, 40.0, 50.0, 58.0]]), labels=torch.tensor([LABEL_MAP["Lum"]])),
        dict(boxes=torch.tensor([[35.0, 5.0, 60.0, 105.0], [20.0, 80.0, 34.0, 94.0]]),
             labels=torch.tensor([LABEL_MAP["sco"], LABEL_MAP["Lum"]])),
    ]
    return images, targets


# ------------------------------------------------------------------------------------------------ registry
def test_registry_holds_the_paper_models():
    assert [n for n in list_models() if n in PAPER_MODELS] == PAPER_MODELS  # later models (cobb...) may follow
    assert list_models("classification") == PAPER_MODELS[:4]
    assert list_models("detection") == PAPER_MODELS[4:]
    assert list_models("no-such-task") == []  # tasks are free strings; an unused one is simply empty


def test_unknown_model_lists_known_names():
    with pytest.raises(SpinebenchError, match="cls_densenet121"):
        create_model("densenet")
    with pytest.raises(SpinebenchError, match="det_faster_rcnn_inception_v2"):
        model_info("nope")


def test_none_kwargs_keep_defaults_and_bad_mode_is_refused():
    model = create_model("cls_squeezenet1_1", pretrained=None, num_classes=None)
    assert model.default_cfg["num_classes"] == len(FINDINGS)
    with pytest.raises(SpinebenchError, match="pretrained must be one of"):
        create_model("cls_squeezenet1_1", pretrained="coco")


def test_model_info_and_list_models_cli(capsys):
    from spinebench.cli import main

    info = model_info("cls_squeezenet1_1")
    assert set(info) >= {"name", "task", "params_m", "input_size", "pretrained_available", "paper_name", "card"}
    assert info["input_size"] == (224, 224) and info["paper_name"] == "SqueezeNet" and len(info["card"]) > 100
    assert main(["list-models"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "task", "params_m"] and len(lines) == 1 + len(list_models())
    assert main(["list-models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models()
    assert all(r["pretrained_available"] is False for r in rows)  # empty cache: nothing claims weights


# ------------------------------------------------------------------------------------------------ every model
@pytest.mark.parametrize("name", list_models())
def test_model_contract(name):
    info = model_info(name)
    model = create_model(name, **(DET_KW if info["task"] == "detection" else {}))
    assert model.pretrained_loaded is False
    cfg = model.default_cfg
    assert cfg["name"] == name and cfg["task"] == info["task"] and cfg["paper_name"] == info["paper_name"]
    assert tuple(cfg["input_size"]) == tuple(info["input_size"])
    assert info["params_m"] == _n_params(model)  # the meta-device count is the real count
    if info["task"] == "classification":
        _check_classifier(model)
    elif info["task"] == "detection":
        _check_detector(model)
    else:  # forward shapes, finite outputs and gradients of the landmark model: tests/test_cobb_model.py
        assert info["task"] == "cobb", f"no forward test for task {info['task']!r}"


def _check_classifier(model):
    size = max(48, *model.default_cfg["min_input_size"])  # the paper's 48 px where the architecture allows
    x = torch.rand(2, 1, size, size)
    model.train()
    out = model(x)
    if isinstance(out, tuple):  # Inception v3: (logits, aux_logits) in train mode
        logits, aux = out
        assert aux.shape == (2, len(FINDINGS))
    else:
        logits, aux = out, None
    assert logits.shape == (2, len(FINDINGS)) and torch.isfinite(logits).all()
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # two independent findings: both at once is allowed
    loss = F.binary_cross_entropy_with_logits(logits, target)
    if aux is not None:
        loss = loss + 0.4 * F.binary_cross_entropy_with_logits(aux, target)
    loss.backward()
    for path in model.default_cfg["classifier"]:
        grad = model.get_submodule(path).weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    first = model.get_submodule(model.default_cfg["first_conv"])
    assert first.in_channels == 1 and first.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, len(FINDINGS)) and torch.isfinite(out).all()
    with pytest.raises(SpinebenchError, match="1 x H x W"):
        model(torch.rand(1, 3, size, size))


def _check_detector(model):
    images, targets = _det_batch()
    # aligned feature maps: exactly H/8, H/16, H/32 (VALID paddings made SAME; atrous keeps stride 16)
    model.eval()
    feats = model.backbone(torch.rand(1, 1, 128, 96))
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [(16, 12), (8, 6), (4, 3)]
    _cumulative_batchnorm(model)  # the one training step below sets real statistics for the eval check
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = model.roi_heads.box_predictor.cls_score.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert model.roi_heads.box_predictor.cls_score.out_features == 1 + len(LABEL_MAP)
    model.eval()
    model.roi_heads.score_thresh = 0.0  # random init: keep low-scoring boxes so the format is exercised
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det, img in zip(out, images):
        assert set(det) == {"boxes", "labels", "scores"} and len(det["boxes"]) > 0
        assert det["boxes"].shape[1] == 4 and torch.isfinite(det["boxes"]).all()
        assert set(det["labels"].tolist()) <= set(LABEL_MAP.values())
        assert ((det["scores"] >= 0) & (det["scores"] <= 1)).all()
        assert (det["boxes"][:, 2] <= img.shape[2]).all() and (det["boxes"][:, 3] <= img.shape[1]).all()
    with pytest.raises(SpinebenchError, match="1 x H x W"):
        model([torch.rand(3, 128, 96)])


def test_squeezenet_logits_can_be_negative():
    """torchvision's SqueezeNet ReLUs its class scores; with sigmoids that would pin probabilities >= 0.5."""
    model = create_model("cls_squeezenet1_1").eval()
    torch.nn.init.constant_(model.get_submodule(model.default_cfg["classifier"][0]).bias, -5.0)
    with torch.no_grad():
        assert (model(torch.rand(2, 1, 64, 64)) < 0).all()


def test_inception_refuses_inputs_below_75():
    model = create_model("cls_inception_v3").eval()
    with pytest.raises(SpinebenchError, match="at least 75 x 75"):
        model(torch.rand(1, 1, 48, 48))


# ------------------------------------------------------------------------------------------------ weights
def test_torchvision_weights_from_cache(tmp_path, monkeypatch):
    """A checkpoint under the URL's filename in TORCH_HOME is loaded (no hash check) and its RGB first conv
    summed to one channel."""
    from torchvision.models import SqueezeNet1_1_Weights, squeezenet1_1

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    saved = squeezenet1_1(weights=None).state_dict()
    path = pretrained_mod.torch_hub_checkpoint(SqueezeNet1_1_Weights.DEFAULT.url)
    assert path.parent == tmp_path / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    assert model_info("cls_squeezenet1_1")["pretrained_available"] is True
    for mode in ("imagenet", "auto"):
        model = create_model("cls_squeezenet1_1", pretrained=mode)
        assert model.pretrained_loaded is True and model.default_cfg["pretrained"] == mode
        first = model.get_submodule(model.default_cfg["first_conv"]).weight
        torch.testing.assert_close(first, saved["features.0.weight"].sum(dim=1, keepdim=True))
        torch.testing.assert_close(model.net.features[3].squeeze.weight, saved["features.3.squeeze.weight"])


def test_missing_weights_fail_fast(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(pretrained_mod, "_warned", set())
    t0 = time.monotonic()
    with pytest.raises(SpinebenchError, match="ImageNet weights for cls_resnet50 are not in the cache"):
        create_model("cls_resnet50", pretrained="imagenet")
    with caplog.at_level(logging.WARNING, logger="spinebench.models.pretrained"):
        first = create_model("cls_squeezenet1_1", pretrained="auto")
        second = create_model("cls_squeezenet1_1", pretrained="auto")
    assert time.monotonic() - t0 < 10
    assert first.pretrained_loaded is False and second.pretrained_loaded is False
    assert len([r for r in caplog.records if "cls_squeezenet1_1" in r.getMessage()]) == 1  # once per process


def test_timm_backbone_weights_from_hf_cache(tmp_path, monkeypatch):
    """A detector's ImageNet backbone comes from the HF hub cache through timm's loader (first conv summed)."""
    import timm

    arch_cfg = timm.models.get_pretrained_cfg("inception_v3")
    repo = tmp_path / ("models--" + arch_cfg.hf_hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    saved = timm.create_model("inception_v3", pretrained=False).state_dict()
    torch.save(saved, snapshot / "pytorch_model.bin")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert model_info("det_faster_rcnn_inception_v2")["pretrained_available"] is True
    model = create_model("det_faster_rcnn_inception_v2", pretrained="imagenet", **DET_KW)
    assert model.pretrained_loaded is True
    first = model.backbone.body.Conv2d_1a_3x3.conv.weight
    torch.testing.assert_close(first, saved["Conv2d_1a_3x3.conv.weight"].sum(dim=1, keepdim=True))
    # pretrained detection backbones keep their BatchNorm statistics frozen
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.body.modules())
    # the other detector's backbone is not cached: "imagenet" refuses in one line
    with pytest.raises(SpinebenchError, match="det_faster_rcnn_inception_resnet_v2"):
        create_model("det_faster_rcnn_inception_resnet_v2", pretrained="imagenet", **DET_KW)


def test_unloadable_weights_are_refused_not_half_loaded(tmp_path, monkeypatch):
    """A cached file of the wrong architecture: "imagenet" refuses in one line, "auto" keeps a clean random init."""
    from torchvision.models import SqueezeNet1_1_Weights, squeezenet1_0

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(pretrained_mod, "_warned", set())
    path = pretrained_mod.torch_hub_checkpoint(SqueezeNet1_1_Weights.DEFAULT.url)
    path.parent.mkdir(parents=True)
    wrong = squeezenet1_0(weights=None).state_dict()
    torch.save(wrong, path)
    with pytest.raises(SpinebenchError, match="ImageNet weights for cls_squeezenet1_1 cannot be loaded"):
        create_model("cls_squeezenet1_1", pretrained="imagenet")
    model = create_model("cls_squeezenet1_1", pretrained="auto")
    assert model.pretrained_loaded is False
    # squeezenet 1.0 and 1.1 share this layer's shape: a half-loaded model would hold the saved tensor
    assert not torch.equal(model.net.features[3].expand3x3.weight, wrong["features.3.expand3x3.weight"])


def test_inception_aux_head_is_torchvisions_from_299():
    """The size-tolerant aux head computes exactly torchvision's numbers where torchvision's works."""
    from torchvision.models.inception import InceptionAux

    from spinebench.models.classifiers import _InceptionAuxAnySize

    ref, ours = InceptionAux(768, 2).eval(), _InceptionAuxAnySize(768, 2).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.rand(2, 768, 17, 17)  # Mixed_6e at 299 px
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
        assert ours(torch.rand(2, 768, 3, 3)).shape == (2, 2)  # Mixed_6e at 75 px, where torchvision's fails


def test_class_nms_suppresses_overlaps_of_its_class_only():
    """``class_nms``: a second NMS for the classes given (an implant construct is one ``Lum`` box); other classes keep
    torchvision's looser threshold; the kept boxes come back sorted by score."""
    from torchvision.ops import box_iou

    from spinebench.models.detectors import class_nms

    lum, sco = LABEL_MAP["Lum"], LABEL_MAP["sco"]
    boxes = torch.tensor([[0.0, 0, 10, 40], [0, 20, 10, 60],      # two Lum boxes, IoU 1/3
                          [50, 0, 60, 10],                          # a Lum box apart
                          [20, 0, 40, 40], [20, 20, 40, 60]])       # two sco boxes, IoU 1/3
    assert abs(float(box_iou(boxes[:1], boxes[1:2])) - 1 / 3) < 1e-6
    det = dict(boxes=boxes, labels=torch.tensor([lum, lum, lum, sco, sco]),
               scores=torch.tensor([0.6, 0.9, 0.3, 0.8, 0.7]))
    [out] = class_nms([det], {lum: 0.3})
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.3])   # the 0.6 Lum box went
    assert out["labels"].tolist() == [lum, sco, sco, lum]
    assert out["boxes"][0].tolist() == [0, 20, 10, 60]
    [loose] = class_nms([det], {lum: 0.5})
    assert len(loose["scores"]) == 5 and loose["scores"].tolist() == sorted(det["scores"].tolist(), reverse=True)


def test_fuse_boxes_averages_overlapping_boxes_of_its_class_by_score():
    """``fuse_boxes``: boxes of a named class that overlap a better one by IoU >= the threshold become one box, their
    score-weighted mean, scored by the best; a box apart and other classes are kept as they are; sorted by score."""
    from spinebench.models.detectors import fuse_boxes

    lum, sco = LABEL_MAP["Lum"], LABEL_MAP["sco"]
    boxes = torch.tensor([[0.0, 0, 10, 40], [0, 20, 10, 60],      # two Lum boxes, IoU 1/3
                          [50, 0, 60, 10],                          # a Lum box apart
                          [20, 0, 40, 40], [20, 20, 40, 60]])       # two sco boxes, IoU 1/3
    det = dict(boxes=boxes, labels=torch.tensor([lum, lum, lum, sco, sco]),
               scores=torch.tensor([0.6, 0.9, 0.3, 0.8, 0.7]))
    [out] = fuse_boxes([det], {lum: 0.3})
    assert out["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.3])
    assert out["labels"].tolist() == [lum, sco, sco, lum]
    # (0.9 * [0, 20, 10, 60] + 0.6 * [0, 0, 10, 40]) / 1.5
    assert out["boxes"][0].tolist() == pytest.approx([0, 12, 10, 52])
    assert out["boxes"][1:].tolist() == boxes[[3, 4, 2]].tolist()
    [apart] = fuse_boxes([det], {lum: 0.4})   # IoU 1/3 < 0.4: nothing fused, only sorted
    assert apart["scores"].tolist() == sorted(det["scores"].tolist(), reverse=True)
    assert sorted(map(tuple, apart["boxes"].tolist())) == sorted(map(tuple, boxes.tolist()))
    [empty] = fuse_boxes([{k: v[:0] for k, v in det.items()}], {lum: 0.3})
    assert len(empty["boxes"]) == 0


def _detect_all(models, image) -> list[dict]:
    """Each detector's output on ``image`` in eval mode with no score floor (every box it keeps)."""
    outs = []
    for model in models:
        model.eval()
        model.roi_heads.score_thresh = 0.0
        with torch.no_grad():
            outs.append(model([image])[0])
    return outs


def test_detector_applies_its_box_fusion():
    """Built with ``class_box_fusion={"Lum": 0.2}``, a detector outputs ``fuse_boxes`` of what the same weights
    detect without it: fewer ``Lum`` boxes, the same best ``Lum`` score (the image-level implant score), the same
    ``sco`` boxes; it says so in ``default_cfg``, and unknown classes or IoUs outside (0, 1] are refused."""
    from spinebench.models.detectors import fuse_boxes

    torch.manual_seed(0)
    plain = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    _cumulative_batchnorm(plain)
    plain.train()
    plain(*_det_batch())
    fused = create_model("det_faster_rcnn_inception_v2", class_box_fusion={"Lum": 0.2}, **DET_KW)
    fused.load_state_dict(plain.state_dict())
    outs = _detect_all((plain, fused), torch.rand(1, 128, 96, generator=torch.Generator().manual_seed(1)))
    [expected] = fuse_boxes([outs[0]], {LABEL_MAP["Lum"]: 0.2})
    for k in ("boxes", "scores", "labels"):
        torch.testing.assert_close(outs[1][k], expected[k])
    lum = [o["labels"] == LABEL_MAP["Lum"] for o in outs]
    assert 0 < int(lum[1].sum()) < int(lum[0].sum())
    assert float(outs[1]["scores"][lum[1]].max()) == float(outs[0]["scores"][lum[0]].max())
    assert fused.default_cfg["class_box_fusion"] == {"Lum": 0.2} and plain.default_cfg["class_box_fusion"] == {}
    for bad in ({"implant": 0.2}, {"Lum": 1.5}):
        with pytest.raises(SpinebenchError, match="class_box_fusion"):
            create_model("det_faster_rcnn_inception_v2", class_box_fusion=bad, **DET_KW)


def test_detector_giou_term_adds_an_overlap_loss_and_nothing_else():
    """``box_giou_weight``: the RoI head's training loss gains ``loss_box_giou``, a GIoU loss on the positive
    proposals' boxes in each proposal's own frame; the other four losses stay torchvision's, to the bit, and so do
    the weights (a plain detector loads its state) and what it detects; a negative or NaN weight is refused."""
    import math

    from spinebench.models.detectors import _unit_boxes

    weights = (10.0, 10.0, 5.0, 5.0)  # torchvision RoIHeads' box coder
    torch.testing.assert_close(_unit_boxes(torch.zeros(1, 4), weights), torch.tensor([[0.0, 0, 1, 1]]))
    # half a proposal width to the right (dx 0.5 x 10), twice as wide (dw log 2 x 5): centre 1, width 2
    shifted = _unit_boxes(torch.tensor([[5.0, 0, 5 * math.log(2), 0]]), weights)
    torch.testing.assert_close(shifted, torch.tensor([[0.0, 0, 2, 1]]))

    torch.manual_seed(0)
    giou = create_model("det_faster_rcnn_inception_v2", box_giou_weight=2.0, **DET_KW)
    plain = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    assert giou.default_cfg["box_giou_weight"] == 2.0 and plain.default_cfg["box_giou_weight"] == 0.0
    _cumulative_batchnorm(giou)
    giou.train()
    torch.manual_seed(1)
    losses = giou(*_det_batch())
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_box_giou", "loss_objectness", "loss_rpn_box_reg"}
    assert float(losses["loss_box_giou"]) > 0 and torch.isfinite(losses["loss_box_giou"])
    losses["loss_box_giou"].backward()
    assert giou.roi_heads.box_predictor.bbox_pred.weight.grad.abs().sum() > 0
    assert giou.roi_heads.box_predictor.cls_score.weight.grad is None  # the term trains the boxes only
    plain.load_state_dict(giou.state_dict())
    plain.train()
    torch.manual_seed(1)  # the same proposals sampled
    base = plain(*_det_batch())
    for k, v in base.items():
        torch.testing.assert_close(losses[k], v)
    plain.load_state_dict(giou.state_dict())  # its step above moved its BatchNorm statistics
    outs = _detect_all((plain, giou), torch.rand(1, 128, 96, generator=torch.Generator().manual_seed(2)))
    assert len(outs[0]["boxes"]) > 0
    for k in ("boxes", "scores", "labels"):
        torch.testing.assert_close(outs[1][k], outs[0][k])
    for bad in (-1.0, float("nan")):
        with pytest.raises(SpinebenchError, match="box_giou_weight"):
            create_model("det_faster_rcnn_inception_v2", box_giou_weight=bad, **DET_KW)


def test_detector_box_head_width_is_part_of_the_model(tmp_path):
    """``representation_size`` sets the width of torchvision's two-layer box head (1024, torchvision's, by
    default): both layers and the predictor follow it, the narrow head has fewer parameters and still detects,
    ``default_cfg`` says which width was built, a model rebuilt from its weights record has it, and a width that is
    not a whole number >= 1 is refused by name."""
    from spinebench.engine.weights import save_weights
    from spinebench.weights import get_record

    torch.manual_seed(0)
    narrow = create_model("det_faster_rcnn_inception_v2", representation_size=64, **DET_KW)
    wide = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    head = narrow.roi_heads
    assert (head.box_head.fc6.out_features, head.box_head.fc7.out_features) == (64, 64)
    assert head.box_predictor.cls_score.in_features == head.box_predictor.bbox_pred.in_features == 64
    assert wide.roi_heads.box_head.fc7.out_features == 1024
    assert (narrow.default_cfg["representation_size"], wide.default_cfg["representation_size"]) == (64, 1024)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(wide) - count(narrow) == 12544 * 960 + (1024 * 1024 - 64 * 64) + 960 * 2 + 960 * 3 * 5
    _cumulative_batchnorm(narrow)
    narrow.train()
    with torch.no_grad():
        assert set(narrow(*_det_batch())) >= {"loss_classifier", "loss_box_reg"}  # trains; its BatchNorm sees films
    [out] = _detect_all([narrow], torch.rand(1, 128, 96, generator=torch.Generator().manual_seed(2)))
    assert len(out["boxes"]) > 0 and out["boxes"].shape[1] == 4
    kwargs = {"representation_size": 64, **DET_KW}
    save_weights(narrow, tmp_path / "w", meta={"task": "detection", "max_side": 320, "pretrained": False,
                                               "image_size": [128, 160], "model_kwargs": kwargs})
    rebuilt = get_record("det_faster_rcnn_inception_v2", tmp_path / "w").load()
    assert rebuilt.roi_heads.box_head.fc6.out_features == 64
    torch.testing.assert_close(rebuilt.roi_heads.box_head.fc6.weight, head.box_head.fc6.weight)
    for bad in (0, -3, 2.5, "256", True):
        with pytest.raises(SpinebenchError, match="representation_size"):
            create_model("det_faster_rcnn_inception_v2", representation_size=bad, **DET_KW)


def test_quick_inception_v2_keeps_its_giou_term_with_its_weights(tmp_path):
    """The quick profile gives Inception-v2 alone ``box_giou_weight``, and both detectors a 256-wide box head
    (``representation_size``; ``Profile.model_settings`` "extra"
    ``detector_kwargs``, on top of the profile's ``detector_kwargs``); like those it is part of the model, so a
    detector rebuilt from its saved weights trains with the same loss."""
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.weights import save_weights
    from spinebench.models.detectors import FindingRoIHeads
    from spinebench.tasks import get_task
    from spinebench.weights import get_record

    quick = get_profile("quick")
    task = get_task("det_faster_rcnn_inception_v2")
    v2 = task.model_kwargs(quick, quick.settings_for("det_faster_rcnn_inception_v2", 100))
    irv2 = task.model_kwargs(quick, quick.settings_for("det_faster_rcnn_inception_resnet_v2", 100))
    assert v2 == {**quick.detector_kwargs, "box_giou_weight": 1.0, "representation_size": 256}
    assert irv2 == {**quick.detector_kwargs, "representation_size": 256}  # the narrow head, not the GIoU term
    kwargs = {**v2, **DET_KW}
    model = create_model("det_faster_rcnn_inception_v2", **kwargs)
    assert isinstance(model.roi_heads, FindingRoIHeads) and model.roi_heads.box_giou_weight == 1.0
    save_weights(model, tmp_path / "w", meta={"task": "detection", "max_side": 320, "pretrained": False,
                                              "image_size": [128, 160], "model_kwargs": kwargs})
    rebuilt = get_record("det_faster_rcnn_inception_v2", tmp_path / "w").build()
    assert isinstance(rebuilt.roi_heads, FindingRoIHeads) and rebuilt.default_cfg["box_giou_weight"] == 1.0
    assert rebuilt.roi_heads.box_head.fc7.out_features == rebuilt.default_cfg["representation_size"] == 256


def test_profiles_detectors_rank_films_they_are_unsure_of():
    """With the profiles' ``box_score_thresh`` (0.001), a detector whose ``Lum`` scores all fall under torchvision's
    0.05 floor still keeps its best ``Lum`` box, so the film's implant score is that box's score, not the 0 it would
    tie at with torchvision's default; the same weights at the default keep no ``Lum`` box. ``default_cfg`` (hence the
    weights record and model card) says which floor a model was built with."""
    from spinebench.engine.profiles import PROFILES
    from spinebench.evaluation.metrics import image_scores_from_detections

    floors = {PROFILES[p].detector_kwargs.get("box_score_thresh") for p in ("quick", "paper")}
    assert floors == {0.001}
    torch.manual_seed(0)
    default = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    _cumulative_batchnorm(default)
    default.train()
    default(*_det_batch())
    with torch.no_grad():   # an unsure detector: background favoured by e^5, so every class score is ~0.005-0.02
        default.roi_heads.box_predictor.cls_score.bias[0] += 5.0
    floored = create_model("det_faster_rcnn_inception_v2", box_score_thresh=0.001, **DET_KW)
    floored.load_state_dict(default.state_dict())
    image = torch.rand(1, 128, 96, generator=torch.Generator().manual_seed(1))
    dets = []
    for model in (default, floored):
        model.eval()
        with torch.no_grad():
            dets.append(model([image])[0])
    lum = LABEL_MAP["Lum"]
    implant = FINDINGS.index("implant")
    assert not bool((dets[0]["labels"] == lum).any())
    kept = dets[1]["scores"][dets[1]["labels"] == lum]
    assert len(kept) and 0.001 <= float(kept.max()) < 0.05
    scores = image_scores_from_detections(dets, 2)[:, implant]
    assert scores[0] == 0.0 and scores[1] == pytest.approx(float(kept.max()))
    assert default.default_cfg["box_score_thresh"] == 0.05 and floored.default_cfg["box_score_thresh"] == 0.001


def test_detector_applies_its_class_nms_thresholds():
    """Built with ``class_nms_thresh={"Lum": 0.3}``, no two ``Lum`` boxes it outputs overlap by more than 0.3 (the
    same weights without it do, at random init), it says so in ``default_cfg``, and unknown classes are refused."""
    from torchvision.ops import box_iou

    def max_lum_iou(model) -> tuple[float, int]:
        model.eval()
        model.roi_heads.score_thresh = 0.0
        with torch.no_grad():
            [det] = model([torch.rand(1, 128, 96, generator=torch.Generator().manual_seed(1))])
        b = det["boxes"][det["labels"] == LABEL_MAP["Lum"]]
        iou = box_iou(b, b).fill_diagonal_(0)
        return float(iou.max()), len(b)

    torch.manual_seed(0)
    plain = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    _cumulative_batchnorm(plain)  # one training forward sets BatchNorm statistics
    plain.train()
    plain(*_det_batch())
    strict = create_model("det_faster_rcnn_inception_v2", class_nms_thresh={"Lum": 0.3}, **DET_KW)
    strict.load_state_dict(plain.state_dict())
    (iou_plain, n_plain), (iou_strict, n_strict) = max_lum_iou(plain), max_lum_iou(strict)
    assert iou_plain > 0.3 and iou_strict <= 0.3 + 1e-6 and 0 < n_strict < n_plain
    assert strict.default_cfg["class_nms_thresh"] == {"Lum": 0.3} and plain.default_cfg["class_nms_thresh"] == {}
    for bad in ({"implant": 0.3}, {"Lum": 0.0}):
        with pytest.raises(SpinebenchError, match="class_nms_thresh"):
            create_model("det_faster_rcnn_inception_v2", class_nms_thresh=bad, **DET_KW)


def test_detector_keeps_every_hard_negative_in_its_sample():
    """A target box labelled 0 (a hard negative: ``tasks.detection.hard_negative_boxes``) is in the RoI head's
    sample at every step, as background with a zero box target; targets without one are sampled as torchvision
    samples them, to the bit; and a detector trains on such targets."""
    from torchvision.models.detection.roi_heads import RoIHeads

    torch.manual_seed(0)
    model = create_model("det_faster_rcnn_inception_v2", **DET_KW)
    heads = model.roi_heads
    images, targets = _det_batch()
    neg = torch.tensor([[8.0, 4.0, 70.0, 110.0]])
    hard = [dict(boxes=torch.cat([targets[0]["boxes"], neg]), labels=torch.cat([targets[0]["labels"],
                                                                                 torch.tensor([0])])), targets[1]]
    proposals = [torch.tensor([[0.0, 0, 40, 40], [30, 40, 50, 58], [10, 60, 60, 100]]),
                 torch.tensor([[35.0, 5, 60, 105], [0.0, 0, 20, 20]])]
    for seed in range(4):
        torch.manual_seed(seed)
        props, _, labels, reg = heads.select_training_samples([p.clone() for p in proposals], hard)
        at = (props[0] == neg).all(1)
        assert at.any() and (labels[0][at] == 0).all() and (reg[0][at] == 0).all()
        assert not (props[1] == neg).all(1).any()
        assert (labels[0] == LABEL_MAP["Lum"]).any() and (labels[1] == LABEL_MAP["sco"]).any()
        torch.manual_seed(seed)
        ours = heads.select_training_samples([p.clone() for p in proposals], targets)
        torch.manual_seed(seed)
        theirs = RoIHeads.select_training_samples(heads, [p.clone() for p in proposals], targets)
        for a, b in zip(ours, theirs):
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y)
    _cumulative_batchnorm(model)
    model.train()
    losses = model(images, hard)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.roi_heads.box_predictor.cls_score.weight.grad.abs().sum() > 0
