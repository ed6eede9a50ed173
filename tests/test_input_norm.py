"""The landmark models' input normalisation (``input_norm``): histogram equalisation and local contrast
(``spinebench.data.transforms``), and that every path into a ``cobb`` model applies the one its weights record
names. Films from the synthetic generator (a real AASCE film where the data set is present); nothing downloaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spinebench.data.transforms import equalize, local_contrast, normalize_input, resize


@pytest.fixture(scope="module")
def film() -> torch.Tensor:
    """(1, 1, 192, 96) a synthetic radiograph at the quick Cobb model's input."""
    from spinebench.data.synth import render_image

    img, _ = render_image(3, 5, 0, scale=0.5)
    return resize(torch.from_numpy(img)[None], (192, 96))[None]


def test_equalize_is_a_rank_map_that_keeps_ties():
    x = torch.rand(2, 1, 40, 20)
    x[0, 0, :10] = 0.0  # a flat black border
    e = equalize(x)
    assert e.shape == x.shape and float(e.min()) >= 0 and float(e.max()) <= 1
    assert e[0, 0, :10].unique().numel() == 1  # equal pixels, equal output: no ramp in memory order
    flat_x, flat_e = x[1].flatten(), e[1].flatten()
    order = flat_x.argsort()
    assert bool((flat_e[order].diff() >= 0).all())  # brighter in, not darker out
    assert abs(float(e[1].mean()) - 0.5) < 0.01  # uniform grey levels: mean one half
    # each image on its own: a brighter second film does not shift the first one's output
    x2 = x.clone()
    x2[1] = x2[1] * 0.5 + 0.5
    assert torch.equal(equalize(x2)[0], e[0])


def test_local_contrast_takes_out_exposure_and_keeps_the_spine(film):
    """The differences between acquisitions it is meant to remove (gain, offset, a response curve) barely change
    its output; the same changes move the plain film by far more."""
    base = local_contrast(film)
    assert base.shape == film.shape and float(base.min()) >= 0 and float(base.max()) <= 1
    for changed in (film * 0.6 + 0.3, film.clamp(0, 1) ** 0.6):
        plain = float((changed - film).abs().mean())
        normed = float((local_contrast(changed) - base).abs().mean())
        assert plain > 0.08 and normed < plain / 4, (plain, normed)
    # a slow background (soft tissue, scatter) added across the film: the local term follows the edges, not it
    ramp = torch.linspace(0, 0.4, film.shape[-2]).view(1, 1, -1, 1)
    shifted = (film + ramp).clamp(0, 1)
    assert float((local_contrast(shifted) - base).abs().mean()) < float((shifted - film).abs().mean()) / 2
    # the spine's column stays brighter than its surroundings: the edges the corners sit on are kept
    mid = base[0, 0, 40:150]
    assert float(mid[:, 40:56].mean()) > float(mid[:, :20].mean())
    with pytest.raises(ValueError, match="unknown input_norm"):
        normalize_input(film, "clahe")
    assert torch.equal(normalize_input(film, "none"), film)


def test_local_contrast_keeps_its_arithmetic_in_fp32_under_autocast(film):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_contrast(film.repeat(2, 1, 1, 1))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:1], local_contrast(film))


def test_quick_cobb_model_records_its_norm_and_every_path_applies_it(tmp_path, film):
    """The quick profile builds the Cobb model with input_norm "local"; its weights record rebuilds it so; the
    record's preprocessing (``measure``, the demo) and the task's stacked inputs (training, ``predict``) give the
    model the same normalised film, not the plain one."""
    from spinebench.data.dataset import SpineDataset
    from spinebench.data.records import make_record
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.weights import save_weights
    from spinebench.models import create_model
    from spinebench.tasks.cobb import CobbTask, LandmarkInput, stack_inputs
    from spinebench.weights import get_record

    quick = get_profile("quick")
    kwargs = CobbTask().model_kwargs(quick, quick.cobb)
    assert kwargs["input_norm"] == "local"
    model = create_model(quick.cobb_model, **kwargs)
    assert model.input_norm == "local" and model.default_cfg["input_norm"] == "local"
    with pytest.raises(ValueError, match="unknown input_norm"):
        create_model(quick.cobb_model, input_norm="bogus")

    save_weights(model, tmp_path / "w", meta={"task": "cobb", "max_side": 192, "pretrained": False,
                                              "model_kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                               for k, v in kwargs.items()}})
    rec = get_record(quick.cobb_model, tmp_path / "w")
    assert rec.build().input_norm == "local"
    img = film[0, 0].numpy()
    x = rec.preprocess(img)
    torch.testing.assert_close(x, local_contrast(film.half().float())[0], atol=1e-5, rtol=0)  # float16 cache
    assert float((x - film[0]).abs().mean()) > 0.05

    from PIL import Image

    path = tmp_path / "film.png"
    Image.fromarray((img * 255).round().astype(np.uint8)).save(path)
    ds = SpineDataset([make_record(image_id="t/0", patient_id="t/0", source="test", path=str(path), split="test",
                                   width=96, height=192)], max_side=192)
    stacked = stack_inputs(ds, LandmarkInput.of(model))["images"][0].float()
    torch.testing.assert_close(stacked, rec.preprocess(ds[0]["image"][0].numpy()), atol=2e-3, rtol=0)
    # the task's own data paths take a dataset that already carries its evaluation transform (as run-all and
    # evaluate hand it over) without normalising twice
    task = CobbTask()
    carried = ds.with_transform(task.transform(model, None, train=False))
    torch.testing.assert_close(task.val_data(model, carried, quick.cobb, "cpu")["images"][0].float(), stacked)


def test_old_records_without_input_norm_keep_the_plain_input(tmp_path, film):
    """Weights saved before ``input_norm`` existed rebuild with "none": their films are fed as they were."""
    from spinebench.engine.weights import save_weights
    from spinebench.models import create_model
    from spinebench.weights import get_record

    model = create_model("cobb_regress_resnet10t", input_size=(192, 96))
    save_weights(model, tmp_path / "w", meta={"task": "cobb", "max_side": 192, "pretrained": False,
                                              "model_kwargs": {"input_size": [192, 96]}})
    rec = get_record("cobb_regress_resnet10t", tmp_path / "w")
    assert rec.build().input_norm == "none"
    torch.testing.assert_close(rec.preprocess(film[0, 0].numpy()), film[0], atol=1e-3, rtol=0)  # float16 cache
