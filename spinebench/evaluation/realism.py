"""How far synthetic films are from real ones, as a model sees them: the held-out AUROC of a probe trained to tell
them apart.

Why a probe and not a perceptual score: what matters here is whether a network that trains on the synthetic set
meets something else on a real film, and a discriminator trained on the two answers exactly that. 0.5 means the
probe cannot tell them apart; 1.0 means anything trained on the synthetic films sees a different world. Two
probes, because they fail for different reasons:

- ``hist``: logistic regression on global statistics (intensity histogram, gradient-magnitude histogram, row and
  column profiles): exposure, detector response, processing and layout. Cheap, and it says *what* differs.
- ``cnn``: a small CNN on the classifiers' own input (the same resize, the one pixel contract): anatomy, texture,
  noise, everything. It reaches 1.0 first; its loss after training says how hard it had to work.

Both are scored on held-out patients of both sources (the split is by patient, as everywhere in spinebench), with
a patient bootstrap CI. Use the training split of a real data set only; the number has no target, it is for
comparing generator versions (``benchmarks/bench_realism.py`` writes one row per probe and version).
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spinebench.data.dataset import SpineDataset
from spinebench.data.splits import assign_splits
from spinebench.data.transforms import ClassifierTransform, normalize_input
from spinebench.evaluation.metrics import bootstrap_ci, weighted_auroc

PROBES = ("hist", "cnn")


def probe_inputs(records: Sequence[dict], size: tuple[int, int], max_side: int = 320) -> torch.Tensor:
    """(N, 1, H, W) float32 films at ``size``: the classifiers' own evaluation input (decode, cache, resize)."""
    ds = SpineDataset(records, max_side=max_side, transform=ClassifierTransform(size, train=False))
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def global_features(x: torch.Tensor) -> np.ndarray:
    """Per-film statistics the ``hist`` probe reads: intensity and gradient histograms, coarse profiles."""
    x = x[:, 0].double()
    n = x.shape[0]
    hist = torch.stack([torch.histc(v, bins=32, min=0, max=1) for v in x]) / x[0].numel()
    gy, gx = x[:, 1:, :-1] - x[:, :-1, :-1], x[:, :-1, 1:] - x[:, :-1, :-1]
    g = torch.sqrt(gx ** 2 + gy ** 2).clamp(max=0.5)
    ghist = torch.stack([torch.histc(v, bins=16, min=0, max=0.5) for v in g]) / g[0].numel()
    rows = F.adaptive_avg_pool1d(x.mean(2)[:, None], 16)[:, 0]   # brightness down the film
    cols = F.adaptive_avg_pool1d(x.mean(1)[:, None], 8)[:, 0]    # and across it
    moments = torch.stack([x.reshape(n, -1).mean(1), x.reshape(n, -1).std(1), g.reshape(n, -1).mean(1)], 1)
    return torch.cat([hist, ghist, rows, cols, moments], 1).numpy()


class _ProbeNet(nn.Module):
    """Four strided conv blocks and a linear read-out (~60 k parameters): small enough to train in seconds.

    GroupNorm, not BatchNorm: a probe trained for a few dozen steps has running statistics far from its batch
    ones, and in eval mode BatchNorm turned a perfect separation upside down (AUROC 0.02 on the test's films).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.GroupNorm(4, b), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(chans[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean((2, 3)))[:, 0]


def _fit_hist(xtr, ytr, xte) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    clf.fit(global_features(xtr), ytr)
    return clf.predict_proba(global_features(xte))[:, 1]


def _fit_cnn(xtr, ytr, xte, epochs: int, seed: int) -> tuple[np.ndarray, float]:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # a seeded init without resetting the caller's global generator
        torch.manual_seed(seed)
        net = _ProbeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    y = torch.as_tensor(ytr, dtype=torch.float32)
    bs, loss = 32, float("nan")
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(xtr), generator=g).split(bs):
            xb = xtr[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5  # left-right is not a cue either source owns
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            out = F.binary_cross_entropy_with_logits(net(xb), y[idx])
            opt.zero_grad()
            out.backward()
            opt.step()
            loss = float(out.detach())
    net.eval()
    with torch.no_grad():
        return torch.sigmoid(torch.cat([net(b) for b in xte.split(64)])).numpy(), loss


def realism_probe(synthetic: Sequence[dict], real: Sequence[dict], probes: Sequence[str] = PROBES,
                  size: tuple[int, int] = (192, 80), epochs: int = 8, n_boot: int = 300, seed: int = 0,
                  max_side: int = 320, holdout: float = 0.5, like_with_like: bool = True,
                  input_norm: str = "none") -> list[dict]:
    """Train each probe on a share of each source's patients; score the ``holdout`` share of them.

    Half and half by default: the probe is small, and a held-out set of a few dozen films would leave its AUROC
    to chance (a same-source probe on 11 held-out films scored 0.29).

    ``like_with_like``: compare hardware-free scoliotic films only, on both sides. The real sets here hold
    almost nothing else (AASCE: 463 of 481 scoliotic, 10 post-operative), while a third of the synthetic films
    carry hardware and 30% are straight: unfiltered, the probe could read *what* a film shows instead of how it
    looks.

    ``input_norm``: the films as a landmark model built with it sees them (``transforms.normalize_input``; the
    quick Cobb model's "local"): how far the two sources are after the normalisation meant to bring them together.

    Returns one row per probe: ``auroc`` (synthetic = positive), its patient-bootstrap CI, the numbers of training
    and held-out films per source, the probe's final training loss (``cnn``) and seconds.
    """
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown realism probe(s) {unknown}; choose from {PROBES}")
    keep = (lambda r: int(r["implant"]) == 0 and int(r["scoliosis"]) == 1) if like_with_like else (lambda r: True)
    synthetic = [dict(r) for r in synthetic if keep(r)]
    real = [dict(r) for r in real if keep(r)]
    if not synthetic or not real:
        raise ValueError(f"the realism probe needs films on both sides; got {len(synthetic)} synthetic and "
                         f"{len(real)} real" + (" hardware-free scoliotic films" if like_with_like else ""))
    for group in (synthetic, real):
        assign_splits(group, seed=seed, fractions=(1 - holdout, holdout / 2, holdout / 2))
    recs = synthetic + real
    label = np.array([1] * len(synthetic) + [0] * len(real))
    train = np.array([r["split"] == "train" for r in recs])
    x = normalize_input(probe_inputs(recs, size, max_side), input_norm)
    xtr, xte = x[torch.from_numpy(train)], x[torch.from_numpy(~train)]
    ytr, yte = label[train], label[~train]
    pids = [f"{r['source']}/{r['patient_id']}" for r in recs]
    pte = [p for p, t in zip(pids, train) if not t]
    rows = []
    for probe in probes:
        t0 = time.perf_counter()
        loss = float("nan")
        if probe == "hist":
            score = _fit_hist(xtr, ytr, xte)
        else:
            score, loss = _fit_cnn(xtr, ytr, xte, epochs, seed)
        auc = float(weighted_auroc(yte, score, np.ones((1, len(yte))))[0])
        ci = bootstrap_ci(lambda w: {"auroc": weighted_auroc(yte, score, w)}, pte, n_boot=n_boot, seed=seed)
        lo, hi = ci.get("auroc", (float("nan"), float("nan")))
        rows.append({"probe": probe, "auroc": round(auc, 4), "auroc_lo": round(lo, 4), "auroc_hi": round(hi, 4),
                     "train_loss": round(loss, 4), "n_train_synthetic": int((ytr == 1).sum()),
                     "n_train_real": int((ytr == 0).sum()), "n_heldout_synthetic": int((yte == 1).sum()),
                     "n_heldout_real": int((yte == 0).sum()), "input_size": f"{size[0]}x{size[1]}",
                     "input_norm": input_norm,
                     "seconds": round(time.perf_counter() - t0, 1)})
    return rows
