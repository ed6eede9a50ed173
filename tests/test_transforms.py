"""Training augmentations (spinebench.data.transforms): what they vary and what they must keep."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinebench.data.transforms import ClassifierTransform, DetectorTransform, affine_theta


def _edge_angle(img: torch.Tensor) -> float:
    """Angle (degrees) of the bright line in a (H, W) image, by a least-squares fit."""
    ys, xs = torch.nonzero(img > 0.3, as_tuple=True)
    return math.degrees(math.atan(np.polyfit(xs.numpy(), ys.numpy(), 1)[0]))


@pytest.mark.parametrize("size", [(192, 80), (80, 192), (64, 64)])
def test_a_turn_is_a_turn_in_pixels_whatever_the_aspect(size):
    """A horizontal edge (an endplate) turned by 5 degrees ends up 5 degrees from horizontal, not sheared by the
    input's aspect (on 192 x 80 the normalised-coordinate matrix tilted it by 12 degrees)."""
    h, w = size
    img = torch.zeros(1, 1, h, w)
    img[0, 0, h // 2, w // 8: w - w // 8] = 1
    for deg in (5.0, -5.0):
        grid = F.affine_grid(affine_theta(math.radians(deg), 1.0, (0.0, 0.0), size)[None], [1, 1, h, w],
                             align_corners=False)
        out = F.grid_sample(img, grid, mode="bilinear", align_corners=False)[0, 0]
        assert abs(abs(_edge_angle(out)) - 5.0) < 0.6, (size, deg, _edge_angle(out))


def test_classifier_training_transform_varies_the_film_but_not_its_size_or_range():
    img = torch.rand(1, 300, 120)
    item = {"image": img}
    tf, ev = ClassifierTransform((96, 40), train=True), ClassifierTransform((96, 40), train=False)
    a = tf(item, np.random.default_rng(0))["image"]
    b = tf(item, np.random.default_rng(1))["image"]
    e = ev(item, np.random.default_rng(0))["image"]
    assert a.shape == b.shape == e.shape == (1, 96, 40)
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert not torch.equal(a, b)  # another draw, another film
    assert torch.equal(e, ev(item, np.random.default_rng(5))["image"])  # evaluation is deterministic


@pytest.mark.parametrize("k", [0.8, 1.25])
def test_detector_stretch_widens_the_film_and_its_boxes_and_landmarks_alike(k):
    img = torch.full((1, 200, 80), 0.2)
    img[:, 100:140, 30:50] = 0.9  # a bright construct, boxed
    lm = torch.stack([torch.linspace(30, 50, 68), torch.linspace(20, 180, 68)], 1)
    item = {"image": img, "boxes": torch.tensor([[30.0, 100.0, 50.0, 140.0]]), "box_labels": torch.tensor([1]),
            "landmarks": lm}
    tf = DetectorTransform(train=True, stretch=(k, k))
    seed = next(s for s in range(20) if np.random.default_rng(s).random() >= 0.5)  # a draw without the flip
    out = tf(item, np.random.default_rng(seed))
    nw = round(80 * k)
    assert out["image"].shape == (1, 200, nw)
    torch.testing.assert_close(out["boxes"], torch.tensor([[30.0 * nw / 80, 100.0, 50.0 * nw / 80, 140.0]]))
    torch.testing.assert_close(out["landmarks"], lm * torch.tensor([nw / 80, 1.0]))
    x0, y0, x1, y1 = (round(float(v)) for v in out["boxes"][0])
    inside, outside = out["image"][:, y0 + 2:y1 - 2, x0 + 2:x1 - 2], out["image"][:, :90]
    assert float(inside.mean()) > float(outside.mean()) + 0.3  # the construct is still where its box is
    assert item["image"].shape == (1, 200, 80) and item["boxes"][0, 0] == 30.0  # the item itself untouched
    # validation and scoring never stretch; without the setting, training keeps the width
    assert DetectorTransform(train=False, stretch=(k, k))(item, np.random.default_rng(seed))["image"] is img
    assert DetectorTransform(train=True)(item, np.random.default_rng(seed))["image"].shape == (1, 200, 80)
    with pytest.raises(ValueError, match="stretch"):
        DetectorTransform(train=True, stretch=(1.3, 0.85))


def test_detection_training_data_stretches_as_its_settings_say(tiny_data):
    from dataclasses import replace

    from spinebench.data.dataset import SpineDataset
    from spinebench.data.sources import load_records
    from spinebench.engine.profiles import PROFILES
    from spinebench.tasks import get_task

    ds = SpineDataset(load_records([tiny_data]), max_side=96)
    task = get_task("det_faster_rcnn_inception_v2")
    s = PROFILES["quick"].settings_for("det_faster_rcnn_inception_v2", len(ds))
    assert task.train_data(None, ds, s, torch.device("cpu"), 0).ds.transform.stretch == tuple(s.extra["stretch"])
    plain = replace(s, extra={k: v for k, v in s.extra.items() if k != "stretch"})
    assert task.train_data(None, ds, plain, torch.device("cpu"), 0).ds.transform.stretch is None
