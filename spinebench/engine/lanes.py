"""Several run-all processes at once on one machine ("lanes"), merged into one run folder.

Why: one GPU is far from busy with one of these models (a detector step is mostly Python and small kernels), and
one after another the paper profile's seven need ~20 minutes of an H200; as five lanes they finished in 207 s
(README). On a 2-core CPU two single-threaded lanes train only about a fifth more steps than one model on both
cores (measured per model: 0.91-1.49x), so ``run-all`` keeps one lane unless asked (``--lanes``).

Every lane is ``run_all`` on a part of the models with the parent's split file, profile, settings and precision,
writing its own run folder, results and weights under ``<run>/lanes/<i>/``; :func:`merge_lanes` then brings their
logs, metrics and predictions into the parent's run folder and their weights into the parent's weights folder
(hard links where possible, one manifest through :mod:`spinebench.weights`' writer). A model that starts from a
classifier trained in the same run (``Profile.transfer``) shares that classifier's lane, after it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)


def plan_lanes(models: Sequence[str], n: int, after: dict[str, str] | None = None) -> list[list[str]]:
    """``models`` in at most ``n`` lanes, in order: a model ``m`` with ``after[m]`` among the models goes into that
    model's lane, behind it; the other models go, one by one, to the lane with the fewest models so far."""
    after = after or {}
    groups: list[list[str]] = []
    for m in models:
        src = after.get(m)
        home = next((g for g in groups if src in g), None) if src else None
        if home is not None:
            home.append(m)
        else:
            groups.append([m])
    lanes: list[list[str]] = [[] for _ in range(max(1, min(n, len(groups))))]
    for g in groups:
        min(lanes, key=len).extend(g)
    return [lane for lane in lanes if lane]


def _lane_main(kwargs: dict, cpus: list[int] | None, log_level: int = logging.WARNING) -> None:
    """One lane (a spawned process): ``run_all`` on its models, bound to the cores ``cpus`` when given (run_all
    then gives its threads those cores alone: two lanes of two threads on two cores spin against each other and
    train several times slower); its log lines (the parent's level) start with the lane's name, since no progress
    bar can show several lanes."""
    from spinebench.engine.runner import run_all

    logging.basicConfig(level=log_level, format="%(processName)s %(levelname)s %(name)s: %(message)s")
    if cpus:
        os.sched_setaffinity(0, cpus)
    run_all(**kwargs)


def cpu_shares(n: int) -> list[list[int]] | None:
    """This process's cores cut into ``n`` equal shares (a share of one core at least), or None where the
    platform cannot bind processes to cores."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cores = sorted(os.sched_getaffinity(0))
    k = max(1, len(cores) // n)
    return [cores[(i * k) % len(cores):(i * k) % len(cores) + k] for i in range(n)]


def run_lanes(lanes: list[list[str]], kwargs: dict, lane_root: Path, cpus: list[list[int]] | None = None,
              log_level: int = logging.WARNING) -> list[Path | None]:
    """Run ``run_all(**kwargs, models=lane)`` for every lane at once, each in a spawned process writing under
    ``lane_root/<i>`` (bound to ``cpus[i]`` when given); their run folders (None for a lane that wrote none)."""
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked CUDA or OpenMP state
    procs = []
    for i, lane in enumerate(lanes):
        d = lane_root / str(i)
        lane_kwargs = {**kwargs, "models": list(lane), "out": str(d / "runs"), "results": str(d / "results"),
                       "weights_dir": str(d / "weights"), "report": False, "progress": False}
        p = ctx.Process(target=_lane_main, args=(lane_kwargs, cpus[i] if cpus else None, log_level), name=f"lane{i}")
        p.start()
        procs.append(p)
    for i, p in enumerate(procs):
        p.join()
        if p.exitcode != 0:
            log.error("lane %d (%s) ended with exit code %s", i, " ".join(lanes[i]), p.exitcode)
    return lane_run_dirs(lane_root, len(lanes))


def lane_run_dirs(lane_root: Path, n: int) -> list[Path | None]:
    """The run folder each of ``n`` lanes wrote under ``lane_root/<i>/runs`` (its latest), or None."""
    found = []
    for i in range(n):
        runs = sorted((Path(lane_root) / str(i) / "runs").glob("*/config.json"))
        found.append(runs[-1].parent if runs else None)
    return found


def merge_lanes(lane_runs: Sequence[Path | None], merged: Path, weights: Path, notes: list[str],
                config: dict | None = None) -> list[dict]:
    """Bring the lanes' run folders into ``merged`` (logs, metrics, predictions; ``config.json`` and ``split.csv``
    unless it has them) and their weights into ``weights``; the result rows of the models the lanes finished, in
    lane order. A lane whose split file differs from the first's is noted in ``notes``."""
    from spinebench.weights import read_records, write_record

    runs = [d for d in lane_runs if d is not None]
    if not runs:
        raise RuntimeError("no lane wrote a run folder")
    merged.mkdir(parents=True, exist_ok=True)
    configs = [json.loads((d / "config.json").read_text()) for d in runs]
    splits = {(d / "split.csv").read_bytes() for d in runs if (d / "split.csv").is_file()}
    if len(splits) != 1:
        notes.append(f"the lanes' split files differ ({len(splits)} versions): their test sets are not the same")
    if not (merged / "split.csv").is_file():
        shutil.copy2(runs[0] / "split.csv", merged / "split.csv")
    for d in runs:
        for sub in ("logs", "metrics", "predictions"):
            if (d / sub).is_dir():
                shutil.copytree(d / sub, merged / sub, dirs_exist_ok=True)   # copy2: file times kept
    models = [m for c in configs for m in c["models"]]
    cfg = {**(config or configs[0]), "lanes": [c["models"] for c in configs], "lane_runs": [str(d) for d in runs]}
    if config is None:
        cfg.update(run_id=merged.name, models=models, overrides=[c.get("overrides") for c in configs])
    (merged / "config.json").write_text(json.dumps(cfg, indent=2))
    weights.mkdir(parents=True, exist_ok=True)
    for d in runs:
        lane_weights = d.parent.parent / "weights"
        for rec in (read_records(lane_weights) if lane_weights.is_dir() else {}).values():
            if rec.file and rec.path.is_file():
                target = weights / rec.file
                target.unlink(missing_ok=True)
                try:
                    os.link(rec.path, target)
                except OSError:  # another file system
                    shutil.copy2(rec.path, target)
                write_record(weights, rec)
    return [json.loads(p.read_text())["row"] for m in models for p in sorted((merged / "metrics").glob(f"{m}-s*.json"))]


def lanes_summary(lane_runs: Sequence[Path | None]) -> dict:
    """What the lanes' ``run_summary.json`` files add up to: bytes written (summed), peak memory and wall time (the
    largest), and how many lanes wrote one."""
    done = [json.loads((d / "run_summary.json").read_text()) for d in lane_runs
            if d is not None and (d / "run_summary.json").is_file()]
    return {"wall_seconds": max((x["wall_seconds"] for x in done), default=None),
            "bytes_written": sum(x.get("bytes_written", 0) for x in done),
            "peak_rss_mb": max((x.get("peak_rss_mb", 0) for x in done), default=0), "lanes_finished": len(done)}
