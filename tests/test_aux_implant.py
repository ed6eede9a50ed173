"""The classifiers' train-time implant map (``TrainSettings.aux_implant_weight``): its mask marks the implant boxes
and moves with the pixels, unknown boxes are left out, it learns on real films beside the spine-shape head, and the
model trained with it is the registered one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import fit_head

from spinebench.data.dataset import SpineDataset
from spinebench.data.transforms import ClassifierTransform, implant_mask
from spinebench.engine.train import TrainSettings, train_model
from spinebench.models import create_model
from spinebench.tasks import get_task
from spinebench.tasks.classification import AuxHeads, ImplantMapHead, SpineShapeHead


def _item(h=300, w=120, boxes=((40, 180, 70, 200),), labels=(1,), implant=1.0):
    """A dark film with a bright rectangle in each box (the hardware), boxes in its pixels."""
    img = torch.zeros(1, h, w)
    for x0, y0, x1, y1 in boxes:
        img[:, y0:y1, x0:x1] = 1.0
    return {"image": img, "labels": torch.tensor([implant, 0.0]),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "box_labels": torch.tensor(labels, dtype=torch.int64), "landmarks": torch.full((68, 2), math.nan)}


def test_the_mask_marks_implant_boxes_only_and_is_unknown_without_them():
    item = _item(boxes=((40, 180, 70, 200), (10, 10, 110, 290)), labels=(1, 2))  # a Lum box and a sco box
    m = implant_mask(item, (150, 60))  # half the size
    assert m.shape == (1, 150, 60)
    assert m[0, 90:100, 20:35].all() and m.sum() == pytest.approx(10 * 15, abs=40)  # the Lum box only, halved
    assert not m[0, :80].any() and not m[0, 110:].any()
    # no hardware: all zero (every cell a negative); labelled implant without a box: unknown (NaN)
    assert implant_mask(_item(boxes=(), labels=(), implant=0.0), (150, 60)).sum() == 0
    assert torch.isnan(implant_mask(_item(boxes=(), labels=(), implant=1.0), (150, 60))).all()
    # a box thinner than a pixel after downscaling still marks one
    assert implant_mask(_item(boxes=((60, 100, 61, 101),)), (30, 12)).sum() >= 1


def test_the_mask_moves_with_the_pixels_and_leaves_the_draws_alone():
    """Through resize, mirror and turn the mask stays on the bright hardware; the image is the same with or
    without it (same random draws)."""
    item = _item(boxes=((20, 180, 50, 210),))
    on = ClassifierTransform((128, 56), train=True, intensity=0.0, implant_map=True)
    off = ClassifierTransform((128, 56), train=True, intensity=0.0)
    sides = set()
    for seed in range(6):
        out = on(item, np.random.default_rng(seed))
        assert torch.equal(out["image"], off(item, np.random.default_rng(seed))["image"])
        img, m = out["image"][0], out["implant_map"]
        assert m.shape == (128, 56)
        bright = img > 0.5
        inter = (bright & (m > 0.5)).sum() / (bright | (m > 0.5)).sum()
        assert inter > 0.7, inter
        sides.add(bool(torch.nonzero(m > 0.5)[:, 1].float().mean() > 28))
    assert sides == {True, False}  # mirrored and unmirrored draws were both seen
    # validation: no mask unless asked, and then unmoved
    val = ClassifierTransform((128, 56), train=False, implant_map=True)(item, np.random.default_rng(0))
    assert torch.equal(val["implant_map"], implant_mask(item, (128, 56))[0])


@pytest.mark.parametrize("name, size", [("cls_resnet50", (96, 40)), ("cls_squeezenet1_1", (96, 40)),
                                        ("cls_inception_v3", (96, 80))])
def test_the_head_starts_at_its_prior_learns_and_leaves_the_model_as_registered(name, size):
    torch.manual_seed(0)
    model = create_model(name, pretrained="none").train()
    keys = set(model.state_dict())
    rng = torch.get_rng_state()
    head = ImplantMapHead(model, input_size=size)
    assert torch.equal(torch.get_rng_state(), rng) and model.training
    x = torch.rand(4, 1, *size)
    masks = torch.zeros(4, *size)
    masks[:2, size[0] // 2:, : size[1] // 2] = 1  # hardware in the lower left of two films
    masks[3] = math.nan  # boxes unknown: left out
    model(x)
    first = head.loss(masks)
    assert torch.isfinite(first)
    y = torch.nn.functional.adaptive_max_pool2d(masks[:3, None], _map_hw(model, size))
    expected = torch.nn.functional.binary_cross_entropy(torch.full_like(y, 0.05), (y >= 0.5).float())
    assert torch.isclose(first, expected, atol=1e-5)  # zero weight: every cell says the prior
    losses = fit_head(model, head, x, masks, 15)
    assert losses[-1] < 0.5 * losses[0], losses
    head.close()
    from spinebench.gradcam import target_layer

    assert not target_layer(model)[0]._forward_hooks and set(model.state_dict()) == keys


def _map_hw(model, size) -> tuple[int, int]:
    from spinebench.gradcam import target_layer

    seen = {}
    hook = target_layer(model)[0].register_forward_hook(lambda m, i, o: seen.__setitem__("hw", o.shape[-2:]))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, *size))
    hook.remove()
    model.train()
    return tuple(seen["hw"])


def test_both_heads_train_beside_the_model_and_resume(synth_sets, tmp_path):
    train, val = synth_sets
    torch.manual_seed(0)
    model = create_model("cls_squeezenet1_1", pretrained="none")
    keys = set(create_model("cls_squeezenet1_1", pretrained="none").state_dict())
    settings = TrainSettings(epochs=1, batch_size=4, lr=1e-3, image_size=(96, 40), aux_shape_weight=1.0,
                             aux_shape_head="spatial", aux_implant_weight=1.0, max_steps_per_epoch=2)
    assert any(r["implant"] for r in train.records) and not all(r["implant"] for r in train.records)
    data = get_task(model).train_data(model, train, settings, torch.device("cpu"), seed=0)
    assert isinstance(data.aux, AuxHeads) and set(data.aux) == {"shape", "implant"}
    assert isinstance(data.aux["shape"], SpineShapeHead) and isinstance(data.aux["implant"], ImplantMapHead)
    assert data.aux.weights == {"shape": 1.0, "implant": 1.0}
    data.close()
    ckpt = tmp_path / "c.pt"
    fit = train_model(model, train, val, settings=settings, device="cpu", seed=0, checkpoint_path=ckpt,
                      progress=False)
    row = fit["history"][0]
    assert math.isfinite(row["train_implant"]) and math.isfinite(row["train_shape"])
    assert set(model.state_dict()) == keys and model.eval()(torch.rand(2, 1, 96, 40)).shape == (2, 2)
    fit2 = train_model(model, train, val, settings=TrainSettings(**{**settings.__dict__, "epochs": 2}),
                       device="cpu", seed=0, checkpoint_path=ckpt, resume=True, progress=False)
    assert fit2["epochs_run"] == 2 and math.isfinite(fit2["history"][-1]["train_implant"])


def test_films_without_boxes_train_without_the_implant_map(synth_sets):
    train, _ = synth_sets
    no_boxes = SpineDataset([{**r, "boxes": []} for r in train.records], max_side=160)
    model = create_model("cls_squeezenet1_1", pretrained="none")
    data = get_task(model).train_data(model, no_boxes, TrainSettings(image_size=(96, 40), aux_implant_weight=1.0),
                                      torch.device("cpu"), seed=0)
    assert data.aux is None and data.parameters() == []


def test_a_negative_implant_weight_is_refused(tiny_data, tmp_path, capsys):
    from spinebench.cli import main

    rc = main(["-q", "run-all", "--data", tiny_data, "--aux-implant-weight", "-1", "--out", str(tmp_path / "runs")])
    assert rc == 2 and "--aux-implant-weight must be 0 (off) or positive" in capsys.readouterr().err


def test_the_quick_profile_uses_the_implant_map_where_it_was_measured_to_pay():
    """SqueezeNet and DenseNet-121 (implant AUROC up on unseen films), not ResNet-50 or Inception-v3 (no gain), nor
    the paper profile (never measured there); ``--aux-implant-weight 0`` turns it off again."""
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.runner import RunContext

    quick, paper = get_profile("quick"), get_profile("paper")
    models = ("cls_resnet50", "cls_densenet121", "cls_inception_v3", "cls_squeezenet1_1")
    assert {m for m in models if quick.settings_for(m, 100).aux_implant_weight > 0} == {
        "cls_densenet121", "cls_squeezenet1_1"}
    assert not any(paper.settings_for(m, 100).aux_implant_weight for m in models)
    ctx = RunContext.__new__(RunContext)
    ctx.profile, ctx.image_size, ctx.overrides = quick, None, {"aux_implant_weight": 0.0}
    assert ctx.settings("cls_densenet121", 100).aux_implant_weight == 0
