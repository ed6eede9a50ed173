"""Training augmentations (spinebench.data.transforms): what they vary and what they must keep."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spinebench.data.transforms import ClassifierTransform, affine_theta


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
