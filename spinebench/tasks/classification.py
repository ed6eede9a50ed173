"""The paper's transfer-learning classifiers: two sigmoid outputs per image, weighted binary cross-entropy."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from spinebench.data.transforms import ClassifierTransform
from spinebench.engine.device import autocast, channels_last
from spinebench.tasks.image_level import ImageLevelTask


#: the paper's classifier input (48 x 48)
PAPER_IMAGE_SIZE = 48


def pos_weight(ds) -> torch.Tensor:
    """Class-imbalance weights for the two findings: negatives / positives, clipped to [0.25, 10]."""
    y = np.array([[r["implant"], r["scoliosis"]] for r in ds.records], dtype=np.float64)
    pos = y.sum(0)
    neg = len(y) - pos
    return torch.tensor(np.clip(neg / np.maximum(pos, 1), 0.25, 10.0), dtype=torch.float32)


class ClassificationTask(ImageLevelTask):
    name = "classification"

    def settings(self, profile, name: str, n_train: int, image_size: int | None = None):
        size = profile.classifier_sizes.get(name)
        if image_size:
            # the paper's 48 x 48 is below Inception-v3's minimum (75): a model that cannot take the paper's size
            # gets its minimum instead; other sizes below a model's minimum are refused (runner._check_schedule)
            from spinebench.models import model_info

            need = model_info(name).get("min_input_size") or (0, 0)
            bump = min(need) > PAPER_IMAGE_SIZE
            size = (max(image_size, need[0]), max(image_size, need[1])) if bump else (image_size, image_size)
        return replace(profile.classifier, image_size=size) if size else profile.classifier

    def transform(self, model, image_size, train: bool):
        size = tuple(image_size) if image_size else tuple(model.default_cfg["input_size"])
        return ClassifierTransform(size, train=train)

    def train_data(self, model, ds, settings, device, seed, rank=0, world=1):
        data = super().train_data(model, ds, settings, device, seed, rank, world)
        data.pos_weight = pos_weight(ds).to(device)
        return data

    def loss(self, net, batch, data, device, settings):
        x = batch["image"].to(device, non_blocking=True)
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["labels"].to(device)
        with autocast(device):
            out = net(x)
        pw = data.pos_weight
        if isinstance(out, (tuple, list)):  # inception_v3 in train mode: (logits, aux_logits)
            loss = F.binary_cross_entropy_with_logits(out[0].float(), y, pos_weight=pw) + \
                settings.aux_weight * F.binary_cross_entropy_with_logits(out[1].float(), y, pos_weight=pw)
        else:
            loss = F.binary_cross_entropy_with_logits(out.float(), y, pos_weight=pw)
        return loss, {}

    def _infer(self, model, batch, device):
        x = batch["image"].to(device)
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(model(x).float()).cpu().numpy(), None

    def prepare_inference(self, lm, example, device, optimize):
        from spinebench.gradcam import GradCAM

        x = lm.record.model_input(example)[None].to(device)
        lm.cam = GradCAM(lm.model, optimize=optimize and device.type == "cpu", example=x)

    def infer(self, lm, view, scale, device, heatmaps):
        """Probabilities, decisions at the validated thresholds, and Grad-CAM of both findings from one pass."""
        from spinebench.predict.predictor import decide

        inp = lm.record.model_input(view)[None].to(device)
        logits, cams = lm.cam(inp, cams=heatmaps)
        probs = torch.sigmoid(logits.float())[0].cpu().numpy()  # the one sigmoid, here
        out = dict(input_size=[int(s) for s in inp.shape[-2:]], **decide(probs, lm.thresholds))
        return out, {"cams": cams[0].cpu().numpy() if cams is not None else None}

    def draw(self, view, result, extra):
        from spinebench.predict.drawing import cam_panel

        return cam_panel(view, extra.get("cams"), result)
