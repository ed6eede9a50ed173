"""The Cobb-angle landmark model: network contract, target encoding/decoding, augmentation, training loop,
scoring, and the ``measure`` library call and CLI. Small synthetic spines; nothing downloaded."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from spinebench.cobb import cobb_angles
from spinebench.errors import SpinebenchError
from spinebench.models.cobb_net import (OUT_CHANNELS, canonical_landmarks, decode_landmarks, encode_targets,
                                        landmark_loss)

SMALL = (256, 128)  # (H, W): the smallest input that keeps 17 vertebrae apart at stride 4


def synthetic_spine(h: float, w: float, amp: float = 0.12, seed: int = 0) -> np.ndarray:
    """(68, 2) corners of 17 vertebrae on an S-curve filling an h x w image, in AASCE order."""
    rng = np.random.default_rng(seed)
    ys = np.linspace(0.06, 0.92, 17) * h
    pitch = ys[1] - ys[0]
    phase = rng.uniform(0, 1)
    xs = w / 2 + amp * w * np.sin(2 * np.pi * (ys / h + phase))
    slope = np.gradient(xs, ys)
    pts = []
    for x, y, s in zip(xs, ys, slope):
        half_w, half_h = 0.11 * w, 0.32 * pitch
        ang = -np.arctan(s) * 0.8          # vertebrae tilt with the curve
        c, si = np.cos(ang), np.sin(ang)
        for dx, dy in ((-half_w, -half_h), (half_w, -half_h), (-half_w, half_h), (half_w, half_h)):
            pts.append([x + c * dx - si * dy, y + si * dx + c * dy])
    return np.asarray(pts)


def _fake_output(t: dict, out_hw) -> torch.Tensor:
    """The network output that encodes exactly the targets ``t``."""
    b = t["hm"].shape[0]
    out = torch.zeros(b, OUT_CHANNELS, *out_hw)
    out[:, :1] = torch.logit(t["hm"].clamp(1e-6, 1 - 1e-6))
    flat = out.view(b, OUT_CHANNELS, -1)
    for i in range(b):
        flat[i, 1:3, t["ind"][i]] = t["reg"][i].T
        flat[i, 3:, t["ind"][i]] = t["wh"][i].T
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two threads mostly wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    from spinebench.models import create_model

    torch.manual_seed(0)
    return create_model("cobb_vertebra_resnet34", pretrained="none", input_size=SMALL)


@pytest.fixture(scope="module", params=["cobb_vertebra_resnet34", "cobb_regress_resnet10t"])
def any_model(request):
    """Each registered ``cobb`` model: what the task, the loop and ``measure`` do must work for both."""
    from spinebench.models import create_model

    torch.manual_seed(0)
    return create_model(request.param, pretrained="none", input_size=SMALL)


def test_registered_with_cobb_task():
    from spinebench.models import list_models, model_info

    assert "cobb_vertebra_resnet34" in list_models(task="cobb")
    info = model_info("cobb_vertebra_resnet34")
    assert info["task"] == "cobb" and info["input_size"] == (1024, 512) and 15 < info["params_m"] < 40


def test_forward_shapes_finite_and_gradient_reaches_heads(model):
    model.train()
    x = torch.rand(2, 1, *SMALL)
    out = model(x)
    assert out.shape == (2, OUT_CHANNELS, SMALL[0] // 4, SMALL[1] // 4)
    assert torch.isfinite(out).all()
    lm = torch.tensor(np.stack([synthetic_spine(*SMALL, seed=s) for s in (1, 2)]), dtype=torch.float32)
    loss, parts = landmark_loss(out, encode_targets(lm, out.shape[-2:]))
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"hm", "reg", "wh"}
    for head in model.heads:
        assert head[-1].weight.grad is not None and head[-1].weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0  # one input channel, trained end to end
    assert model.default_cfg["task"] == "cobb" and model.default_cfg["input_size"] == SMALL
    assert model.pretrained_loaded is False


def test_input_size_must_fit_the_stride():
    from spinebench.models import create_model

    with pytest.raises(ValueError, match="multiples of 32"):
        create_model("cobb_vertebra_resnet34", input_size=(250, 128))


def test_encode_decode_round_trip_reproduces_landmarks_and_angles():
    h, w = 1024, 512
    lm = np.stack([synthetic_spine(h, w, amp=a, seed=s) for s, a in ((0, 0.05), (3, 0.15), (7, 0.2))])
    t = encode_targets(torch.tensor(lm, dtype=torch.float32), (h // 4, w // 4))
    assert t["hm"].shape == (3, 1, h // 4, w // 4) and float(t["hm"].max()) == 1.0
    assert int(t["hm"].eq(1).sum()) == 3 * 17 and bool(t["mask"].all())
    pts, scores = decode_landmarks(_fake_output(t, (h // 4, w // 4)))
    assert pts.shape == (3, 68, 2) and scores.shape == (3, 17)
    np.testing.assert_allclose(pts.numpy(), lm, atol=1e-3)
    for p, ref in zip(pts.numpy(), lm):
        np.testing.assert_allclose(cobb_angles(p, h).angles, cobb_angles(ref, h).angles, atol=1e-3)


def test_canonical_landmarks_repairs_swapped_corners_and_order():
    lm = synthetic_spine(1024, 512)
    bad = lm.reshape(17, 4, 2).copy()
    bad[3] = bad[3][[1, 0, 3, 2]]          # left/right swapped
    bad[[5, 6]] = bad[[6, 5]]              # two vertebrae out of order
    fixed = canonical_landmarks(torch.tensor(bad.reshape(68, 2)))
    np.testing.assert_allclose(fixed.numpy(), lm, atol=1e-5)


def test_augmentation_moves_landmarks_with_the_pixels_and_keeps_corner_order():
    from spinebench.tasks.cobb import augment_batch

    h, w = SMALL
    lm = torch.tensor(synthetic_spine(h, w), dtype=torch.float32)[None].repeat(4, 1, 1)
    img = torch.zeros(4, 1, h, w)
    px, py = int(lm[0, 30, 0]), int(lm[0, 30, 1])   # one bright pixel on landmark 30
    img[:, :, py - 1:py + 2, px - 1:px + 2] = 1.0
    moved_lm = lm.clone()
    moved_lm[:, :, 0] = px + 0.5 + (lm[:, :, 0] - lm[0, 30, 0])  # landmark 30 at that blob's centre
    moved_lm[:, :, 1] = py + 0.5 + (lm[:, :, 1] - lm[0, 30, 1])
    g = torch.Generator().manual_seed(1)
    x, out = augment_batch(img, moved_lm, g, rot_deg=12, flip_p=0.5, intensity=0)
    for i in range(4):
        idx = int(x[i, 0].argmax())
        yx = np.array([idx // w + 0.5, idx % w + 0.5])
        # landmark 30 (or its mirror partner 31 when flipped) sits where the blob went
        d = min(np.abs(yx - out[i, k].numpy()[::-1]).max() for k in (30, 31))
        assert d <= 1.5
        q = out[i].reshape(17, 4, 2)
        assert bool((q[:, 0, 0] < q[:, 1, 0]).all() and (q[:, 2, 0] < q[:, 3, 0]).all())


def test_curve_weighted_sampling_draws_larger_curves_more_often():
    from spinebench.tasks.cobb import StackedData, curve_weights

    n = 40
    data = {"images": torch.zeros(n, 1, 16, 8), "landmarks": torch.arange(n, dtype=torch.float32)[:, None, None]
            .expand(n, 68, 2).clone(), "cobb": np.array([[50.0, 0, 0] if i % 2 else [0.0, 0, 0] for i in range(n)])}
    still = {"rot_deg": 0.0, "scale": (1.0, 1.0), "shift": 0.0, "flip_p": 0.0, "intensity": 0.0}

    def drawn(sd, epochs):
        return torch.cat([b["landmarks"][:, 0, 1].round().long() for e in range(epochs) for b in sd.batches(e)])

    once = drawn(StackedData(data, 8, 0, "cpu", 0, 1, still), 1)
    assert sorted(once.tolist()) == list(range(n))   # without it: every film once an epoch
    idx = drawn(StackedData(data, 8, 0, "cpu", 0, 1, still, curve_weights(data["cobb"], 10.0)), 50)
    # odd films (largest angle 50) drawn with weight 60 against 10
    assert abs(float((idx % 2 == 1).float().mean()) - 60 / 70) < 0.04
    with pytest.raises(ValueError, match="curve_floor_deg"):
        curve_weights(data["cobb"], 0)


def _write_spines(tmp_path, n: int, size=SMALL) -> list[dict]:
    from PIL import Image, ImageDraw

    from spinebench.data.records import make_record

    recs = []
    for i in range(n):
        lm = synthetic_spine(*size, seed=i)
        im = Image.new("L", (size[1], size[0]), 20)
        d = ImageDraw.Draw(im)
        for q in lm.reshape(17, 4, 2):
            d.polygon([tuple(q[0]), tuple(q[1]), tuple(q[3]), tuple(q[2])], fill=200)
        path = tmp_path / f"spine{i}.png"
        im.save(path)
        a = cobb_angles(lm, size[0])
        recs.append(make_record(image_id=f"t/{i}", patient_id=f"t/{i // 2}", source="test", path=str(path),
                                split="train", cobb_pt=a.pt, cobb_mt=a.mt, cobb_tl=a.tl, width=size[1],
                                height=size[0], landmarks=lm.tolist()))
    return recs


def test_one_epoch_trains_checkpoints_resumes_and_scores(tmp_path, any_model):
    model = any_model
    from spinebench.data.dataset import SpineDataset
    from spinebench.engine.train import TrainSettings, train_model
    from spinebench.evaluation.cobb import score_cobb
    from spinebench.tasks.cobb import predict_landmarks

    ds = SpineDataset(_write_spines(tmp_path, 4), max_side=256)
    ckpt, log = tmp_path / "ck.pt", tmp_path / "log.csv"
    s1 = TrainSettings(epochs=1, batch_size=2, lr=1e-3, patience=None)
    fit = train_model(model, ds, ds.subset([0, 1]), settings=s1, device="cpu", seed=0, checkpoint_path=ckpt,
                      log_path=log, progress=False)
    assert fit["epochs_run"] == 1 and fit["best_epoch"] == 1 and ckpt.is_file() and log.is_file()
    assert math.isfinite(fit["history"][0]["train_loss"]) and "val_smape" in fit["history"][0]
    assert fit["monitor"] == "val_smape" and fit["best_score"] == fit["history"][0]["val_smape"]
    fit2 = train_model(model, ds, ds.subset([0, 1]), settings=TrainSettings(epochs=2, batch_size=2, lr=1e-3),
                       device="cpu", seed=0, checkpoint_path=ckpt, resume=True, progress=False)
    assert [r["epoch"] for r in fit2["history"]] == [1, 2]
    pred = predict_landmarks(model, ds, "cpu")
    assert pred.shape == (4, 68, 2) and np.isfinite(pred).all()
    # through the task, as run-all and evaluate call it (with the evaluation transform): the dataset's pixels
    from spinebench.tasks.cobb import CobbTask

    task = CobbTask()
    (tmp_path / "other").mkdir()
    other = SpineDataset(_write_spines(tmp_path / "other", 2, size=(300, 140)), max_side=300)  # not the input size
    out = task.predict(model, other.with_transform(task.transform(model, None, train=False)), "cpu")
    np.testing.assert_allclose(out["landmarks"], predict_landmarks(model, other, "cpu"), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out["true_landmarks"], np.stack([other[i]["landmarks"].numpy() for i in range(2)]),
                               atol=1e-3)
    assert out["image_heights"] == [300.0, 300.0]
    res = score_cobb(pred, [r["landmarks"] for r in ds.records], [[r["cobb_pt"], r["cobb_mt"], r["cobb_tl"]]
                     for r in ds.records], [r["patient_id"] for r in ds.records], n_boot=20)
    assert res["n_images"] == 4 and res["n_patients"] == 2 and math.isfinite(res["smape"])


def test_score_cobb_perfect_and_imperfect_predictions():
    from spinebench.evaluation.cobb import score_cobb

    lms = np.stack([synthetic_spine(1024, 512, amp=a, seed=s) for s, a in enumerate((0.01, 0.08, 0.15, 0.25))])
    angles = np.stack([cobb_angles(lm, 1024).angles for lm in lms])
    pids = ["a", "a", "b", "c"]
    res = score_cobb(lms, lms, angles, pids, n_boot=50, image_heights=[1024] * 4, scales=[0.5] * 4)
    assert res["smape"] == 0 and res["mae_pt"] == 0 and res["landmark_mpe_px"] == 0 and res["grade_accuracy"] == 1
    assert res["smape_lo"] == 0 and res["smape_hi"] == 0
    assert np.trace(np.array(res["grade_confusion"])) == 4 and res["n_patients"] == 3
    noisy = lms + np.random.default_rng(0).normal(0, 3, lms.shape)
    res2 = score_cobb(noisy, lms, angles, pids, n_boot=50, image_heights=[1024] * 4, scales=[0.5] * 4)
    assert res2["smape"] > 0 and res2["smape_lo"] <= res2["smape"] <= res2["smape_hi"]
    assert res2["landmark_mpe_px_orig"] == pytest.approx(2 * res2["landmark_mpe_px"])
    # the real films' own SMAPE (a hybrid split mixes synthetic and real): the same as scoring them alone
    real = [False, False, True, True]
    res3 = score_cobb(noisy, lms, angles, pids, n_boot=50, image_heights=[1024] * 4, real=real)
    alone = score_cobb(noisy[2:], lms[2:], angles[2:], pids[2:], n_boot=50, image_heights=[1024] * 2)
    assert res3["smape_real"] == pytest.approx(alone["smape"]) and res3["n_real_images"] == 2
    assert res3["smape_real"] != pytest.approx(res3["smape"])
    assert res3["smape_real_lo"] <= res3["smape_real"] <= res3["smape_real_hi"]
    assert "smape_real" not in score_cobb(noisy, lms, angles, pids, n_boot=0, real=[False] * 4)


def test_score_cobb_averages_the_angles_of_the_looks_not_their_landmarks():
    from spinebench.cobb import cobb_angles_many
    from spinebench.evaluation.cobb import score_cobb

    lms = np.stack([synthetic_spine(1024, 512, amp=a, seed=s) for s, a in enumerate((0.05, 0.12, 0.2))])
    angles = cobb_angles_many(lms, [1024] * 3)
    rng = np.random.default_rng(1)
    one, two = (lms + rng.normal(0, 4, lms.shape) for _ in range(2))
    pids, kw = ["a", "b", "c"], dict(n_boot=20, image_heights=[1024] * 3)
    res = score_cobb(one, lms, angles, pids, looks=np.stack([one, two]), real=[False, True, True], **kw)
    mean = (cobb_angles_many(one, [1024] * 3) + cobb_angles_many(two, [1024] * 3)) / 2
    np.testing.assert_allclose(res["pred_angles"], mean, atol=1e-3)
    assert not np.allclose(mean, cobb_angles_many((one + two) / 2, [1024] * 3), atol=0.05)  # not the mean corners
    assert res["landmark_mpe_px"] == pytest.approx(score_cobb(one, lms, angles, pids, **kw)["landmark_mpe_px"])
    alone = score_cobb(one[1:], lms[1:], angles[1:], pids[1:], looks=np.stack([one, two])[:, 1:], n_boot=20,
                       image_heights=[1024] * 2)
    assert res["smape_real"] == pytest.approx(alone["smape"])  # the real films' looks go with them
    with pytest.raises(ValueError, match="looks"):
        score_cobb(one, lms, angles, pids, looks=np.stack([one[:2], two[:2]]), **kw)


def test_two_looks_take_a_film_and_its_mirror_image_alike(tmp_path, any_model):
    from spinebench.cobb import measured_angles
    from spinebench.data.dataset import SpineDataset
    from spinebench.tasks.cobb import (LOOKS, VAL_LOOKS, LandmarkInput, predict_looks, looks_of, stack_inputs,
                                       swap_sides)

    ds = SpineDataset(_write_spines(tmp_path, 3, size=(300, 140)), max_side=300)
    data = stack_inputs(ds, LandmarkInput.of(any_model))
    flipped = dict(data, images=data["images"].flip(-1))
    cpu = torch.device("cpu")
    # many looks where they were measured to pay (the corner regression), else the film alone; the film first
    many = type(any_model).__name__ == "CornerRegressionNet"
    assert looks_of(any_model) == (LOOKS if many else LOOKS[:1]) and LOOKS[0] == (1.0, 0.0, False)
    assert looks_of(any_model, validation=True) == (VAL_LOOKS if many else LOOKS[:1])
    assert predict_looks(any_model, data, cpu).shape == (len(looks_of(any_model)), 3, 68, 2)
    # the unzoomed looks (mirroring is exact; zooms and shifts resample, test below)
    looks, looks_f = (predict_looks(any_model, d, cpu, looks=VAL_LOOKS) for d in (data, flipped))

    def mirror(p):  # a look at the mirrored film, in the film's own frame
        p = torch.as_tensor(p).clone()
        p[..., 0] = 140 - p[..., 0]
        return swap_sides(p).numpy()

    # each look at the mirrored film is the film's other look, mirrored: corner for corner, within a pixel's rounding
    np.testing.assert_allclose(looks_f[0], mirror(looks[1]), atol=0.6)
    np.testing.assert_allclose(looks_f[1], mirror(looks[0]), atol=0.6)
    np.testing.assert_allclose(measured_angles(looks_f, [300] * 3), measured_angles(looks, [300] * 3), atol=0.5)


def test_every_look_maps_its_corners_back_to_the_film():
    from spinebench.tasks.cobb import LOOKS, predict_looks

    class BrightestPixel(torch.nn.Module):
        """A 'landmark model' that puts all 68 corners on the brightest pixel: where it points is known."""

        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))

        def predict_landmarks(self, x):
            b, _, h, w = x.shape
            idx = x.float().flatten(1).argmax(1)
            xy = torch.stack([(idx % w).float() + 0.5, torch.div(idx, w, rounding_mode="floor").float() + 0.5], -1)
            return xy[:, None, :].expand(b, 68, 2)

    h, w = 192, 96
    spots = [(30.5, 40.5), (70.5, 150.5), (20.5, 100.5)]  # (x, y) pixel centres, off the film's centre
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    images = torch.stack([torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8)[None] for x, y in spots])
    data = {"images": images, "to_input": torch.tensor([[0.5, 0.25]] * 3)}  # input px per film px
    looks = predict_looks(BrightestPixel(), data, torch.device("cpu"), looks=LOOKS)
    want = np.array(spots) / np.array([0.5, 0.25])
    for i, look in enumerate(LOOKS):  # every zoom, shift and mirroring undone: the spot where it is on the film
        np.testing.assert_allclose(looks[i, :, 0], want, atol=1.2 / 0.25, err_msg=str(look))


def test_measure_refuses_missing_or_empty_weights(tmp_path):
    from spinebench.measure import measure

    with pytest.raises(SpinebenchError, match="does not exist"):
        measure([str(tmp_path / "x.png")], weights_dir=tmp_path / "nope")
    with pytest.raises(SpinebenchError, match="no trained Cobb-angle model"):
        measure([str(tmp_path / "x.png")], weights_dir=tmp_path)


def test_measure_overlay_and_cli_with_saved_weights(tmp_path, any_model, capsys):
    model = any_model
    from spinebench.cli import main
    from spinebench.engine.weights import save_weights
    from spinebench.measure import measure, render_overlay

    save_weights(model, tmp_path / "w", meta={"task": "cobb", "max_side": 256, "pretrained": False,
                                              "model_kwargs": {"input_size": list(SMALL)}})
    rec = _write_spines(tmp_path, 1, size=(300, 140))[0]
    rows = measure([rec["path"]], weights_dir=tmp_path / "w")
    r = rows[0]
    assert {"file", "pt", "mt", "tl", "largest", "grade", "landmarks", "ms"} <= set(r)
    assert len(r["landmarks"]) == 68 and r["grade"] in ("none", "mild", "moderate", "severe")
    assert r["largest"] == max(r["pt"], r["mt"], r["tl"]) and r["width"] == 140 and r["height"] == 300
    img = np.zeros((300, 140), dtype=np.float32)
    over = render_overlay(img, r["landmarks"], cobb_angles(r["landmarks"], 300))
    assert over.shape == (300, 140, 3) and over.dtype == np.uint8 and over.max() > 0
    # the overlay of a row writes the row's angles (two looks averaged), not those of its one look's landmarks
    from spinebench.cobb import VERTEBRA_NAMES, CobbResult

    ends = {k: tuple(VERTEBRA_NAMES.index(v) for v in e) for k, e in r["end_vertebrae"].items()}
    as_row = CobbResult(angles=np.array([r["pt"], r["mt"], r["tl"]]), end_vertebrae=ends, s_shaped=r["s_shaped"])
    np.testing.assert_array_equal(render_overlay(img, r["landmarks"], r), render_overlay(img, r["landmarks"], as_row))
    assert main(["measure", rec["path"], "--weights", str(tmp_path / "w"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["file"] == rec["path"] and len(out[0]["landmarks"]) == 68


def test_measure_cli_help_and_one_line_error(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "spinebench", "measure", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "IMAGE" in ok.stdout and "--weights" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "spinebench", "measure", "x.png", "--weights", str(tmp_path / "no")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.aasce
def test_targets_round_trip_on_real_aasce_landmarks():
    from spinebench.data.sources import load_records
    from spinebench.paths import default_aasce_path

    root = default_aasce_path()
    if not root.exists():
        pytest.skip(f"AASCE data not at {root}")
    recs = load_records([f"aasce={root}"])[:40]
    for r in recs:
        lm = np.asarray(r["landmarks"], dtype=np.float64)
        scale = np.array([512 / r["width"], 1024 / r["height"]])   # the model's input geometry
        canon = canonical_landmarks(torch.tensor(lm * scale, dtype=torch.float32)).double().numpy() / scale
        t = encode_targets(torch.tensor((canon * scale)[None], dtype=torch.float32), (256, 128))
        pts = decode_landmarks(_fake_output(t, (256, 128)))[0][0].double().numpy() / scale
        np.testing.assert_allclose(pts, canon, atol=0.05)
        if np.allclose(canon, lm):  # well-ordered labels: the angles are the reference's
            ang = cobb_angles(pts, r["height"]).angles
            np.testing.assert_allclose(ang, [r["cobb_pt"], r["cobb_mt"], r["cobb_tl"]], atol=0.05)


def test_train_cli_refuses_data_without_landmarks_on_stderr(capsys, tmp_path):
    from spinebench.cli import main

    assert main(["-q", "train", "cobb_vertebra_resnet34", "--data", "folder=tests/fixtures/folder_mini", "--epochs",
                 "1", "--weights", str(tmp_path / "w"), "--out", str(tmp_path / "runs"), "--results",
                 str(tmp_path / "res")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().count("\n") == 0
    assert "needs vertebra landmarks" in captured.err
    assert not (tmp_path / "w").exists() and not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------- the direct-regression Cobb model
@pytest.fixture()
def regress():
    from spinebench.models import create_model

    torch.manual_seed(0)
    return create_model("cobb_regress_resnet10t", pretrained="none", input_size=SMALL)


def _spines(n: int, size=SMALL) -> torch.Tensor:
    return torch.tensor(np.stack([synthetic_spine(*size, seed=s) for s in range(n)]), dtype=torch.float32)


def test_regression_starts_at_the_training_mean_shape(regress):
    from spinebench.models import model_info

    info = model_info("cobb_regress_resnet10t")
    assert info["task"] == "cobb" and info["input_size"] == (192, 96) and 5 < info["params_m"] < 20
    lm = _spines(4)
    bad = torch.full((1, 68, 2), math.nan)                  # a film without landmarks does not move the prior
    regress.fit_prior(torch.cat([lm, bad]))
    regress.eval()
    out = regress(torch.rand(2, 1, *SMALL))
    pts, scores = regress.decode(out)
    assert pts.shape == (2, 68, 2) and scores.shape == (2, 17)
    # the head starts at zero: every film gets the mean (canonically ordered) spine, in input pixels
    np.testing.assert_allclose(pts[0].detach(), canonical_landmarks(lm).mean(0), atol=1e-3)
    np.testing.assert_allclose(pts[1].detach(), pts[0].detach(), atol=1e-5)
    # the prior is a buffer: saved and loaded with the weights
    assert "prior" in regress.state_dict()


def test_regression_loss_is_zero_at_the_target_and_sees_endplate_tilt(regress):
    from spinebench.models.cobb_regress import endplate_angles

    lm = _spines(2)
    loss, parts = regress.landmark_loss(lm.clone(), lm)
    assert float(loss) == 0.0 and set(parts) == {"corners", "angles"}
    # the same corners listed in another order (a mirrored film's): the target is put in canonical order first
    shuffled = lm.reshape(2, 17, 4, 2)[:, :, [1, 0, 3, 2]].reshape(2, 68, 2)
    assert float(regress.landmark_loss(lm.clone(), shuffled)[0]) < 1e-6
    # tilting one endplate by 4 degrees about its middle: tiny corner moves, a clear angle term
    tilted = lm.clone().reshape(2, 17, 4, 2)
    mid = tilted[:, 8, :2].mean(1, keepdim=True)
    c, s_ = math.cos(math.radians(4)), math.sin(math.radians(4))
    rel = tilted[:, 8, :2] - mid
    tilted[:, 8, :2] = mid + torch.stack([c * rel[..., 0] - s_ * rel[..., 1], s_ * rel[..., 0] + c * rel[..., 1]], -1)
    tilted = tilted.reshape(2, 68, 2)
    d = (endplate_angles(tilted) - endplate_angles(lm)).abs()
    assert math.isclose(float(d[:, 8, 0].min()), math.radians(4), rel_tol=1e-3) and float(d[:, 7].max()) < 1e-6
    _, parts = regress.landmark_loss(tilted, lm)
    assert parts["angles"] > 5 * parts["corners"] > 0


def test_regression_learns_to_place_a_shifted_spine(regress):
    """A few steps on two films whose spines differ only in where they stand: the prediction follows each one."""
    size = SMALL
    base = synthetic_spine(*size, amp=0.0)
    lms, imgs = [], []
    for dx in (-0.12, 0.12):
        lm = base + np.array([dx * size[1], 0.0])
        img = np.zeros(size, dtype=np.float32)
        for q in lm.reshape(17, 4, 2):
            x0, x1 = int(q[:, 0].min()), int(q[:, 0].max())
            y0, y1 = int(q[:, 1].min()), int(q[:, 1].max())
            img[y0:y1, x0:x1] = 1.0
        lms.append(lm)
        imgs.append(img)
    x = torch.tensor(np.stack(imgs))[:, None]
    lm = torch.tensor(np.stack(lms), dtype=torch.float32)
    regress.fit_prior(lm)
    opt = torch.optim.AdamW(regress.parameters(), lr=2e-3)
    regress.train()
    for _ in range(40):
        loss, _ = regress.landmark_loss(regress(x), lm)
        opt.zero_grad()
        loss.backward()
        opt.step()
    regress.eval()
    with torch.no_grad():
        pts = regress.predict_landmarks(x)
    cx = pts[..., 0].mean(1)
    # the prior stands in the middle; the trained model puts each spine on its own side, within 3 pixels
    np.testing.assert_allclose(cx, lm[..., 0].mean(1), atol=3.0)


def test_measure_uses_the_most_recently_trained_cobb_model(tmp_path):
    from spinebench.engine.weights import save_weights
    from spinebench.measure import cobb_models, load_cobb_model
    from spinebench.models import create_model

    for name, run_id in (("cobb_regress_resnet10t", "20261204-120000-quick"),
                         ("cobb_vertebra_resnet34", "20261101-090000-paper")):
        save_weights(create_model(name, pretrained="none", input_size=SMALL), tmp_path, meta={
            "task": "cobb", "max_side": 256, "pretrained": False, "run_id": run_id,
            "model_kwargs": {"input_size": list(SMALL)}})
    assert cobb_models(tmp_path) == ["cobb_regress_resnet10t", "cobb_vertebra_resnet34"]
    model, rec = load_cobb_model(tmp_path)
    assert rec.model == "cobb_regress_resnet10t" and model.default_cfg["name"] == "cobb_regress_resnet10t"


def test_every_cobb_model_is_a_landmark_model_and_the_heatmaps_have_no_prior(any_model):
    from spinebench.models.cobb_net import LandmarkModel

    assert isinstance(any_model, LandmarkModel)
    before = {k: v.clone() for k, v in any_model.state_dict().items()}
    any_model.fit_prior(_spines(3))
    changed = {k for k, v in any_model.state_dict().items() if not torch.equal(v, before[k])}
    # only the regression has a prior; nothing else moves before training
    assert changed == ({"prior"} if any_model.default_cfg["name"] == "cobb_regress_resnet10t" else set())


def test_training_leaves_out_films_with_a_vertebra_out_of_place(tmp_path):
    """A film whose "L5" is annotated above T1 (as in 18 AASCE films) does not train the landmark model; it is
    still scored, and the films in order all train."""
    from spinebench.data.dataset import SpineDataset
    from spinebench.tasks.cobb import CobbTask

    recs = _write_spines(tmp_path, 4, size=(300, 140))
    lm = np.asarray(recs[1]["landmarks"])
    lm[64:] -= [0, lm[67, 1] - lm[:4, 1].min() + 5]  # L5 moved above T1
    recs[1]["landmarks"] = lm.tolist()
    ds = SpineDataset(recs, max_side=300)
    task = CobbTask()
    assert [r["image_id"] for r in task.trainable(ds, "m").records] == ["t/0", "t/2", "t/3"]
    assert len(task.scorable(ds)) == 4


def test_calibration_undoes_a_regression_that_reads_every_curve_half_as_curved(tmp_path):
    """A regression whose offsets from the mean spine are half the true ones (as a briefly trained one's are pulled
    towards the mean) measures flatter curves; calibrated on validation films its gain becomes 2, its angles the
    true ones, and the gain is saved with the weights (weights from before the gain load at 1)."""
    from spinebench.data.dataset import SpineDataset
    from spinebench.engine.train import TrainSettings
    from spinebench.models import create_model
    from spinebench.models.cobb_regress import _OFFSET_SCALE
    from spinebench.tasks.cobb import GAINS, CobbTask, LandmarkInput, stack_inputs

    ds = SpineDataset(_write_spines(tmp_path, 2, size=SMALL), max_side=SMALL[0])
    ds = ds.subset([0, 0])  # one spine, twice: a model whose output ignores its input can be exactly right
    torch.manual_seed(0)
    net = create_model("cobb_regress_resnet10t", pretrained="none", input_size=SMALL)
    data = stack_inputs(ds, LandmarkInput.of(net))
    true = canonical_landmarks(data["landmarks"][:1]) / net.size_xy
    net.fit_prior(_spines(6))                                   # a mean spine that is not this one
    with torch.no_grad():                                       # offsets half the true ones, whatever the film
        net.head[-1].bias.copy_(((true[0] - net.prior) / (2 * _OFFSET_SCALE)).flatten())
    task = CobbTask()
    settings = TrainSettings(batch_size=2)
    before = task.predict(net, ds, "cpu")
    res = task.calibrate(net, ds, settings, "cpu")
    assert res["offset_gain"] == 2.0 and 2.0 in GAINS and float(net.offset_gain) == 2.0
    assert res["val_smape"] < 1.0 < 10 * 1.0 < res["val_smape_gain1"]
    after = task.predict(net, ds, "cpu")
    np.testing.assert_allclose(after["landmarks"], after["true_landmarks"], atol=0.05)
    # from what validation kept of the model at gain 1 (as run-all calls it): the same choice, one pass fewer
    net.offset_gain.fill_(1.0)
    _, kept = task.validate(net, task.val_data(net, ds, settings, "cpu"), torch.device("cpu"), settings)
    again = task.calibrate(net, ds, settings, "cpu", kept)
    assert again["offset_gain"] == 2.0 and math.isclose(again["val_smape_gain1"], res["val_smape_gain1"], rel_tol=1e-6)
    assert task.score_at(after, [], 10, 0)["smape"] < 1.0 < task.score_at(before, [], 10, 0)["smape"]
    # saved with the weights; a state saved before the gain existed loads at gain 1
    state = net.state_dict()
    fresh = create_model("cobb_regress_resnet10t", pretrained="none", input_size=SMALL)
    fresh.load_state_dict(state)
    assert float(fresh.offset_gain) == 2.0
    fresh.load_state_dict({k: v for k, v in state.items() if k != "offset_gain"})
    assert float(fresh.offset_gain) == 1.0
    # a model without the gain (the heatmap network) is left as it is
    assert task.calibrate(create_model("cobb_vertebra_resnet34", pretrained="none", input_size=SMALL), ds,
                          settings, "cpu") == {}
