"""How films shrink to a classifier's input (``downsample``): the brightest-pixel shrink keeps thin metal, and the
choice is part of the model, so training, evaluation and the demo all feed it the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinebench.data.transforms import ClassifierTransform, resize


def _film_with_pin(h: int = 320, w: int = 140) -> torch.Tensor:
    """A flat grey film with a 2 x 2 px bright pin (a cage's marker at the decoded cache's scale)."""
    img = torch.full((1, h, w), 0.5)
    img[0, 201:203, 71:73] = 1.0
    return img


def test_max_downsample_keeps_a_thin_bright_pin_that_averaging_dilutes():
    img = _film_with_pin()
    bilinear, brightest = resize(img, (128, 56)), resize(img, (128, 56), "max")
    assert bilinear.shape == brightest.shape == (1, 128, 56)
    assert float(bilinear.max()) < 0.7          # averaged over a 2.5 x 2.5 cell and its antialiasing kernel
    assert float(brightest.max()) == 1.0
    assert int((brightest == 1.0).sum()) <= 4   # the pin stays small: it is not smeared across the film
    torch.testing.assert_close(brightest.median(), torch.tensor(0.5))
    # growing a film (or an axis) is not shrinking: both modes interpolate alike there
    small = torch.rand(1, 40, 20)
    torch.testing.assert_close(resize(small, (128, 56), "max"), resize(small, (128, 56)))
    with pytest.raises(ValueError, match="unknown downsample"):
        resize(img, (128, 56), "nearest")
    with pytest.raises(ValueError, match="unknown downsample"):
        ClassifierTransform((128, 56), train=False, downsample="area")


def test_quick_resnet50_shrinks_by_max_and_every_path_feeds_the_model_so(tmp_path):
    """The quick profile builds ResNet-50 with downsample "max" (Inception-v3 keeps bilinear); the weights record
    rebuilds it so; the record's preprocessing (``predict``, the demo) gives the model the max-shrunk film, as
    training did."""
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.weights import save_weights
    from spinebench.models import create_model
    from spinebench.tasks import get_task
    from spinebench.weights import get_record

    name, quick = "cls_resnet50", get_profile("quick")
    task = get_task(name)
    settings = quick.settings_for(name, 100)
    kwargs = task.model_kwargs(quick, settings)
    assert kwargs == {"downsample": "max"}
    assert task.model_kwargs(quick, quick.settings_for("cls_inception_v3", 100)) == {}
    model = create_model(name, **kwargs)
    assert model.default_cfg["downsample"] == "max"
    assert task.transform(model, settings.image_size, train=True).downsample == "max"
    assert get_task(name).transform(create_model(name), None, train=False).downsample == "bilinear"
    with pytest.raises(ValueError, match="unknown downsample"):
        create_model(name, downsample="bogus")

    save_weights(model, tmp_path / "w", meta={"task": "classification", "max_side": 320, "pretrained": False,
                                              "image_size": list(settings.image_size), "model_kwargs": kwargs})
    rec = get_record(name, tmp_path / "w")
    assert rec.build().default_cfg["downsample"] == "max"
    img = _film_with_pin()
    x = rec.preprocess(img[0].numpy())
    expected = task.transform(model, settings.image_size, train=False)({"image": img.half().float()},
                                                                       np.random.default_rng(0))["image"]
    torch.testing.assert_close(x, expected)
    assert float(x.max()) == 1.0

