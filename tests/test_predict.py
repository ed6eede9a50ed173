"""The demo's library predictor (spinebench.predict) and Grad-CAM on small real inputs.

Weights are random-init models saved with ``save_weights`` (fast, no training, nothing downloaded): the plumbing is
what is tested, and the comparison with the training pipeline proves the models see what they were trained on.
The weights folder is built once per test session and shared with test_app.py and test_browser.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from spinebench import FINDINGS
from spinebench.engine.profiles import PROFILES
from spinebench.errors import ImageLoadError, SpinebenchError

EXAMPLES = Path(__file__).resolve().parent.parent / "spinebench" / "assets" / "examples"
SMALL_SIZES = {"cls_inception_v3": [75, 75]}  # the smallest it takes; the others 64 x 64
QUICK_SIDE = PROFILES["quick"].cache_side  # the run ids below name the quick profile
DET_KWARGS = {"min_size": 160, "max_size": 192, "fpn_channels": 32}  # small: plumbing, not accuracy


def make_demo_weights(out: Path) -> Path:
    """Every registered classifier and detector, random init, small inputs, thresholds 0.5 (idempotent)."""
    from spinebench.engine.weights import save_weights, trained_models
    from spinebench.models import create_model, list_models, model_info

    names = [n for n in list_models() if model_info(n)["task"] in ("classification", "detection")]
    if set(names) <= set(trained_models(out)):
        return out
    torch.manual_seed(0)
    for name in names:
        task = model_info(name)["task"]
        kwargs = dict(DET_KWARGS) if task == "detection" else {}
        size = None if task == "detection" else SMALL_SIZES.get(name, [64, 64])
        model = create_model(name, pretrained="none", **kwargs)
        save_weights(model, out, meta={
            "model": name, "task": task, "thresholds": [0.5, 0.5, 0.5], "image_size": size, "model_kwargs": kwargs,
            "run_id": "20250101-000000-quick", "data": "synth aasce=/private/path/aasce2019", "seed": 0,
            "pretrained": False, "metrics": {"any_sensitivity": 0.8, "any_sensitivity_lo": 0.7,
                                             "any_sensitivity_hi": 0.9, "loss": 0.4}})
    return out


@pytest.fixture(scope="session")
def demo_weights(tmp_path_factory) -> Path:
    return make_demo_weights(tmp_path_factory.getbasetemp() / "demo_weights")


@pytest.fixture(scope="session")
def predictor(demo_weights):
    from spinebench.predict import get_predictor

    return get_predictor(str(demo_weights))


def example(name: str) -> str:
    matches = sorted(EXAMPLES.glob(f"*{name}*"))
    assert matches, f"no example named {name} in {EXAMPLES}"
    return str(matches[0])


# --------------------------------------------------------------------------------------------------- analyze
def test_analyze_gives_one_entry_per_model(predictor):
    a = predictor.analyze(example("normal"))
    r = a.result
    json.dumps(r)  # JSON-serialisable as returned by /analyze
    assert list(r["models"]) == predictor.names and len(r["models"]) == 6
    for name, m in r["models"].items():
        for f in FINDINGS:
            d = m[f]
            assert 0.0 <= d["probability"] <= 1.0
            assert d["positive"] == (d["probability"] >= d["threshold"])
        assert m["ms"] > 0
        if m["task"] == "detection":
            for b in m["boxes"]:
                assert b["label"] in ("Lum", "sco") and len(b["box"]) == 4
    ag = r["agreement"]
    assert ag["models"] == 6
    for f in FINDINGS:
        pos = sum(m[f]["positive"] for m in r["models"].values())
        assert ag[f]["positive"] == pos and ag[f]["agree"] == max(pos, 6 - pos)
    assert "not a diagnosis" in r["disclaimer"]
    # the model view is the quick profile's cache side (the example is 1,000 px tall)
    assert r["image"]["model_view"][0] == QUICK_SIDE and r["image"]["height"] == 1000
    # pictures: the input as the models see it, one per model
    assert a.images["input"].shape == tuple(r["image"]["model_view"])
    for name in predictor.names:
        img = a.images[name]
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[0] >= QUICK_SIDE


def test_probabilities_equal_the_training_pipeline(predictor):
    """What the predictor feeds each model is what training/evaluation fed it: same downscale, same transform."""
    from spinebench.data.dataset import SpineDataset
    from spinebench.data.records import make_record
    from spinebench.engine.train import predict, transforms_for

    path = example("implant_and_scoliosis")
    r = predictor.analyze(path, draw=False).result
    rec = make_record(image_id="x", patient_id="p", source="test", path=path)
    ds = SpineDataset([rec], max_side=QUICK_SIDE, workers=1)
    for name, lm in predictor.models.items():
        tf = transforms_for(lm.model, lm.record.image_size, train=False)
        ref = predict(lm.model, ds.with_transform(tf), torch.device("cpu"))["probs"][0]
        got = [r["models"][name][f]["probability"] for f in FINDINGS]
        np.testing.assert_allclose(got, ref, atol=6e-5, err_msg=name)


@pytest.mark.parametrize("name", ["cls_squeezenet1_1", "cls_densenet121"])
def test_classifiers_read_the_film_and_its_mirror_image(name, tmp_path):
    """A classifier's probabilities are the sigmoid of the mean logits of the film and of its mirror image
    (``tasks.classification.mean_of_looks``): so a mirrored film gets the same call as the film, which one look of
    an untrained (asymmetric) network does not give."""
    from PIL import Image

    from spinebench.data.dataset import SpineDataset
    from spinebench.data.records import make_record
    from spinebench.engine.train import predict, transforms_for
    from spinebench.models import create_model

    path = Path(example("implant_and_scoliosis"))
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(tmp_path / "mirror.png")
    recs = [make_record(image_id=p.stem, patient_id="p", source="test", path=str(p))
            for p in (path, tmp_path / "mirror.png")]
    torch.manual_seed(0)
    model = create_model(name).eval()
    ds = SpineDataset(recs, max_side=QUICK_SIDE, workers=1).with_transform(transforms_for(model, (128, 56), False))
    got = predict(model, ds, torch.device("cpu"))["probs"]
    np.testing.assert_allclose(got[0], got[1], atol=1e-5)  # the film and its mirror image: one call
    x = torch.stack([ds[0]["image"], ds[1]["image"]])
    with torch.inference_mode():
        film, mirror = model(x), model(x.flip(-1))
    np.testing.assert_allclose(got, torch.sigmoid((film + mirror) / 2).numpy(), atol=1e-5)
    one_look = torch.sigmoid(film).numpy()
    assert np.abs(one_look[0] - one_look[1]).max() > 1e-3  # one look alone reads the two differently


def test_detector_batches_group_one_padded_shape_and_keep_the_order(predictor, tmp_path, monkeypatch):
    """Detectors predict several images a batch, only images the model pads to one shape: the boxes and scores are
    each image's own (the demo's batch of one) and come back in the dataset's order."""
    from PIL import Image

    from spinebench.data.dataset import SpineDataset
    from spinebench.data.records import make_record
    from spinebench.engine.train import transforms_for
    from spinebench.tasks import get_task

    paths = []
    for p in sorted(EXAMPLES.glob("*.jpg")):  # each example, and narrower crops of it (other padded shapes)
        im = Image.open(p)
        paths.append(p)
        for k, frac in enumerate((0.55, 0.8)):
            im.crop((0, 0, int(im.width * frac), im.height)).save(tmp_path / f"{p.stem}-{k}.png")
            paths.append(tmp_path / f"{p.stem}-{k}.png")
    recs = [make_record(image_id=f"x{i}", patient_id="p", source="test", path=str(p)) for i, p in enumerate(paths)]
    dets = [name for name, lm in predictor.models.items() if get_task(lm.model).boxes]
    assert dets
    for name in dets:
        model = predictor.models[name].model.eval()
        task = get_task(model)
        ds = SpineDataset(recs, max_side=QUICK_SIDE, workers=1).with_transform(transforms_for(model, None, False))
        batches = task.predict_batches(model, ds, 3)
        assert sorted(i for b in batches for i in b) == list(range(len(ds))) and max(map(len, batches)) == 3
        for b in batches:  # one padded input shape per batch
            shapes = {tuple(-(-s // 32) for s in model.transform.resize(ds[i]["image"], None)[0].shape[-2:])
                      for i in b}
            assert len(shapes) == 1, (name, b, shapes)
        assert batches != [list(range(k, min(k + 3, len(ds)))) for k in range(0, len(ds), 3)]  # shapes regrouped
        monkeypatch.setattr(type(task), "predict_batch_size", 1)
        one = task.predict(model, ds, torch.device("cpu"))
        monkeypatch.setattr(type(task), "predict_batch_size", 3)
        grouped = task.predict(model, ds, torch.device("cpu"))
        assert grouped["image_ids"] == [r["image_id"] for r in recs] == one["image_ids"]
        np.testing.assert_allclose(grouped["probs"], one["probs"], atol=1e-6, err_msg=name)
        for a, b in zip(one["detections"], grouped["detections"]):
            np.testing.assert_allclose(b["boxes"].numpy(), a["boxes"].numpy(), atol=1e-3, err_msg=name)


def test_decisions_use_each_models_validated_thresholds(demo_weights, tmp_path):
    """A threshold of 0 flags every image, one above 1 none: decisions never fall back to 0.5."""
    import shutil

    from spinebench.engine.weights import MANIFEST
    from spinebench.predict import Predictor

    wdir = tmp_path / "w"
    wdir.mkdir()
    name = "cls_squeezenet1_1"
    shutil.copy(demo_weights / f"{name}.pt", wdir)
    manifest = json.loads((demo_weights / MANIFEST).read_text())
    entry = dict(manifest[name], thresholds=[0.0, 1.5, 0.5])
    (wdir / MANIFEST).write_text(json.dumps({name: entry}))
    r = Predictor(wdir).analyze(example("scoliosis"), draw=False).result["models"][name]
    assert r["implant"]["positive"] is True and r["implant"]["threshold"] == 0.0
    assert r["scoliosis"]["positive"] is False and r["scoliosis"]["threshold"] == 1.5


def test_dicom_is_windowed_and_patient_data_never_shown(predictor):
    from spinebench.io import load_image

    path = example("dicom")
    a = predictor.analyze(path)
    text = json.dumps(a.result)
    img, meta = load_image(path)
    assert meta["inverted"] and a.result["image"]["inverted"] is True  # MONOCHROME1: inverted to bright = dense
    assert a.result["image"]["format"] == "dicom" and a.result["image"]["modality"] == "DX"
    for identity in ("SYNTHETIC", "DEMO-EXAMPLE", "PatientName", "20240101"):
        assert identity not in text
    # the view is the windowed, inverted image downscaled: bone bright, like the PNG of the same case
    png, _ = load_image(example("implant_and_scoliosis"))
    assert abs(float(img.mean()) - float(png.mean())) < 0.01


def test_bad_uploads_raise_one_clear_error(predictor, tmp_path, make_dicom):
    from spinebench.predict import user_message

    cases = {"notes.txt": b"just some text, not an image\n" * 10,
             "scan.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 40,          # truncated PNG
             "archive.dcm": b"PK\x03\x04" + b"\0" * 200}               # a ZIP named .dcm
    dcm = make_dicom(tmp_path / "full.dcm", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    cases["truncated.dcm"] = dcm.read_bytes()[:-2000]
    for fname, data in cases.items():
        p = tmp_path / "upload_dir_with_PATIENT_NAME" / fname
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(data)
        with pytest.raises(ImageLoadError) as err:
            predictor.analyze(str(p))
        msg = user_message(err.value)
        assert "\n" not in msg and msg, fname
        assert "PATIENT_NAME" not in msg and str(tmp_path) not in msg, msg


def test_huge_or_odd_images_are_refused(predictor, tmp_path):
    from PIL import Image

    p = tmp_path / "huge.png"
    Image.new("L", (9000, 6000)).save(p)  # 54 MP: over the demo's 50 MP budget, a small file
    with pytest.raises(ImageLoadError, match="pixels|large|MP"):
        predictor.analyze(str(p))
    for size in ((4000, 20), (16, 16)):  # a strip, a thumbnail: not something the detectors can read
        p = tmp_path / f"odd_{size[0]}.png"
        Image.new("L", size, 128).save(p)
        with pytest.raises(ImageLoadError, match="not a radiograph"):
            predictor.analyze(str(p))


def test_a_failing_model_does_not_take_the_others_down(predictor, monkeypatch):
    name = "cls_squeezenet1_1"
    lm = predictor.models[name]

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(lm, "cam", broken)
    r = predictor.analyze(example("normal")).result
    assert r["models"][name]["error"] == f"{name} failed (RuntimeError)"
    assert r["agreement"]["models"] == 5
    assert all("error" not in m for n, m in r["models"].items() if n != name)


def test_batch_rows_and_csv(predictor, tmp_path):
    import csv

    from spinebench.predict import BATCH_COLUMNS, batch_rows, write_batch_csv

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    files = [example("normal"), str(bad), example("dicom")]
    rows = batch_rows(predictor, files, ["a.png", "bad.png", "c.dcm"])
    assert len(rows) == 6 + 1 + 6
    errors = [r for r in rows if r["file"] == "bad.png"]
    assert len(errors) == 1 and errors[0]["error"] and not errors[0]["model"]
    out = write_batch_csv(rows, tmp_path / "p.csv")
    with open(out, newline="") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == BATCH_COLUMNS and len(back) == len(rows)
    ok = [r for r in back if r["file"] == "c.dcm"]
    assert {r["model"] for r in ok} == set(predictor.names)
    for r in ok:
        for f in FINDINGS:
            assert int(r[f"{f}_positive"]) == int(float(r[f"{f}_probability"]) >= float(r[f"{f}_threshold"]))


def test_optimised_models_compute_what_the_eager_models_compute(demo_weights, predictor):
    """Frozen classifier bodies and detector backbones give the eager models' outputs, on views of other aspect
    ratios than the one they were traced on."""
    from spinebench.predict import Predictor, _Frozen

    for lm in predictor.models.values():
        if lm.task == "classification":
            assert lm.cam.optimized, lm.name
        else:
            assert isinstance(lm.model.backbone, _Frozen) and isinstance(lm.model.rpn.head, _Frozen), lm.name
    eager = Predictor(demo_weights, optimize=False)
    for ex in ("scoliosis", "implant"):
        a, b = predictor.analyze(example(ex), draw=False), eager.analyze(example(ex), draw=False)
        for name in predictor.names:
            ra, rb = a.result["models"][name], b.result["models"][name]
            for f in FINDINGS:
                assert abs(ra[f]["probability"] - rb[f]["probability"]) <= 2e-4, (name, f)
            if ra["task"] == "detection":
                assert len(ra["boxes"]) == len(rb["boxes"])
                for ba, bb in zip(ra["boxes"], rb["boxes"]):
                    np.testing.assert_allclose(ba["box"], bb["box"], atol=0.5)
            else:
                np.testing.assert_allclose(a.raw[name]["cams"], b.raw[name]["cams"], atol=1e-3)


# --------------------------------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize("name", ["cls_resnet50", "cls_densenet121", "cls_squeezenet1_1"])
@pytest.mark.parametrize("optimize", [False, True])
def test_gradcam_equals_full_backward(name, optimize):
    """Head-only Grad-CAM (eager hook or frozen body + head) == the usual full-graph computation (hooks and a
    backward pass through the whole network), logits included."""
    from spinebench.gradcam import GradCAM
    from spinebench.models import create_model

    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(2, 1, 48, 48)
    with torch.inference_mode():
        ref_logits = model(x)
    cam = GradCAM(model, optimize=optimize, example=torch.rand(2, 1, 48, 48))
    assert cam.optimized == optimize
    logits, cams = cam(x)
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    assert cams.shape[:2] == (2, 2) and float(cams.min()) >= 0 and float(cams.amax()) <= 1
    cam.remove()
    model.requires_grad_(True)
    for k in range(2):
        store = {}

        def hook(mod, args, out):
            store["a"] = out
            out.register_hook(lambda g: store.__setitem__("g", g))

        h = cam.layer.register_forward_hook(hook)
        model(x)[:, k].sum().backward()
        h.remove()
        a, g = store["a"].detach(), store["g"]
        ref = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1))
        ref = ref / ref.amax((1, 2), keepdim=True).clamp(min=1e-12)
        torch.testing.assert_close(cams[:, k], ref, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------- helpers
def test_agreement_counts():
    from spinebench.predict import agreement

    def m(i, s):
        return {"implant": {"positive": i}, "scoliosis": {"positive": s}}

    a = agreement({"a": m(True, False), "b": m(True, True), "c": m(False, False), "d": {"error": "x"}})
    assert a["models"] == 3
    assert a["implant"] == {"positive": 2, "negative": 1, "left_out": 0, "majority": "present", "agree": 2}
    assert a["scoliosis"]["majority"] == "absent" and a["scoliosis"]["agree"] == 2
    assert a["both"] == {"agree": 1, "of": 3, "unanimous": False}
    tie = agreement({"a": m(True, True), "b": m(False, True)})
    assert tie["implant"]["majority"] == "split" and tie["scoliosis"] == {
        "positive": 2, "negative": 0, "left_out": 0, "majority": "present", "agree": 2}
    from spinebench.predict import agreement_text

    text = agreement_text({"agreement": tie})
    assert "split 1-1" in text and "2 of 2" in text and "not a diagnosis" in text


def test_calls_no_better_than_chance_are_marked_and_do_not_vote(tmp_path):
    """A model's call on a finding whose test AUROC interval reaches 0.5 (a quick detector's scoliosis) is shown
    with that AUROC and "no signal", and left out of that finding's vote and of the vote on both; its other
    finding still votes. A record without an AUROC (nothing measured) votes as before."""
    from spinebench.engine.weights import save_weights
    from spinebench.models import create_model
    from spinebench.predict import Predictor, agreement, agreement_text, summary_rows
    from spinebench.predict.predictor import finding_signal

    assert finding_signal({"scoliosis_auroc": 0.382, "scoliosis_auroc_lo": 0.26}, "scoliosis") == (0.382, False)
    assert finding_signal({"scoliosis_auroc": 0.62, "scoliosis_auroc_lo": 0.45}, "scoliosis") == (0.62, False)
    assert finding_signal({"implant_auroc": 0.93, "implant_auroc_lo": 0.86}, "implant") == (0.93, True)
    assert finding_signal({"implant_auroc": 0.7}, "implant") == (0.7, True)  # no interval: the point estimate
    assert finding_signal({"implant_auroc": float("nan")}, "implant") == (None, None)
    assert finding_signal({}, "scoliosis") == (None, None)

    torch.manual_seed(0)
    records = {"cls_squeezenet1_1": ({}, {"implant_auroc": 0.93, "implant_auroc_lo": 0.86,
                                           "scoliosis_auroc": 0.97, "scoliosis_auroc_lo": 0.93}),
               "det_faster_rcnn_inception_v2": (DET_KWARGS, {"implant_auroc": 0.89, "implant_auroc_lo": 0.78,
                                                             "scoliosis_auroc": 0.382, "scoliosis_auroc_lo": 0.26})}
    for name, (kwargs, metrics) in records.items():
        task = "detection" if name.startswith("det_") else "classification"
        save_weights(create_model(name, pretrained="none", **kwargs), tmp_path, meta={
            "model": name, "task": task, "thresholds": [0.5, 0.5, 0.5], "model_kwargs": kwargs,
            "image_size": None if task == "detection" else [64, 64], "run_id": "20250101-000000-quick",
            "data": "synth", "seed": 0, "pretrained": False, "metrics": metrics})
    a = Predictor(str(tmp_path)).analyze(example("normal"))
    det, cls = a.result["models"]["det_faster_rcnn_inception_v2"], a.result["models"]["cls_squeezenet1_1"]
    assert det["scoliosis"]["test_auroc"] == 0.382 and det["scoliosis"]["signal"] is False
    assert det["implant"]["signal"] is True and cls["scoliosis"] == {**cls["scoliosis"], "signal": True,
                                                                     "test_auroc": 0.97}
    ag = a.result["agreement"]
    assert ag["models"] == 2 and ag["scoliosis"]["left_out"] == 1
    assert ag["scoliosis"]["positive"] + ag["scoliosis"]["negative"] == 1
    assert ag["implant"]["positive"] + ag["implant"]["negative"] == 2 and ag["implant"]["left_out"] == 0
    assert ag["both"]["of"] == 1 and ag["both"]["unanimous"]
    assert "1 more left out" in agreement_text(a.result)
    row = {r[0]: r for r in summary_rows(a.result)}["det_faster_rcnn_inception_v2"]
    assert row[4].endswith("no signal: test AUROC 0.38") and "no signal" not in row[2]
    assert a.images["det_faster_rcnn_inception_v2"].ndim == 3  # its picture is drawn with the mark
    from spinebench.predict import entries_rows

    rows = {r["model"]: r for r in entries_rows([{"file": "normal.jpg", "result": a.result}])}  # the batch CSV
    assert rows["det_faster_rcnn_inception_v2"]["scoliosis_signal"] == 0
    assert rows["det_faster_rcnn_inception_v2"]["scoliosis_test_auroc"] == 0.382
    assert rows["cls_squeezenet1_1"]["implant_signal"] == 1
    only = agreement({"d": {"implant": {"positive": True}, "scoliosis": {"positive": True, "signal": False}}})
    assert "no model's scoliosis call" in agreement_text({"agreement": only})


def test_cache_side_follows_the_training_profile():
    """Older manifest entries are read through one adapter: cache_side, cobb_train's max_side, or the run id."""
    from spinebench.engine.profiles import PROFILES
    from spinebench.weights import TrainedWeights

    def side(entry):
        return TrainedWeights.from_entry("cls_squeezenet1_1", entry).cache_side

    assert side({"run_id": "20250101-000000-paper"}) == PROFILES["paper"].cache_side
    assert side({"run_id": "20250101-000000-quick"}) == PROFILES["quick"].cache_side
    assert side({"cache_side": 512, "run_id": "x-paper"}) == 512
    assert side({"max_side": 768}) == 768  # what cobb_train records


def test_model_cards_say_what_the_model_is(demo_weights):
    from spinebench.predict import model_cards

    cards = model_cards(demo_weights)
    assert len(cards) >= 6
    card = cards["cls_densenet121"]
    for text in ("Parameters", "Training data", "ImageNet", "Intended use", "not for diagnosis", "0.800"):
        assert text in card, text
    assert "/private/path" not in card  # data specs are shown without local paths


def test_examples_are_small_and_cover_each_case():
    from spinebench.io import load_image

    files = [p for p in EXAMPLES.iterdir() if p.suffix in (".png", ".jpg", ".dcm")]
    names = " ".join(p.stem for p in files)
    for kind in ("normal", "scoliosis", "implant", "implant_and_scoliosis", "dicom"):
        assert kind in names
    for p in files:
        assert p.stat().st_size < 100_000, p
        img, meta = load_image(p)
        assert img.ndim == 2 and 0 <= img.min() and img.max() <= 1
        if p.suffix == ".jpg":  # readable by a visitor: about 1,000 px on the long side
            assert max(img.shape) == 1000, (p, img.shape)


def test_find_weights_never_trains(tmp_path, demo_weights, monkeypatch):
    """Inference finds weights in a folder (or on the Hub, tests/test_hub.py) and otherwise says there are none."""
    from spinebench import predict as sp

    monkeypatch.delenv(sp.WEIGHTS_REPO_ENV, raising=False)
    assert sp.find_weights(demo_weights) == demo_weights
    assert sp.find_weights(tmp_path / "empty") is None
    with pytest.raises(SpinebenchError, match="bad Hub weights"):
        sp.find_weights(tmp_path / "empty", hub_repo="not a repo")


def test_inference_does_not_import_training_orchestration():
    import subprocess
    import sys

    code = ("import sys, spinebench.predict, spinebench.measure, spinebench.hub, spinebench.weights; "
            "print([m for m in ('spinebench.engine.runner', 'spinebench.engine.cobb_train') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_predictor_refuses_an_empty_weights_folder(tmp_path):
    from spinebench.predict import Predictor

    with pytest.raises(SpinebenchError, match="no usable trained models|no trained"):
        Predictor(tmp_path)


def test_detector_boxes_are_in_original_pixels(predictor):
    """Boxes drawn on the model's view are reported in the uploaded image's pixels."""
    a = predictor.analyze(example("normal"))
    h, w = a.result["image"]["height"], a.result["image"]["width"]
    for name, m in a.result["models"].items():
        for b in m.get("boxes", []):
            x0, y0, x1, y1 = b["box"]
            assert -1 <= x0 <= x1 <= w + 1 and -1 <= y0 <= y1 <= h + 1, (name, b)
    assert math.isclose(a.scale, QUICK_SIDE / 1000, rel_tol=1e-3)


def test_cobb_model_is_shown_when_trained(demo_weights, tmp_path):
    """A 7th model (task "cobb") adds angles, grade, landmarks and an overlay; it does not vote in the agreement."""
    import shutil

    from spinebench.engine.weights import MANIFEST, save_weights
    from spinebench.models import create_model, list_models
    from spinebench.predict import Predictor, summary_rows

    cobb = list_models(task="cobb")
    if not cobb:
        pytest.skip("no Cobb-angle model registered")
    wdir = tmp_path / "w"
    wdir.mkdir()
    shutil.copy(demo_weights / "cls_squeezenet1_1.pt", wdir)
    entry = json.loads((demo_weights / MANIFEST).read_text())["cls_squeezenet1_1"]
    (wdir / MANIFEST).write_text(json.dumps({"cls_squeezenet1_1": entry}))
    torch.manual_seed(0)
    kwargs = {"input_size": [128, 64]}
    save_weights(create_model(cobb[0], pretrained="none", **kwargs), wdir,
                 meta={"model": cobb[0], "task": "cobb", "thresholds": [], "run_id": "20250101-000000-quick",
                       "data": "aasce=/x", "model_kwargs": kwargs, "pretrained": False})
    a = Predictor(wdir).analyze(example("scoliosis"))
    r = a.result["models"][cobb[0]]
    assert set(r["angles"]) == {"pt", "mt", "tl"} and r["grade"] in ("none", "mild", "moderate", "severe")
    assert r["largest"] == max(r["angles"].values()) and len(r["landmarks"]) == 68
    assert r["scoliosis_measured"] == (r["largest"] >= 10)
    assert a.result["agreement"]["models"] == 1  # only the classifier votes
    assert a.images[cobb[0]].ndim == 3
    # the summary names the largest curve by its end vertebrae, not by the AASCE key ("PT" is the largest anywhere)
    ends = "-".join(r["end_vertebrae"][r["largest_curve"]])
    assert [row[4] for row in summary_rows(a.result) if row[0] == cobb[0]] == \
        [f"Cobb {r['largest']:.1f}° {ends}, {r['grade']}"]
    json.dumps(a.result)


def test_record_preprocess_is_the_dataset_pipeline(predictor):
    """``TrainedWeights.preprocess`` (the demo, measure, batch) gives what the dataset + eval transform give."""
    from spinebench.data.dataset import SpineDataset
    from spinebench.data.records import make_record
    from spinebench.io import load_image

    path = example("scoliosis")
    img, _ = load_image(path)
    rec = make_record(image_id="x", patient_id="p", source="test", path=path)
    for name, lm in predictor.models.items():
        ds = SpineDataset([rec], max_side=lm.record.cache_side, workers=1)
        ref = ds.with_transform(lm.record.transform())[0]["image"]
        assert torch.equal(lm.record.preprocess(img), ref.float()), name
