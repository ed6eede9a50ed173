"""The paper's Faster R-CNN detectors: boxes of implants (``Lum``) and of the scoliotic curve (``sco``).

Image-level probabilities are the highest box score per class, so the detectors are selected and scored by the
same image-level protocol as the classifiers; on top, COCO mAP over the test images whose boxes are complete.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import numpy as np
import torch

from spinebench import FINDINGS
from spinebench.cobb import N_VERTEBRAE, scoliosis_box, vertebrae_box
from spinebench.data.records import boxes_cover_findings
from spinebench.data.transforms import DetectorTransform
from spinebench.engine.device import autocast
from spinebench.tasks.image_level import ImageLevelTask

log = logging.getLogger(__name__)


def hard_negative_boxes(item_landmarks: torch.Tensor, scoliosis: float, height: int, width: int, n: int = 1,
                        rng: np.random.Generator | None = None) -> torch.Tensor:
    """(0 to ``n``, 4): boxes over the column of a film without scoliosis, each a region that holds no finding.

    The first is the box of the film's largest curve, drawn as the ``sco`` box is (:func:`spinebench.cobb.
    scoliosis_box`, end vertebra to end vertebra of the largest Cobb angle) but on a film whose largest angle is
    under 10 degrees: the ``sco`` box's very shape over a straight column (on the 178 normal films of the embedded
    set it spans 8 vertebrae at the median, the 422 scoliotic films' ``sco`` boxes 7). The other ``n`` - 1, drawn
    from ``rng``, span 4-12 vertebrae anywhere down the column and 1-3 times its width: the boxes a quick detector
    scored as scoliosis on straight spines were mostly wider than the column (1.4x at the median). A scoliotic film,
    or one without landmarks (folder data), gives none. Labelled 0 in a detector's targets:
    :class:`~spinebench.models.detectors.FindingRoIHeads` keeps them in every sample as negatives.
    """
    lm = item_landmarks.double().numpy()
    if n < 1 or scoliosis >= 0.5 or not np.isfinite(lm).all():
        return torch.zeros((0, 4))
    boxes = [scoliosis_box(lm)]
    rng = rng if rng is not None else np.random.default_rng(0)
    for _ in range(n - 1):
        span = int(rng.integers(4, 13))
        i = int(rng.integers(0, N_VERTEBRAE - span + 1))
        # 1-3 times the column's width: widened by (u - 1) / 2 of it on each side
        boxes.append(vertebrae_box(lm, i, i + span - 1, margin=0.1, margin_x=(rng.uniform(1.0, 3.0) - 1) / 2))
    out = torch.tensor(boxes, dtype=torch.float32)
    out[:, 0::2] = out[:, 0::2].clamp(0, float(width))
    out[:, 1::2] = out[:, 1::2].clamp(0, float(height))
    return out[((out[:, 2] - out[:, 0]) >= 2) & ((out[:, 3] - out[:, 1]) >= 2)]


def _targets(batch: dict, device, hard_negatives: int = 0) -> list[dict]:
    """torchvision's targets of a batch; with ``hard_negatives`` > 0, that many :func:`hard_negative_boxes` a film
    too (drawn from torch's generator, which the training loop seeds)."""
    out = []
    rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()))) if hard_negatives else None
    for k, (b, lab) in enumerate(zip(batch["boxes"], batch["box_labels"])):
        if hard_negatives:
            h, w = batch["image"][k].shape[-2:]
            neg = hard_negative_boxes(batch["landmarks"][k], float(batch["labels"][k, 1]), h, w, hard_negatives, rng)
            b, lab = torch.cat([b, neg]), torch.cat([lab, torch.zeros(len(neg), dtype=lab.dtype)])
        out.append({"boxes": b.to(device), "labels": lab.to(device)})
    return out


def balanced_sampler_weights(ds) -> torch.Tensor:
    """Oversample images with boxes of a rare class (a detector cannot use a ``pos_weight``)."""
    y = np.array([[r["implant"], r["scoliosis"]] for r in ds.records], dtype=np.float64)
    freq = np.maximum(y.mean(0), 1e-3)
    w = 1.0 + (y / freq).max(1)
    return torch.tensor(w / w.sum(), dtype=torch.float64)


def detection_metrics(pred: dict, n_boot: int = 0, seed: int = 0) -> dict:
    """COCO mAP of a detector's predictions over the images whose boxes are complete: an image with a positive
    finding but no box of its class cannot score boxes (``boxes_cover_findings``). With ``n_boot`` > 0, 95% CIs
    of mAP and AP@0.5 from a bootstrap over ``pred["patient_ids"]``."""
    from spinebench.evaluation.detection import detection_map

    keep = [i for i, t in enumerate(pred["targets"]) if boxes_cover_findings(pred["labels"][i], t["labels"].tolist())]
    if len(keep) < len(pred["targets"]):
        log.info("mAP over %d of %d images: the others have a positive finding without its box", len(keep),
                 len(pred["targets"]))
    pids = [pred["patient_ids"][i] for i in keep] if n_boot > 0 else None
    return detection_map([pred["detections"][i] for i in keep], [pred["targets"][i] for i in keep],
                         patient_ids=pids, n_boot=n_boot, seed=seed)


class DetectionTask(ImageLevelTask):
    name = "detection"
    # validating and scoring through region proposals: 17-25 s beyond the budget (Inception-v2, 2-core fp32 EPYC)
    run_overhead_s = 25.0
    #: what a body pre-trained as a classifier first (``extra["pretrain_s"]``) adds: its set-up, a slower detector to
    #: validate, score and save (Inception-ResNet-v2, 2-core fp32 EPYC: 36-50 s beyond its budget in five fresh
    #: clones; 41 s once its body's one validation was skipped, engine.runner._transfer_into)
    pretrain_overhead_s = 15.0
    fixed_shapes = False     # images keep their aspect: no channels-last, no cuDNN autotuning per shape
    #: at most this many images per prediction batch, all of one padded input shape (``predict_batches``)
    predict_batch_size = 4
    boxes = True

    def run_overhead(self, settings) -> float:
        return self.run_overhead_s + (self.pretrain_overhead_s if settings.extra.get("pretrain_s") else 0.0)

    def predict_batches(self, model, ds, batch_size: int) -> list[list[int]]:
        """Batches of images that the model pads to the same input shape, so that each image's boxes and scores are
        the ones it gets alone (the demo's batch of one) up to float rounding: torchvision pads a batch to its
        widest image, and more padding moves the features near the edge. Why batch at all: 4 images a batch cost
        0.14 instead of 0.20 s each (Inception-v2) and 0.27 instead of 0.41 s (Inception-ResNet-v2) on 2 CPU cores,
        with boxes and scores bit-identical to batch 1 on 48 synthetic validation films.
        """
        tf = getattr(model, "transform", None)
        if batch_size <= 1 or tf is None or not hasattr(tf, "resize"):
            return super().predict_batches(model, ds, batch_size)
        div = int(getattr(tf, "size_divisible", 32))
        groups: dict[tuple, list[int]] = {}
        for i in range(len(ds)):
            h, w = tf.resize(ds[i]["image"], None)[0].shape[-2:]
            groups.setdefault((-(-h // div), -(-w // div)), []).append(i)
        return [g[k:k + batch_size] for g in groups.values() for k in range(0, len(g), batch_size)]

    def settings(self, profile, name: str, n_train: int, image_size: int | None = None):
        s = profile.detector
        if profile.detector_steps:  # the paper trained the detectors for a fixed number of steps
            per_epoch = max(1, math.ceil(n_train / s.batch_size))
            s = replace(s, epochs=max(1, math.ceil(profile.detector_steps / per_epoch)))
        return s

    def model_kwargs(self, profile, settings) -> dict:
        # the profile's, and what one model's settings add (Profile.model_settings "extra", e.g. box_giou_weight):
        # both are part of the model (its default_cfg), so they travel with the weights
        return {**profile.detector_kwargs, **settings.extra.get("detector_kwargs", {})}

    def trainable(self, ds, name: str):
        """The images a detector can learn boxes from (see ``boxes_cover_findings``)."""
        keep = [i for i, r in enumerate(ds.records)
                if boxes_cover_findings([r[f] for f in FINDINGS], [b[4] for b in r.get("boxes") or []])]
        if len(keep) < len(ds):
            log.info("%s: %d training images left out, a positive finding without its box", name, len(ds) - len(keep))
        return ds.subset(keep)

    def transform(self, model, image_size, train: bool):
        return DetectorTransform(train=train)

    def train_data(self, model, ds, settings, device, seed, rank=0, world=1, transform=None):
        # a training-only setting (the quick profile's sideways stretch), so not part of the model's default_cfg
        stretch = settings.extra.get("stretch")
        tf = transform or DetectorTransform(train=True, stretch=tuple(stretch) if stretch else None)
        return super().train_data(model, ds, settings, device, seed, rank, world, tf)

    def input_size(self, model, settings) -> list[int]:
        cfg = model.default_cfg
        return [int(cfg.get("min_size", 0)), int(cfg.get("max_size", 0))]

    def sampler_weights(self, ds):
        return balanced_sampler_weights(ds)

    def loss(self, net, batch, data, device, settings):
        with autocast(device):
            losses = net([im.to(device, non_blocking=True) for im in batch["image"]],
                         _targets(batch, device, int(settings.extra.get("sco_hard_negatives", 0))))
        return sum(losses.values()), {k: float(v.detach()) for k, v in losses.items()}

    def _infer(self, model, batch, device):
        out = model([im.to(device) for im in batch["image"]])
        return None, [{k: v.float().cpu() for k, v in o.items()} for o in out]

    def _probs(self, probs, dets, n):
        from spinebench.evaluation.metrics import image_scores_from_detections

        return image_scores_from_detections(dets, n)

    def score_at(self, pred, thresholds, n_boot, seed):
        """The image-level metrics, plus COCO mAP over the images whose boxes are complete."""
        return super().score_at(pred, thresholds, n_boot, seed) | detection_metrics(pred, n_boot, seed)

    def forward_one(self, model, x):
        return model([x])

    inference_cost = 4.0  # per parameter, against a classifier's (region proposals and RoI heads)

    def prepare_inference(self, lm, example, device, optimize):
        if optimize and device.type == "cpu":
            from spinebench.predict.predictor import optimize_detector

            optimize_detector(lm.model, lm.record.model_input(example).to(device))

    @torch.inference_mode()
    def infer(self, lm, view, scale, device, heatmaps):
        """Boxes (in the image's pixels, best 20) and image-level decisions from the best box per class."""
        from spinebench import FINDING_LABELS, LABEL_NAMES
        from spinebench.evaluation.metrics import image_scores_from_detections
        from spinebench.predict.predictor import decide

        finding_of = {label: finding for finding, label in FINDING_LABELS.items()}
        det = lm.model([lm.record.model_input(view).to(device)])[0]
        det = {k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in det.items()}
        probs = image_scores_from_detections([det], 1)[0]
        boxes = []
        for box, label, score in zip(det["boxes"].numpy(), det["labels"].numpy(), det["scores"].numpy()):
            label = int(label)
            if label not in LABEL_NAMES:
                continue
            boxes.append({"label": LABEL_NAMES[label], "finding": finding_of[label], "score": round(float(score), 4),
                          "box": [round(float(v) / scale, 1) for v in box]})
        boxes.sort(key=lambda b: -b["score"])
        return dict(**decide(probs, lm.thresholds), boxes=boxes[:20]), {"det": det}

    def draw(self, view, result, extra):
        from spinebench.predict.drawing import draw_boxes

        return draw_boxes(view, extra.get("det"), result)
