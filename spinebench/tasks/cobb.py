"""The Cobb-angle landmark models (task ``cobb``): 68 vertebra corners per film, selected by validation SMAPE.

Why its data path differs from the image-level tasks: the targets are 68 landmarks, not labels, and every
geometric augmentation must move them with the pixels. Each split is resized once to the model's input (H, W) and
kept as one tensor; rotation, scale, shift, mirroring and exposure changes are then drawn per sample and applied
to the whole batch on the training device (:func:`augment_batch`), so a GPU never waits for a data loader and a
CPU does not resample 1-3 MP radiographs every epoch. The loop, checkpoints and selection are the shared ones
(:func:`spinebench.engine.train.train_model`); the model kept is the one with the lowest validation SMAPE, the AASCE
challenge's own metric, and scoring is :func:`spinebench.evaluation.cobb.score_cobb`. Every measurement of the corner
regression (validation, scoring, ``measure``, the demo) takes several looks at a film, zoomed, shifted and mirrored,
and averages their angles (:data:`LOOKS`; validation during training two, :data:`VAL_LOOKS`; :func:`looks_of`).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from spinebench.cobb import N_LANDMARKS, measured_angles, smape
from spinebench.data.render import in_sequence, vertebrae_from_landmarks
from spinebench.data.sources import data_kind
from spinebench.data.transforms import grid_theta, normalize_input, resize
from spinebench.engine.device import autocast, channels_last
from spinebench.errors import SpinebenchError
from spinebench.evaluation.results import COBB_PREDICTION_COLUMNS
from spinebench.tasks.base import Task, TrainData

log = logging.getLogger(__name__)


def model_input_size(model) -> tuple[int, int]:
    return tuple(int(v) for v in model.default_cfg["input_size"])


class LandmarkInput:
    """A landmark model's input from a film: the whole film resized to its (H, W), aspect not kept, then the
    model's ``input_norm`` (``spinebench.data.transforms.normalize_input``). The one path of every film into a
    ``cobb`` model: training, validation and ``predict`` stack it (:func:`stack_inputs`), ``measure`` and the demo
    take it as the task's item transform. Normalised before the train-time augmentation, not inside the network:
    then the exposure and noise changes of :func:`augment_batch` vary the normalised film a real one must match.
    (Inside the network, after them: validation SMAPE 22.0% against 19.8%, 481 real AASCE films 28.3% against
    27.0%; three seeds each, 60 s, 2-core CPU.)"""

    def __init__(self, size: tuple[int, int], input_norm: str = "none"):
        self.size, self.input_norm = (int(size[0]), int(size[1])), input_norm

    @classmethod
    def of(cls, model) -> "LandmarkInput":
        return cls(model_input_size(model), getattr(model, "input_norm", "none"))

    def image(self, img: torch.Tensor) -> torch.Tensor:
        """(1, h, w) film in the pixel contract -> (1, H, W) model input."""
        return normalize_input(resize(img.float(), self.size)[None], self.input_norm)[0]

    def __call__(self, item: dict, rng=None) -> dict:
        item = dict(item)
        item["image"] = self.image(item["image"])
        return item


def stack_inputs(ds, tf: LandmarkInput) -> dict:
    """Every item of ``ds`` made a model input by ``tf`` (resized, aspect not kept, to ``tf.size`` = (H, W)), as
    tensors. Any transform ``ds`` carries is dropped first: ``tf`` is the one path into the model, and the runner
    and ``evaluate`` hand every task its evaluation transform (which, applied too, would normalise a film twice).

    Returns {"images" (N, 1, H, W) float16, "landmarks" (N, 68, 2) float32 in input pixels (NaN if unknown),
    "to_input" (N, 2): input pixels per dataset-image pixel in x and y, "image_hw" (N, 2) the dataset images'
    (H, W), "patient_ids", "image_ids", "sources", "cobb" (N, 3), "scale" (N,) dataset pixels per original pixel}.
    """
    h, w = tf.size
    ds = ds.with_transform(None)
    n = len(ds)
    images = torch.empty((n, 1, h, w), dtype=torch.float16)
    lms = torch.full((n, N_LANDMARKS, 2), math.nan)
    to_input = torch.empty((n, 2))
    image_hw = torch.empty((n, 2))
    pids, iids, sources, cobb, scale = [], [], [], [], []
    for i in range(n):
        item = ds[i]
        img = item["image"]
        ih, iw = img.shape[-2:]
        images[i] = tf.image(img).to(torch.float16)
        to_input[i] = torch.tensor([w / iw, h / ih])
        image_hw[i] = torch.tensor([ih, iw], dtype=torch.float32)
        lms[i] = item["landmarks"].float() * to_input[i]
        pids.append(item["patient_id"])
        iids.append(item["image_id"])
        sources.append(item["source"])
        cobb.append(item["cobb"].numpy())
        scale.append(float(item["scale"]))
    return {"images": images, "landmarks": lms, "to_input": to_input, "image_hw": image_hw,
            "patient_ids": pids, "image_ids": iids, "sources": sources,
            "cobb": np.asarray(cobb, dtype=np.float64).reshape(-1, 3), "scale": np.asarray(scale, dtype=np.float64)}


def augment_batch(images: torch.Tensor, landmarks: torch.Tensor, gen: torch.Generator, *, rot_deg: float = 10.0,
                  scale: tuple[float, float] = (0.8, 1.15), shift: float = 0.06, flip_p: float = 0.5,
                  intensity: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine + mirror + exposure per sample; the landmarks follow the pixels.

    The affine turns about the image centre, scales and shifts in pixel space (so a rotation stays a rotation
    whatever the input's aspect); mirroring swaps each vertebra's left and right corners so the AASCE order holds.
    The random numbers come from ``gen`` (CPU), so a batch is the same on every device.
    """
    b, _, h, w = images.shape
    dev = images.device
    rnd = torch.rand((b, 8), generator=gen)
    ang = torch.deg2rad((rnd[:, 0] * 2 - 1) * rot_deg)
    s = scale[0] + rnd[:, 1] * (scale[1] - scale[0])
    tx, ty = (rnd[:, 2] * 2 - 1) * shift * w, (rnd[:, 3] * 2 - 1) * shift * h
    flip = rnd[:, 4] < flip_p
    cx, cy = w / 2, h / 2
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    # forward map of points, p' = A p + t, about the centre; then mirror x
    a = torch.zeros((b, 3, 3))
    a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = cos, -sin, sin, cos
    a[:, 0, 2] = cx + tx - (cos * cx - sin * cy)
    a[:, 1, 2] = cy + ty - (sin * cx + cos * cy)
    a[:, 2, 2] = 1
    m = torch.eye(3).repeat(b, 1, 1)
    m[flip, 0, 0], m[flip, 0, 2] = -1.0, float(w)
    fwd = m @ a
    out = warp(images, fwd)
    pts = move_points(landmarks, fwd)
    if flip.any():
        pts = torch.where(flip.to(dev)[:, None, None], swap_sides(pts), pts)
    if intensity > 0:
        gamma = torch.exp((rnd[:, 5] * 2 - 1) * 0.35 * intensity).to(dev, out.dtype)
        contrast = (1 + (rnd[:, 6] * 2 - 1) * 0.2 * intensity).to(dev, out.dtype)
        bright = ((rnd[:, 7] * 2 - 1) * 0.08 * intensity).to(dev, out.dtype)
        out = out.clamp(1e-4, 1) ** gamma[:, None, None, None]
        out = (out - 0.5) * contrast[:, None, None, None] + 0.5 + bright[:, None, None, None]
        sigma = (torch.rand((b,), generator=gen) * 0.03 * intensity).to(dev, out.dtype)
        # the noise field is drawn on the device (a CPU draw of B x H x W normals would stall a GPU step)
        dev_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        noise = torch.randn(out.shape, generator=dev_gen, device=dev, dtype=out.dtype)
        out = (out + sigma[:, None, None, None] * noise).clamp(0, 1)
    return out, pts


def warp(images: torch.Tensor, fwd: torch.Tensor) -> torch.Tensor:
    """``images`` (B, C, H, W) resampled so that what was at pixel p is at ``fwd @ p`` (``fwd``: (B, 3, 3) or
    (3, 3) maps in pixel coordinates, the points' own map: :func:`move_points`)."""
    b, _, h, w = images.shape
    theta = grid_theta(torch.linalg.inv(fwd.double()), h, w).to(images.device, images.dtype)  # output -> input
    grid = F.affine_grid(theta.expand(b, 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def move_points(pts: torch.Tensor, fwd: torch.Tensor) -> torch.Tensor:
    """Points (..., N, 2) in pixels moved by ``fwd`` ((..., 3, 3), as :func:`warp` moves the pixels)."""
    fwd = fwd.to(pts.device, pts.dtype)
    return (torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ fwd.transpose(-1, -2))[..., :2]


def swap_sides(pts: torch.Tensor) -> torch.Tensor:
    """(..., 68, 2) corners with each vertebra's left and right corners exchanged: the AASCE corner order (top-left,
    top-right, bottom-left, bottom-right) of a mirrored spine."""
    lead = pts.shape[:-2]
    return pts.reshape(*lead, -1, 2, 2, 2).flip(-2).reshape(*lead, N_LANDMARKS, 2)


#: The looks a Cobb model takes at a film when it measures, as (zoom, downward shift in film heights, mirrored): the
#: film as it is first (the look a picture draws), then every zoom 0.92 / 1 / 1.08 and shift -0.03 / 0 / 0.03 (inside
#: the training augmentation's range), each also mirrored. The angles of all 18 are averaged
#: (``spinebench.cobb.mean_of_looks`` says why the angles). Chosen on validation: the 60 s quick model's SMAPE
#: (three seeds, validation / 600 unseen synthetic films / 481 AASCE films) 20.3 / 21.3 / 26.6% with one look,
#: 18.2 / 19.2 / 23.7% with two (mirrored), 17.5 / 18.4 / 23.0% with six (shifted x mirrored), 17.2 / 18.0 / 22.8%
#: with these 18. A look costs the quick model ~5 ms on two cores at 192 x 96 (100 ms a film for 18).
LOOKS = tuple(sorted(((z, dy, m) for z in (0.92, 1.0, 1.08) for dy in (-0.03, 0.0, 0.03) for m in (False, True)),
                     key=lambda look: look != (1.0, 0.0, False)))
#: The looks validation takes every epoch, inside the model's clock budget (18 would cost a 60 s model ~3 s an
#: epoch): the film and its mirror image.
VAL_LOOKS = ((1.0, 0.0, False), (1.0, 0.0, True))


#: The gains of a corner regression's offsets that :meth:`CobbTask.calibrate` tries on the validation films.
GAINS = tuple(round(0.8 + 0.05 * i, 2) for i in range(25))   # 0.8 .. 2.0


def looks_of(model, validation: bool = False) -> tuple:
    """The looks ``model`` measures a film with: :data:`LOOKS` (:data:`VAL_LOOKS` in validation) where the model
    says it takes many (``LandmarkModel.many_looks``), else the film alone."""
    if not getattr(model, "many_looks", False):
        return LOOKS[:1]
    return VAL_LOOKS if validation else LOOKS


def _look_map(zoom: float, shift: float, h: int, w: int) -> torch.Tensor:
    """The (3, 3) pixel map of a look's zoom about the centre and downward shift by ``shift`` heights."""
    return torch.tensor([[zoom, 0, w / 2 * (1 - zoom)], [0, zoom, h / 2 * (1 - zoom) + shift * h], [0, 0, 1]],
                        dtype=torch.float64)


def _look(x: torch.Tensor, zoom: float, shift: float, mirrored: bool) -> torch.Tensor:
    """The inputs ``x`` (B, C, H, W) as one look (:data:`LOOKS`) sees them: zoomed and shifted by :func:`warp`,
    then mirrored by flipping the pixels (exact, as a resampled mirror is not: a heatmap's peak can move)."""
    if (zoom, shift) != (1.0, 0.0):
        x = warp(x, _look_map(zoom, shift, *x.shape[-2:]))
    return x.flip(-1) if mirrored else x


def _unlook(pts: torch.Tensor, zoom: float, shift: float, mirrored: bool, h: int, w: int) -> torch.Tensor:
    """Corners (..., 68, 2) predicted on a :func:`_look` of a film, in the film's own input pixels (a mirrored
    look's left and right corners exchanged back: :func:`swap_sides`)."""
    if mirrored:
        pts = swap_sides(torch.stack([w - pts[..., 0], pts[..., 1]], -1))
    return move_points(pts, torch.linalg.inv(_look_map(zoom, shift, h, w)))


@torch.inference_mode()
def predict_looks(model, data: dict, device, batch_size: int = 8, looks=None) -> np.ndarray:
    """(len(looks), N, 68, 2) landmarks in the dataset images' pixels from stacked inputs, one set per look
    (default: the model's own, :func:`looks_of`), each mapped back to the film's own pixels; all looks of a batch go
    through one forward pass."""
    looks = looks_of(model) if looks is None else looks
    model.eval()
    out = []
    for i in range(0, len(data["images"]), batch_size):
        x = data["images"][i:i + batch_size].to(device).float()
        h, w = x.shape[-2:]
        xs = torch.cat([_look(x, *look) for look in looks])
        if channels_last(device):
            xs = xs.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            pts = model.predict_landmarks(xs).float().cpu()
        out.append(torch.stack([_unlook(p, *look, h, w) for p, look in zip(pts.chunk(len(looks)), looks)]))
    pts = torch.cat(out, 1) if out else torch.zeros((len(looks), 0, N_LANDMARKS, 2))
    return (pts / data["to_input"][None, :, None, :]).numpy().astype(np.float64)


def smape_by_gain(model, data: dict, device, batch_size: int, looks, gains=GAINS, full=None) -> list[float]:
    """SMAPE of a corner regression on stacked films ``data`` (:func:`stack_inputs`) at each offset gain in
    ``gains``, its angles averaged over ``looks``; the model is left at gain 1. The corners at gain g are the
    prior's plus g times the offset, and every look maps corners back by an affine map, so two passes (gains 1
    and 0) give every gain's corners; ``full``, the looks' corners at gain 1 already predicted, saves the first."""
    device = torch.device(device)
    model.to(device)
    if full is None:
        model.offset_gain.fill_(1.0)
        full = predict_looks(model, data, device, batch_size, looks=looks)
    model.offset_gain.fill_(0.0)
    prior = predict_looks(model, data, device, batch_size, looks=looks)
    model.offset_gain.fill_(1.0)
    heights = data["image_hw"][:, 0].tolist()
    return [smape(measured_angles(prior + g * (full - prior), heights), data["cobb"]) for g in gains]


def predict_landmarks(model, ds, device, batch_size: int = 8) -> np.ndarray:
    """(N, 68, 2) predicted landmarks in the pixels of the dataset's own images (``ds[i]["image"]`` before any
    transform: the model's input is made by :class:`LandmarkInput`, whatever transform ``ds`` carries)."""
    device = torch.device(device)
    model.to(device)
    return predict_looks(model, stack_inputs(ds, LandmarkInput.of(model)), device, batch_size, looks=LOOKS[:1])[0]


def curve_weights(cobb: np.ndarray, floor_deg: float) -> torch.Tensor:
    """Per-film sampling weights from the reference angles ``cobb`` (N, 3): the largest angle plus ``floor_deg``.

    Why: a corner regression reads curves toward its training films' mean, and the embedded set's curves are milder
    (largest angle 18.7 degrees at the median) than those of the patients a scoliosis clinic films (36.9 on the
    AASCE films); drawn this way, the quick model's real-film SMAPE fell 23.4 -> 22.4% (``engine.profiles``)."""
    if not floor_deg > 0:
        raise ValueError(f"curve_floor_deg must be > 0 (got {floor_deg!r})")
    largest = np.nan_to_num(np.asarray(cobb, dtype=np.float64).reshape(-1, 3)).max(1)
    return torch.as_tensor(np.clip(largest, 0, None) + float(floor_deg))


class StackedData(TrainData):
    """The training films with landmarks as two tensors on the device; batches augmented there.

    ``weights`` (one per film of ``data``): where given, each epoch draws its films with replacement in proportion
    to them (as :class:`~spinebench.tasks.base.LoaderData` does with a task's ``sampler_weights``), instead of
    each film once.
    """

    def __init__(self, data: dict, batch_size: int, seed: int, device, rank: int, world: int, augment: dict,
                 weights: torch.Tensor | None = None):
        keep = torch.isfinite(data["landmarks"]).all(-1).all(-1)
        if not bool(keep.all()):
            log.warning("%d training images have no landmarks; left out", int((~keep).sum()))
        self.images, self.landmarks = data["images"][keep].to(device), data["landmarks"][keep].to(device)
        self.num_samples = len(self.images)
        if self.num_samples == 0:
            raise SpinebenchError("no training images with landmarks")
        self.batch_size, self.seed, self.device, self.rank, self.world = batch_size, seed, device, rank, world
        self.augment = dict(augment or {})
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)[keep]

    def steps_per_epoch(self, world: int = 1) -> int:
        n, bs = self.num_samples // world, self.batch_size
        return max(1, n // bs) if n >= bs else 1

    def batches(self, epoch: int) -> Iterator[dict]:
        n, bs = self.num_samples, self.batch_size
        gen = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        if self.weights is None:
            perm = torch.randperm(n, generator=gen)
        else:
            perm = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        if n < bs:
            perm = perm.repeat(math.ceil(bs / n))[:bs]
        perm = perm[self.rank::self.world]
        for step in range(self.steps_per_epoch(self.world)):
            idx = perm[step * bs:(step + 1) * bs].to(self.device)
            x, lm = augment_batch(self.images[idx].float(), self.landmarks[idx], gen, **self.augment)
            yield {"image": x, "landmarks": lm}


class CobbTask(Task):
    name = "cobb"
    monitor = "val_smape"
    # films stacked once, the gain's choice, 18 looks a test film (17.7 of the 22 s; cProfile, 2-core fp32 EPYC):
    # 20-25 s beyond the budget in four fresh clones there
    run_overhead_s = 25.0
    predictions_suffix = "-cobb"

    def settings(self, profile, name: str, n_train: int, image_size: int | None = None):
        return profile.cobb

    def model_kwargs(self, profile, settings) -> dict:
        size = settings.image_size  # the landmark model's input is an architecture argument (its heatmap grid)
        kw = {"input_size": tuple(size)} if size else {}
        if settings.extra.get("input_norm"):  # part of the model too: kept in the weights record's model_kwargs
            kw["input_norm"] = settings.extra["input_norm"]
        return kw

    def cannot_use(self, records):
        if any(r.get("landmarks") is not None for r in records):
            return ""
        return "needs vertebra landmarks; no image has them (aasce=PATH and synth do)"

    def trainable(self, ds, name: str):
        """The films with landmarks whose 17 bodies lie in order down the column
        (:func:`spinebench.data.render.in_sequence`). Why: 26 of the 481 AASCE training films carry a body out of
        place (an "L5" above T1, two bodies on each other): taught as annotated, the model learns an L5 at the
        neck. Validation and test keep them: their angles are the data set's own, computed from those landmarks."""
        keep = [i for i, r in enumerate(ds.records) if r.get("landmarks") is not None
                and in_sequence(vertebrae_from_landmarks(r["landmarks"])).all()]
        dropped = sum(r.get("landmarks") is not None for r in ds.records) - len(keep)
        if dropped:
            log.info("%s: %d training films left out: a vertebra out of place in their landmarks", name, dropped)
        return ds.subset(keep)

    def scorable(self, ds):
        """The images with vertebra landmarks (the others cannot train or score a landmark model)."""
        return ds.subset([i for i, r in enumerate(ds.records) if r.get("landmarks") is not None])

    def transform(self, model, image_size, train: bool):
        # the whole downscaled film made the model's input, as stack_inputs does (no augmentation here: the
        # training films are augmented per batch, augment_batch)
        return LandmarkInput.of(model)

    def input_size(self, model, settings) -> list[int]:
        return list(model_input_size(model))

    def train_data(self, model, ds, settings, device, seed, rank=0, world=1):
        data = stack_inputs(ds, LandmarkInput.of(model))
        model.fit_prior(data["landmarks"])  # the regression starts from the training films' mean spine
        floor = settings.extra.get("curve_floor_deg")
        return StackedData(data, settings.batch_size, seed, device, rank, world, settings.extra.get("augment"),
                           None if floor is None else curve_weights(data["cobb"], floor))

    def val_data(self, model, ds, settings, device):
        return stack_inputs(ds, LandmarkInput.of(model)) if ds is not None and len(ds) else None

    def loss(self, net, batch, data, device, settings):
        x = batch["image"]
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            out = net(x)  # through the (possibly DistributedDataParallel) wrapper: gradients are synchronised
        return getattr(net, "module", net).landmark_loss(out, batch["landmarks"])

    def validate(self, model, val, device, settings):
        """Validation SMAPE, angle MAE (the angles of the model's validation looks averaged: :func:`looks_of`) and
        landmark error (no bootstrap) for model selection."""
        looks = predict_looks(model, val, device, settings.batch_size, looks=looks_of(model, validation=True))
        pred = looks[0]
        true = (val["landmarks"] / val["to_input"][:, None, :]).numpy()
        pa = measured_angles(looks, val["image_hw"][:, 0].tolist())
        # the looks are kept for calibrate (the gain's choice then needs no second pass of the network)
        return ({"val_smape": smape(pa, val["cobb"]), "val_mae": float(np.abs(pa - val["cobb"]).mean()),
                 "val_mpe_px": float(np.linalg.norm(pred - true, axis=-1).mean())}, {"looks": looks, "data": val})

    def calibrate(self, model, ds, settings, device, val_pred=None) -> dict:
        """Set a corner regression's ``offset_gain`` to the gain in :data:`GAINS` with the lowest SMAPE on the
        validation films ``ds`` (its validation looks, :func:`looks_of`; ``val_pred``, what :meth:`validate` kept of
        the selected epoch, saves predicting them again): {"offset_gain", "val_smape_gain1", "val_smape"}, or {}
        for a model without the gain. Why: :mod:`spinebench.models.cobb_regress`."""
        if getattr(model, "offset_gain", None) is None or ds is None or not len(ds):
            return {}
        if val_pred is None:
            data, full = stack_inputs(ds, LandmarkInput.of(model)), None
        else:
            data, full = val_pred["data"], val_pred["looks"]
        scores = smape_by_gain(model, data, device, settings.batch_size, looks_of(model, validation=True), full=full)
        best = int(np.argmin(scores))
        model.offset_gain.fill_(GAINS[best])
        return {"offset_gain": GAINS[best], "val_smape_gain1": scores[GAINS.index(1.0)], "val_smape": scores[best]}

    def predict(self, model, ds, device, batch_size: int = 8, progress: bool = False) -> dict:
        """Landmarks in the dataset images' pixels (``landmarks``: the film as it is; ``looks``: every look, whose
        angles scoring averages), with what scoring needs of the references."""
        device = torch.device(device)
        model.to(device)
        # the stacked path resizes each film itself and maps the landmarks back to the dataset's pixels
        data = stack_inputs(ds, LandmarkInput.of(model))
        looks = predict_looks(model, data, device, batch_size)
        true = (data["landmarks"] / data["to_input"][:, None, :]).numpy()
        return {"landmarks": looks[0], "looks": looks, "true_landmarks": true, "cobb": data["cobb"],
                "patient_ids": data["patient_ids"], "image_ids": data["image_ids"],
                "image_heights": data["image_hw"][:, 0].tolist(),
                "scale": data["scale"], "real": [data_kind(src) != "synthetic" for src in data["sources"]]}

    def score_at(self, pred, thresholds, n_boot, seed):
        """SMAPE, angle errors, grades and the measured scoliosis call (no thresholds: the 10 degree rule)."""
        from spinebench.evaluation.cobb import score_cobb

        return score_cobb(pred["landmarks"], pred["true_landmarks"], pred["cobb"], pred["patient_ids"],
                          n_boot=n_boot, seed=seed, image_heights=pred["image_heights"], scales=pred["scale"],
                          real=pred.get("real"), looks=pred.get("looks"))

    def forward_one(self, model, x):
        return model.decode(model(x[None]))

    def write_predictions(self, path, pred, scored, ds) -> None:
        pa = np.asarray(scored["metrics"]["pred_angles"])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COBB_PREDICTION_COLUMNS)
            for iid, pid, t, p in zip(pred["image_ids"], pred["patient_ids"], pred["cobb"], pa):
                w.writerow([iid, pid, *np.asarray(t).tolist(), *p.tolist()])

    def infer(self, lm, view, scale, device, heatmaps):
        """The optional 7th model: vertebra corners -> the three Cobb angles (spinebench.measure, spinebench.cobb).

        Not counted in the agreement of the six: it measures, it does not give the two findings' probabilities.
        """
        from spinebench import SCOLIOSIS_COBB_DEG
        from spinebench.cobb import ANGLE_NAMES
        from spinebench.measure import measure_image, summarize

        pts, res = measure_image(lm.model, view, lm.record)
        out = dict(angles={k: round(float(a), 2) for k, a in zip(ANGLE_NAMES, res.angles)}, **summarize(res),
                   scoliosis_measured=bool(res.largest[1] >= SCOLIOSIS_COBB_DEG),
                   landmarks=np.round(pts / scale, 1).tolist())
        return out, {"landmarks": pts, "cobb": res}

    def draw(self, view, result, extra):
        from spinebench.predict.drawing import cobb_overlay

        return cobb_overlay(view, extra)
