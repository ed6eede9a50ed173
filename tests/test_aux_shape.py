"""The classifiers' train-time spine-shape loss (``TrainSettings.aux_shape_weight``): its targets move with the
pixels, it is finite and learnable on real films, and the model trained with it is the registered one."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import fit_head
from scipy import ndimage

from spinebench.data.dataset import SpineDataset
from spinebench.data.transforms import SPINE_SHAPE_LEN, ClassifierTransform, spine_shape
from spinebench.engine.train import TrainSettings, train_model
from spinebench.models import create_model
from spinebench.tasks import get_task
from spinebench.tasks.classification import SpineShapeHead, spine_shape_scale


def _spine(h: int, w: int, tilt_deg: float = 0.0) -> torch.Tensor:
    """68 corners of 17 vertebrae down a curved spine, each vertebra turned by ``tilt_deg``."""
    ys = np.linspace(0.12, 0.88, 17) * h
    xs = w / 2 + 0.12 * w * np.sin(np.linspace(0, math.pi, 17))
    c, s = math.cos(math.radians(tilt_deg)), math.sin(math.radians(tilt_deg))
    pts = []
    for x, y in zip(xs, ys):
        for dx, dy in ((-6, -4), (6, -4), (-6, 4), (6, 4)):  # top-left, top-right, bottom-left, bottom-right
            pts.append((x + c * dx - s * dy, y + s * dx + c * dy))
    return torch.tensor(pts, dtype=torch.float32)


def test_spine_shape_of_a_straight_level_spine_is_zero_and_tilts_read_in_radians():
    lm = _spine(300, 120)
    lm[:, 0] = lm.view(17, 4, 2)[:, :, 0].mean() + (lm[:, 0] - lm.view(17, 4, 2)[:, :, 0].mean(1).repeat_interleave(4))
    t = spine_shape(lm, 120)
    assert t.shape == (SPINE_SHAPE_LEN,)
    assert torch.allclose(t, torch.zeros(SPINE_SHAPE_LEN), atol=1e-6)
    assert torch.allclose(spine_shape(_spine(300, 120, 10.0), 120)[17:], torch.full((17,), math.radians(10.0)),
                          atol=1e-6)
    assert torch.isnan(spine_shape(torch.full((68, 2), math.nan), 120)).all()


def test_shape_targets_move_with_the_pixels_through_resize_mirror_and_turn():
    """A dot drawn at every vertebra's centre lands, after the training transform, where the targets say; a
    mirrored film keeps its tilts near the drawn one (the left and right corners swap with the pixels)."""
    h, w, size = 300, 120, (192, 80)
    lm = _spine(h, w, tilt_deg=8.0)
    centres = lm.view(17, 4, 2).mean(1)
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    img = sum(torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5 ** 2)) for x, y in centres.tolist())
    item = {"image": img[None].float(), "landmarks": lm}
    tf = ClassifierTransform(size, train=True, intensity=0.0, shape_targets=True)
    tilts = set()
    for seed in range(6):
        out = tf(item, np.random.default_rng(seed))
        o = out["image"][0].numpy()
        blobs, n = ndimage.label(o > 0.2)
        assert n == 17
        cy, cx = np.array(ndimage.center_of_mass(o, blobs, range(1, 18))).T
        xs = (cx + 0.5)[np.argsort(cy)]
        np.testing.assert_allclose(out["shape"][:17].numpy(), (xs - xs.mean()) / size[1], atol=0.01)
        tilt = np.degrees(out["shape"][17:].numpy())
        assert np.all(np.abs(np.abs(tilt) - 8.0) < 4.5), tilt  # 8 degrees, turned by at most 3 (and aspect)
        tilts.add(bool(tilt.mean() > 0))
    assert tilts == {True, False}  # both mirrored and unmirrored draws were seen


def test_shape_loss_is_finite_and_decreases_on_a_real_batch(synth_sets):
    train, _ = synth_sets
    torch.manual_seed(0)
    model = create_model("cls_resnet50", pretrained="none")
    task = get_task(model)
    settings = TrainSettings(batch_size=8, lr=1e-3, image_size=(96, 40), aux_shape_weight=1.0)
    data = task.train_data(model, train, settings, torch.device("cpu"), seed=0)
    assert isinstance(data.aux["shape"], SpineShapeHead)
    batch = next(iter(data.batches(0)))
    params = [p for p in model.parameters()] + data.parameters()
    opt = torch.optim.AdamW(params, lr=1e-3)
    model.train()
    shapes = []
    for _ in range(8):
        loss, parts = task.loss(model, batch, data, torch.device("cpu"), settings)
        assert torch.isfinite(loss) and math.isfinite(parts["shape"])
        shapes.append(parts["shape"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert data.aux["shape"].head.weight.grad is not None
    assert min(shapes[-3:]) < 0.7 * shapes[0], shapes
    data.close()
    assert not model.get_submodule("net.fc")._forward_hooks


@pytest.mark.parametrize("name", ["cls_densenet121", "cls_squeezenet1_1", "cls_inception_v3"])
def test_every_classifier_feeds_the_shape_head(name):
    model = create_model(name, pretrained="none").train()
    head = SpineShapeHead(model, torch.ones(SPINE_SHAPE_LEN))
    model(torch.rand(2, 1, 96, 80))
    loss = head.loss(torch.randn(2, SPINE_SHAPE_LEN))
    assert torch.isfinite(loss)
    loss.backward()
    assert head.head.weight.grad is not None
    head.close()
    assert not model.get_submodule(model.default_cfg["classifier"][0])._forward_hooks


def test_films_without_landmarks_train_without_the_shape_loss(synth_sets):
    train, _ = synth_sets
    no_lm = SpineDataset([{**r, "landmarks": None} for r in train.records], max_side=160)
    assert spine_shape_scale(no_lm, (96, 40)) is None
    model = create_model("cls_squeezenet1_1", pretrained="none")
    data = get_task(model).train_data(model, no_lm, TrainSettings(image_size=(96, 40), aux_shape_weight=1.0),
                                      torch.device("cpu"), seed=0)
    assert data.aux is None and data.parameters() == []


def test_a_model_trained_with_the_shape_loss_is_the_registered_model(synth_sets, tmp_path):
    train, val = synth_sets
    torch.manual_seed(0)
    model = create_model("cls_resnet50", pretrained="none")
    keys = set(create_model("cls_resnet50", pretrained="none").state_dict())
    settings = TrainSettings(epochs=1, batch_size=4, lr=1e-3, image_size=(96, 40), aux_shape_weight=1.0,
                             max_steps_per_epoch=2)
    ckpt = tmp_path / "c.pt"
    fit = train_model(model, train, val, settings=settings, device="cpu", seed=0, checkpoint_path=ckpt,
                      progress=False)
    assert math.isfinite(fit["history"][0]["train_shape"])
    assert "train_aux" in torch.load(ckpt, map_location="cpu", weights_only=True)  # the head resumes too
    assert set(model.state_dict()) == keys
    assert not model.get_submodule("net.fc")._forward_hooks
    out = model.eval()(torch.rand(3, 1, 96, 40))
    assert out.shape == (3, 2)
    # a resumed run restores the head beside the model and goes on
    fit2 = train_model(model, train, val, settings=TrainSettings(**{**settings.__dict__, "epochs": 2}),
                       device="cpu", seed=0, checkpoint_path=ckpt, resume=True, progress=False)
    assert fit2["epochs_run"] == 2 and math.isfinite(fit2["history"][-1]["train_shape"])


def test_the_profiles_use_the_shape_loss_where_it_was_measured_to_pay_and_an_override_wins():
    """paper: on for ResNet-50, DenseNet-121 and Inception-v3 (measured on an H200), off for SqueezeNet (it lost
    scoliosis AUROC with the pooled head); quick: on for DenseNet-121 and Inception-v3, whose ~140-200 steps reach
    it, and SqueezeNet with the spatial head; off for ResNet-50 (no gain at its step count);
    ``--aux-shape-weight 0`` turns it off again."""
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.runner import RunContext

    paper, quick = get_profile("paper"), get_profile("quick")
    models = ("cls_resnet50", "cls_densenet121", "cls_inception_v3", "cls_squeezenet1_1")
    on = {m for m in models if paper.settings_for(m, 100).aux_shape_weight > 0}
    assert on == {"cls_resnet50", "cls_densenet121", "cls_inception_v3"}
    assert {m for m in models if quick.settings_for(m, 100).aux_shape_weight > 0} == {
        "cls_densenet121", "cls_inception_v3", "cls_squeezenet1_1"}
    # SqueezeNet learns the shape only from the map before pooling
    assert {m for m in models if quick.settings_for(m, 100).aux_shape_head == "spatial"} == {"cls_squeezenet1_1"}
    # a per-model setting leaves the profile's others alone
    assert quick.settings_for("cls_densenet121", 100).time_budget_s == quick.classifier.time_budget_s
    ctx = RunContext.__new__(RunContext)
    ctx.profile, ctx.image_size, ctx.overrides = paper, None, {"aux_shape_weight": 0.0}
    assert ctx.settings("cls_resnet50", 100).aux_shape_weight == 0


@pytest.mark.parametrize("name, size", [("cls_squeezenet1_1", (96, 40)), ("cls_densenet121", (96, 40)),
                                        ("cls_inception_v3", (96, 80))])
def test_the_spatial_head_reads_the_map_before_pooling_and_leaves_the_model_as_registered(name, size):
    """The spatial head hooks Grad-CAM's layer, sizes itself from the training input, starts at the mean shape
    (zero output), learns, and after close() the model has no hook, its training mode and its own keys."""
    torch.manual_seed(0)
    model = create_model(name, pretrained="none").train()
    keys = set(model.state_dict())
    rng = torch.get_rng_state()
    head = SpineShapeHead(model, torch.ones(SPINE_SHAPE_LEN), seed=3, spatial=True, input_size=size)
    assert torch.equal(torch.get_rng_state(), rng)  # the run's own draws are untouched
    assert model.training  # the probe forward restored the mode
    x, y = torch.rand(4, 1, *size), torch.randn(4, SPINE_SHAPE_LEN)
    model(x)
    first = head.loss(y)
    assert torch.isclose(first, (y ** 2).mean())  # zero last layer: the first step predicts the mean (0)
    losses = fit_head(model, head, x, y, 20)
    assert losses[-1] < 0.7 * losses[0], losses
    head.close()
    from spinebench.gradcam import target_layer

    assert not target_layer(model)[0]._forward_hooks
    assert set(model.state_dict()) == keys


def test_an_unknown_shape_head_is_refused(synth_sets):
    from spinebench.errors import SpinebenchError

    train, _ = synth_sets
    model = create_model("cls_squeezenet1_1", pretrained="none")
    with pytest.raises(SpinebenchError, match="aux_shape_head"):
        get_task(model).train_data(model, train, TrainSettings(image_size=(96, 40), aux_shape_weight=1.0,
                                                               aux_shape_head="conv"), torch.device("cpu"), seed=0)
