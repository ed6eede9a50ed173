"""``run-all`` and ``evaluate``: every registered model on the same split file, scored by the same protocol.

Layout of a run (``runs/<run-id>/``)::

    config.json                 arguments, profile, data specs, device, git commit
    split.csv                   image_id, patient_id, split: read by every model (and by later runs via --split-file)
    logs/<model>-s<seed>.csv    one row per epoch
    checkpoints/<model>-s<seed>.pt   written after every epoch: ``--resume RUN_DIR`` continues from it
    metrics/<model>-s<seed>.json     the result row plus training history (and, on CUDA, the model's peak memory)
    predictions/<model>-s<seed>.csv  test predictions (probabilities, decisions) per image
    leaderboard.csv             this run's rows
and appends the same rows to ``results/leaderboard.csv``; trained weights go to ``weights/``.

One model failing (an exception, a non-finite loss) becomes an ``error`` row and the others go on (timm's
benchmark habit): a long run never dies at model five of six.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Sequence

import torch

from spinebench.data.dataset import SpineDataset
from spinebench.data.sources import load_records
from spinebench.data.splits import apply_split_file, assign_splits, write_split_file
from spinebench.engine.device import (available_cores, cpu_has_bf16, precision_of, resolve_device, seed_everything,
                                      set_precision)
from spinebench.engine.profiles import (Profile, budget_scale, budget_seconds, get_profile, scaled_settings,
                                        with_wall_budget)
from spinebench.engine.train import TrainSettings, measure_latency, predict, train_model
from spinebench.errors import SpinebenchError
from spinebench.tasks import TASKS, get_task

log = logging.getLogger(__name__)


def _git_commit() -> str:
    from spinebench.evaluation.results import git_commit
    return git_commit()


def decoded_dataset(records: list[dict], side: int) -> SpineDataset:
    """Every image decoded once and kept downscaled to ``side`` (decoding threads: up to 4 cores)."""
    return SpineDataset(records, max_side=side, workers=min(4, available_cores()))


def _split_datasets(records: list[dict], cache_side: int) -> dict[str, SpineDataset]:
    """Decode every image once (shared by all models of the run), then split into views."""
    full = decoded_dataset(records, cache_side)
    out = {}
    for split in ("train", "val", "test"):
        idx = [i for i, r in enumerate(records) if r["split"] == split]
        out[split] = full.subset(idx)
    return out


@dataclass
class RunContext:
    """What every model of one run shares: where it writes, what it trains on, how (instead of long signatures)."""

    run_id: str
    run_dir: Path
    data: list[str]
    profile: Profile
    device: torch.device
    git_commit: str
    counts: dict
    pretrained: str = "auto"
    image_size: int | None = None
    overrides: dict = field(default_factory=dict)   # TrainSettings fields set for every model (--epochs, ...)
    resume: bool = False
    progress: bool = True
    rank: int = 0
    world: int = 1
    weights_dir: Path = Path("weights")
    #: weights (CPU) of this run's models that a later model of the run starts from (``Profile.transfer``)
    trained: dict = field(default_factory=dict)
    #: the factor on the next model's time budget that keeps the run inside ``Profile.wall_budget_s``
    budget_scale: float = 1.0

    @property
    def split_file(self) -> Path:
        return self.run_dir / "split.csv"

    def row_context(self, seed: int) -> dict:
        """The result-row columns every model of the run shares."""
        return dict(run_id=self.run_id, data=" ".join(self.data), seed=seed, device=str(self.device),
                    precision=precision_of(self.device), git_commit=self.git_commit, split_file=str(self.split_file),
                    n_train=self.counts["train"], n_val=self.counts["val"], n_test=self.counts["test"],
                    pretrained_mode=self.pretrained)

    def settings(self, name: str, n_train: int):
        """Model ``name``'s TrainSettings: the profile's for its task, scaled to the run's wall budget, then the
        run's overrides (what a user gives, such as ``--epochs``, is what the model trains with)."""
        s = scaled_settings(self.profile.settings_for(name, n_train, self.image_size), self.budget_scale)
        return replace(s, **self.overrides) if self.overrides else s


def fp32_budget_note(prof: Profile, dev: torch.device) -> str | None:
    """The warning a clock-budgeted run (quick) gives on a CPU without bf16 matrix units, else None.

    Why: the profile's budgets are seconds, so such a CPU trains in fp32 and fits fewer steps in them (a 2-core
    AVX2 EPYC, fp32: a fifth to a half of the epochs of a 2-core AMX Xeon in bf16, README), and its figures are
    lower; a user should read them as the machine's, not as a broken install.
    """
    if not prof.wall_budget_s or prof.scale_up or dev.type != "cpu" or cpu_has_bf16():
        return None
    return (f"training in fp32: this CPU has no bf16 matrix units (AVX512-BF16 or AMX), so the {prof.name} "
            "profile's time budgets buy fewer steps than on one that has them (a 2-core AVX2 EPYC: a fifth to a "
            "half of the epochs of a 2-core AMX Xeon) and the figures are lower; the leaderboard's epochs column "
            "says how many each model had; `run-all --wall-budget 1500` buys the steps back (README, 'On a CPU "
            "without bf16')")


def run_all(*, data: Sequence[str] = ("synth",), profile: "str | Profile" = "quick", models: Sequence[str] | None = None,
            seeds: Sequence[int] = (0,), device: str = "auto", out: str | os.PathLike = "runs",
            results: str | os.PathLike = "results", weights_dir: str | os.PathLike = "weights",
            pretrained: str = "auto", image_size: int | None = None, split_file: str | None = None,
            split_mode: str = "patient", split_seed: int = 0, resume: str | os.PathLike | None = None,
            epochs: int | None = None, progress: bool = True, report: bool = True,
            keep_checkpoints: bool = False, overrides: dict | None = None, precision: str = "auto",
            lanes: int = 1, wall_budget_s: float | None = None) -> Path:
    """Train and score ``models`` (default: the six models, and the Cobb model when ``data`` has landmarks).

    ``overrides`` sets TrainSettings fields for every model (``epochs=``, ``lr=``, ``time_budget_s=``, ...;
    ``epochs`` is the same as ``overrides={"epochs": ...}``). Returns the run folder. ``resume`` names an earlier
    run folder: its config and split are reused, finished models are skipped and an interrupted model continues
    from its last checkpoint. A model's checkpoint is deleted once its weights and row are saved, unless
    ``keep_checkpoints`` (they are 4x the model: 0.1-1.1 GB).
    ``run_summary.json`` records the run's wall time, bytes written and peak memory. ``precision`` (auto, fp32,
    bf16-mixed; ``engine.device.set_precision``) is the arithmetic of training, recorded in the rows; scores are
    computed in fp32 (``engine.train.predict``). ``lanes`` > 1 trains the models in that many processes at once
    (``spinebench.engine.lanes``: on a GPU; a resumed run takes one lane). ``wall_budget_s`` replaces the
    profile's wall budget (quick: 570 s) and lets the models' time budgets grow to fill it as well as shrink
    (:func:`~spinebench.engine.profiles.with_wall_budget`).
    """
    t_start, written_start = time.perf_counter(), _bytes_written()
    if lanes < 1:
        raise SpinebenchError(f"--lanes must be at least 1 (got {lanes})")
    set_precision(precision)
    dist_rank, dist_world = _dist_init(device)
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if wall_budget_s is not None:
        if "time_budget_s" in (overrides or {}):
            raise SpinebenchError("give --wall-budget or --time-budget, not both (a budget for every model leaves "
                                  "the run's clock nothing to share)")
        prof = with_wall_budget(prof, wall_budget_s)
    dev = resolve_device(device if dist_world == 1 or device != "auto" else "auto")
    if dist_world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    models = _choose_models(models, prof)
    if resume:  # the interrupted run's own arguments and split
        run_dir = Path(resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise SpinebenchError(f"cannot resume: {cfg_path} not found")
        cfg = json.loads(cfg_path.read_text())
        data, seeds, models = cfg["data"], cfg["seeds"], cfg["models"]
        pretrained, image_size, epochs = cfg["pretrained"], cfg["image_size"], cfg.get("epochs")
        overrides = cfg.get("overrides") or {}
        set_precision(cfg.get("precision", "fp32"))  # the interrupted run's arithmetic, not this machine's default
        prof = get_profile(cfg["profile"])
        split_file = str(run_dir / "split.csv")
    else:
        run_dir = Path(out) / (_dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{prof.name}")
    _check_schedule(prof, models, epochs, image_size)
    overrides = _check_overrides(overrides)
    if epochs:
        overrides = {**overrides, "epochs": epochs}
    run_overrides = dict(overrides)  # recorded in config.json; resume re-applies them
    if not keep_checkpoints:  # a finished model's checkpoint is deleted: writing one after its last epoch is waste
        overrides["final_checkpoint"] = False
    records, counts, models = _split_records(data, split_file, split_mode, split_seed, models, prof.cache_side)

    ctx = RunContext(run_id=run_dir.name, run_dir=run_dir, data=list(data), profile=prof, device=dev,
                     git_commit=_git_commit(), counts=counts, pretrained=pretrained, image_size=image_size,
                     overrides=overrides, resume=bool(resume), progress=progress, rank=dist_rank, world=dist_world,
                     weights_dir=Path(weights_dir))
    if dist_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_split_file(records, run_dir / "split.csv")
            config = {"run_id": ctx.run_id, "data": list(data), "profile": prof.name, "cache_side": prof.cache_side,
                      "models": models,
                      "seeds": list(seeds), "device": str(dev), "precision": precision_of(dev),
                      "wall_budget_s": prof.wall_budget_s,
                      "pretrained": pretrained, "image_size": image_size, "epochs": epochs,
                      "overrides": run_overrides, "split_mode": split_mode, "split_seed": split_seed,
                      "split_counts": counts, "git_commit": ctx.git_commit, "torch": torch.__version__,
                      "world_size": dist_world,
                      "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    log.info("run %s: %d images (%s) on %s", ctx.run_id, len(records), counts, dev)
    note = fp32_budget_note(prof, dev)
    if note and dist_rank == 0:
        log.warning(note)
    if lanes > 1 and not resume and dist_world == 1 and len(models) > 1:
        child = dict(data=list(data), profile=prof, seeds=list(seeds), device=device, pretrained=pretrained,
                     image_size=image_size, split_file=str(run_dir / "split.csv"), epochs=epochs,
                     keep_checkpoints=keep_checkpoints, overrides=run_overrides, precision=precision)
        _run_in_lanes(ctx, lanes, models, list(seeds), child, results, report, t_start, written_start)
        return run_dir
    sets = _split_datasets(records, prof.cache_side)

    rows = []
    bar = None
    if progress and dist_rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(models) * len(seeds), desc="run-all", unit="model")
    queue = [(name, seed) for name in models for seed in seeds]
    # one process's clock (ranks of a DistributedDataParallel run would each draw their own budgets)
    clock = _WallBudget(ctx, queue, t_start) if prof.wall_budget_s and not resume and dist_world == 1 and \
        "time_budget_s" not in overrides else None
    for i, (name, seed) in enumerate(queue):
        if clock:
            clock.before(i)
        t_model = time.perf_counter()
        rows.append(_run_model(name, seed, ctx, sets, save=seed == seeds[0], keep_checkpoints=keep_checkpoints))
        if clock:
            clock.after(i, time.perf_counter() - t_model, rows[-1].get("train_seconds"))
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    if dist_rank == 0:
        _finish_run(ctx, rows, results, report, t_start, written_start)
    _dist_done(dist_world)
    return run_dir


class _WallBudget:
    """Keeps a run inside ``Profile.wall_budget_s``: before each model, the factor on the budgets of the models
    still to train (:func:`~spinebench.engine.profiles.budget_scale`), from the clock and what each of them will cost
    beyond its budget.

    That cost is the model's prior (``Task.run_overhead``: its task's, plus what a pre-trained body adds) times what
    the finished models of the same task cost against their priors (1 until one has finished). Why per task: a
    detector's scoring costs 17-25 s beyond its budget on two cores, a classifier's 1-8 s, so one mean over all
    finished models cut the last model, the Cobb model, to 40 of its 60 s (eebb805, 2-core Xeon). Why priors that
    fit the slowest CPU measured (a 2-core fp32 EPYC): where they fell short (the Cobb model's 15 s against the 20-25
    it costs there, Inception-ResNet-v2's 25 against 36-42), the last model paid for all of it: the Cobb model got
    36-42 s of its 60 in four fresh clones (3-4 epochs: SMAPE 22-31%) while the others kept 90-100% of theirs.
    """

    def __init__(self, ctx: RunContext, queue: list[tuple[str, int]], t_start: float):
        self.ctx, self.t_start = ctx, t_start
        n_train = max(1, ctx.counts.get("train", 1))
        # the settings each model will train with (the run's overrides too), before any scaling
        settings = [ctx.settings(name, n_train) for name, _ in queue]
        self.budgets = [budget_seconds(s) for s in settings]
        self.names = [f"{name}-s{seed}" for name, seed in queue]
        self.tasks = [get_task(name) for name, _ in queue]
        self.priors = [task.run_overhead(s) for task, s in zip(self.tasks, settings)]
        self.given: list[float] = []
        self.ratios: dict[str, list[float]] = {}  # task -> each finished model's cost beyond its budget / its prior
        self.warned = False

    def overhead(self, i: int) -> float:
        """What the ``i``-th model is expected to cost beyond its budget."""
        seen = self.ratios.get(self.tasks[i].name)
        return self.priors[i] * (sum(seen) / len(seen) if seen else 1.0)

    def before(self, i: int) -> None:
        elapsed = time.perf_counter() - self.t_start
        overheads = [self.overhead(j) for j in range(i, len(self.budgets))]
        scale = budget_scale(self.ctx.profile.wall_budget_s, elapsed, self.budgets[i:], overheads,
                             ceiling=math.inf if self.ctx.profile.scale_up else 1.0)
        self.ctx.budget_scale = scale
        self.given.append(self.budgets[i] * scale)
        if scale > 1 and self.budgets[i]:
            log.info("%s: %.0f of a %.0f s budget (x%.2f), to fill the run's %.0f s (%.0f s elapsed)", self.names[i],
                     self.budgets[i] * scale, self.budgets[i], scale, self.ctx.profile.wall_budget_s, elapsed)
        if scale < 1 and self.budgets[i]:
            # a warning the first time a model loses a tenth or more: the machine is slower than the profile assumes
            loud = scale < 0.9 and not self.warned
            (log.warning if loud else log.info)(
                "%s: %.0f of its %.0f s (x%.2f), to end the run within the profile's %.0f s (%.0f s elapsed)",
                self.names[i], self.budgets[i] * scale, self.budgets[i], scale, self.ctx.profile.wall_budget_s,
                elapsed)
            self.warned = self.warned or loud

    def after(self, i: int, wall_s: float, train_s: float | None = None) -> None:
        """The ``i``-th model took ``wall_s`` in all, ``train_s`` of it training (its row's ``train_seconds``). Its
        cost beyond training is counted from the end of its training, not of its budget: a model that stops before
        its clock (the quick Inception-v2 detector at its epoch cap on a fast hour, 1 s "beyond" its budget against
        20-25 s of scoring) would otherwise tell the task's next model it costs nothing beyond its own (Inception-
        ResNet-v2 was expected 2 s and cost 20)."""
        used = self.given[i] if train_s is None else min(self.given[i], train_s)
        beyond = max(0.0, wall_s - used)
        log.info("%s: %.0f s in all, %.0f s of it training (%.0f s budget), %.0f s beyond (%.0f s expected)",
                 self.names[i], wall_s, used, self.given[i], beyond, self.overhead(i))
        if self.priors[i] > 0:
            self.ratios.setdefault(self.tasks[i].name, []).append(beyond / self.priors[i])
        self.ctx.budget_scale = 1.0


def _choose_models(models: Sequence[str] | None, prof: Profile) -> list[str]:
    """The models asked for (unknown names refused), or every model of a known task but the Cobb models other than
    the profile's own (``Profile.cobb_model``)."""
    from spinebench.models import list_models, model_info

    known = list_models()
    if not models:  # the paper's six, plus the Cobb landmark model when the data has landmarks (checked once loaded)
        return [m for m in known if model_info(m)["task"] in TASKS
                and (model_info(m)["task"] != "cobb" or m == prof.cobb_model)]
    unknown = [m for m in models if m not in known]
    if unknown:
        raise SpinebenchError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return list(models)


def _split_records(data, split_file, split_mode, split_seed, models, cache_side: int
                   ) -> tuple[list[dict], dict, list[str]]:
    """The run's records with their splits, the split counts, and the models that can use this data."""

    records = load_records(data, max_side=cache_side)
    if not records:
        raise SpinebenchError(f"no images in {' '.join(data)}")
    if split_file:
        apply_split_file(records, split_file)
    else:
        assign_splits(records, seed=split_seed, mode=split_mode)
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")}
    unusable = {m: why for m in models if (why := get_task(m).cannot_use(records))}
    if unusable and len(unusable) == len(models):
        raise SpinebenchError(f"{', '.join(unusable)}: {next(iter(unusable.values()))} in {' '.join(data)}")
    for m, why in unusable.items():
        log.info("%s skipped: %s in %s", m, why, " ".join(data))
    if counts["train"] == 0 or counts["test"] == 0 or counts["val"] == 0:
        raise SpinebenchError(f"too few patients to split ({counts}); give more data")
    return records, counts, [m for m in models if m not in unusable]


def _run_model(name: str, seed: int, ctx: RunContext, sets: dict, save: bool, keep_checkpoints: bool) -> dict:
    """One model of the run, its failure an error row: a resumed run reuses a finished model's row."""
    from spinebench.evaluation.results import error_row

    tag = f"{name}-s{seed}"
    metrics_path = ctx.run_dir / "metrics" / f"{tag}.json"
    if ctx.resume and metrics_path.is_file():
        return json.loads(metrics_path.read_text())["row"]
    dev = ctx.device
    if dev.type == "cuda":  # per-model peak: the caching allocator keeps the run's memory between models
        torch.cuda.reset_peak_memory_stats(dev)
    try:
        row, extra = _run_one(name, seed, ctx, sets, save=save)
    except Exception as e:  # noqa: BLE001 - one failing model must not end the run
        log.error("%s failed: %s", tag, e)
        log.debug("%s", traceback.format_exc())
        row, extra = error_row(name, e, **ctx.row_context(seed)), {}
    if dev.type == "cuda":
        extra["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1)
    if ctx.rank == 0:
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(json.dumps({"row": row, **extra}, indent=2, default=str))
        if row.get("status") == "ok" and not keep_checkpoints:
            (ctx.run_dir / "checkpoints" / f"{tag}.pt").unlink(missing_ok=True)
    return row


def _run_in_lanes(ctx: RunContext, n: int, models: list[str], seeds: list[int], child: dict, results, report: bool,
                  t_start: float, written_start: int) -> None:
    """The run's models in ``n`` concurrent lanes (``spinebench.engine.lanes``), merged into this run folder."""
    from spinebench.engine import lanes
    from spinebench.evaluation.results import error_row

    plan = lanes.plan_lanes(models, n, _transfer_needs(ctx))
    cpus = lanes.cpu_shares(len(plan)) if ctx.device.type == "cpu" else None
    log.info("run %s: %d lanes: %s", ctx.run_id, len(plan), " | ".join(" ".join(lane) for lane in plan))
    lane_runs = lanes.run_lanes(plan, child, ctx.run_dir / "lanes", cpus, logging.getLogger().getEffectiveLevel())
    notes: list[str] = []
    config = json.loads((ctx.run_dir / "config.json").read_text())
    done = {(r["model"], int(r["seed"])): r for r in
            (lanes.merge_lanes(lane_runs, ctx.run_dir, ctx.weights_dir, notes, config)
             if any(d is not None for d in lane_runs) else [])}
    for note in notes:
        log.warning("%s", note)
    rows = [done.get((m, s)) or error_row(m, RuntimeError("its lane ended without a result"), **ctx.row_context(s))
            for m in models for s in seeds]
    _finish_run(ctx, rows, results, report, t_start, written_start, lanes.lanes_summary(lane_runs))


def _finish_run(ctx: RunContext, rows: list[dict], results, report: bool, t_start: float, written_start: int,
                lanes: dict | None = None) -> None:
    """Leaderboards, the report, and ``run_summary.json`` (wall time, bytes written, peak memory; with lanes,
    ``engine.lanes.lanes_summary`` added: their bytes, the largest peak)."""
    from spinebench.evaluation.results import append_rows

    append_rows(ctx.run_dir / "leaderboard.csv", rows)
    append_rows(Path(results) / "leaderboard.csv", rows)
    if report:
        _make_report(ctx.run_dir)
    summary = {"wall_seconds": round(time.perf_counter() - t_start, 1),
               "bytes_written": _bytes_written() - written_start, "peak_rss_mb": _peak_rss_mb()}
    if lanes:
        summary.update(bytes_written=summary["bytes_written"] + lanes["bytes_written"],
                       peak_rss_mb=max(summary["peak_rss_mb"], lanes["peak_rss_mb"]), lanes=lanes["lanes_finished"])
    (ctx.run_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
    log.info("run %s: %.0f s, %.1f MB written, peak memory %.0f MB", ctx.run_id, summary["wall_seconds"],
             summary["bytes_written"] / 1e6, summary["peak_rss_mb"])


def _bytes_written() -> int:
    """Bytes this process has caused to be written to storage (Linux ``/proc/self/io``; 0 where unknown)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    try:
        import resource
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return float("nan")


def _check_schedule(prof: Profile, models: Sequence[str], epochs: int | None, image_size: int | None) -> None:
    """Refuse an impossible --epochs / --image-size before minutes of data loading, not as error rows after."""
    from spinebench.models import model_info

    if epochs is not None and epochs < 1:
        raise SpinebenchError(f"--epochs must be at least 1 (got {epochs})")
    if image_size is None:
        return
    if image_size < 1:
        raise SpinebenchError(f"--image-size must be a positive number of pixels (got {image_size})")
    for name in models:
        info = model_info(name)
        if not info.get("min_input_size"):  # only the classifiers have a minimum input
            continue
        size = prof.settings_for(name, 1, image_size).image_size
        need = info["min_input_size"]
        if size[0] < need[0] or size[1] < need[1]:
            raise SpinebenchError(f"--image-size {image_size} is below {name}'s minimum input of {need[0]} x "
                                  f"{need[1]} pixels")


def _check_overrides(overrides: dict | None) -> dict:
    """Refuse a TrainSettings override that does not exist (a typo would silently train the default)."""
    known = {f.name for f in fields(TrainSettings)}
    bad = sorted(set(overrides or {}) - known)
    if bad:
        raise SpinebenchError(f"unknown training setting(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    budget = (overrides or {}).get("time_budget_s")
    if budget is not None and not budget > 0:
        raise SpinebenchError(f"--time-budget must be a positive number of seconds (got {budget})")
    for key in ("aux_shape_weight", "aux_implant_weight"):
        weight = (overrides or {}).get(key)
        if weight is not None and not weight >= 0:
            flag = "--" + key.replace("_", "-")
            raise SpinebenchError(f"{flag} must be 0 (off) or positive (got {weight})")
    return dict(overrides or {})


def _run_one(name: str, seed: int, ctx: RunContext, sets: dict[str, SpineDataset], save: bool) -> tuple[dict, dict]:
    """Fit one model, score it on the test split by its task's protocol, write its files; (row, extra JSON)."""
    from spinebench.evaluation.results import RESULT_COLUMNS, make_row
    from spinebench.models import create_model, model_info

    info = model_info(name)
    task = get_task(info["task"])
    seed_everything(seed)
    train, val, test = task.trainable(sets["train"], name), task.scorable(sets["val"]), task.scorable(sets["test"])
    if not len(train) or not len(val) or not len(test):
        raise SpinebenchError(f"{name} has {len(train)}/{len(val)}/{len(test)} train/val/test images it can use "
                              f"({task.name}); it needs some in every split")
    settings = ctx.settings(name, len(train))
    kwargs = {**task.model_kwargs(ctx.profile, settings), **_transfer_kwargs(name, ctx)}
    model = create_model(name, pretrained=ctx.pretrained, **kwargs)
    pretrain_s = _transfer_into(model, name, ctx, train, val, settings, seed)
    tag = f"{name}-s{seed}"
    fit = train_model(model, train, val, settings=settings, device=ctx.device, seed=seed,
                      checkpoint_path=ctx.run_dir / "checkpoints" / f"{tag}.pt", resume=ctx.resume,
                      log_path=ctx.run_dir / "logs" / f"{tag}.csv", progress=ctx.progress, ddp_rank=ctx.rank,
                      ddp_world=ctx.world)
    val_pred = fit["val_pred"]
    calibration = task.calibrate(model, val, settings, ctx.device, val_pred)  # on validation, as the thresholds
    tf = task.transform(model, settings.image_size, train=False)
    # scores in fp32 (``predict``), what the demo and `evaluate` compute from these weights; thresholds come from
    # the best epoch's validation predictions, which train_model computed in fp32 too (None after a resume)
    if task.thresholds and val_pred is None:
        val_pred = predict(model, val.with_transform(tf), ctx.device, batch_size=settings.batch_size)
    test_pred = predict(model, test.with_transform(tf), ctx.device, batch_size=settings.batch_size)
    scored = task.score(val_pred, test_pred, ctx.profile.n_boot, seed)
    metrics = scored["metrics"]
    input_size = task.input_size(model, settings)
    context = ctx.row_context(seed) | {"n_test": len(test)}
    row = make_row(**context, model=name, task=task.name, paper_name=info.get("paper_name", ""),
                   pretrained=bool(model.pretrained_loaded), epochs=fit["epochs_run"],
                   input_size="x".join(str(int(v)) for v in input_size), params_m=round(info["params_m"], 3),
                   train_seconds=round(fit["train_seconds"] + pretrain_s, 1),
                   latency_ms=round(measure_latency(model, test, ctx.device, settings.image_size), 2), status="ok",
                   **{k: v for k, v in metrics.items() if k in RESULT_COLUMNS and k not in context})
    if name in _transfer_sources(ctx):  # a later model of the run starts from this one
        ctx.trained[name] = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if ctx.rank == 0:
        task.write_predictions(ctx.run_dir / "predictions" / f"{tag}{task.predictions_suffix}.csv", test_pred,
                               scored, test)
        if save:  # weights/ keeps the first seed's model; every seed's row goes to the leaderboard
            _save_trained(model, name, task, ctx, seed, scored, settings, input_size, kwargs, fit, calibration)
    extra = {"history": fit["history"], "thresholds": scored["thresholds"], "best_epoch": fit["best_epoch"],
             "train_loss": fit["train_loss"], "settings": asdict(settings)}
    if calibration:
        extra["calibration"] = calibration
    if "grade_confusion" in metrics:
        extra["grade_confusion"] = metrics["grade_confusion"]
    return row, extra


def _transfer_needs(ctx: RunContext) -> dict[str, str]:
    """Each in-domain model of the profile -> the model of this run its start needs trained before it."""
    from spinebench.models.transfer import IN_DOMAIN

    return {m: IN_DOMAIN[m].needs for m in ctx.profile.transfer if m in IN_DOMAIN and IN_DOMAIN[m].needs}


def _transfer_sources(ctx: RunContext) -> set[str]:
    return set(_transfer_needs(ctx).values())


def _transfer_kwargs(name: str, ctx: RunContext) -> dict:
    """What the model must be built with for its in-domain start (a frozen body wants a GroupNorm FPN)."""
    if name not in ctx.profile.transfer:
        return {}
    from spinebench.models.transfer import IN_DOMAIN

    return dict(IN_DOMAIN[name].model_kwargs) if name in IN_DOMAIN else {}


def _transfer_into(model, name: str, ctx: RunContext, train, val, settings, seed: int) -> float:
    """In-domain transfer (``Profile.transfer``, plans in ``spinebench.models.transfer.IN_DOMAIN``): start the
    model's backbone from a classifier this run trained before it on the same training split, or from its own body
    pre-trained as a classifier here (its seconds, returned, count as the model's training time; the pre-training
    starts from the plan's ``start_from`` classifier of this run where there is one). Only this run's
    training split is ever used: weights of another run or split have seen this run's validation and test images.
    ``model.pretrained_source`` records it (``in-domain:<classifier>``); the row's ``pretrained`` column keeps
    meaning ImageNet weights."""
    from spinebench.models.transfer import IN_DOMAIN, init_in_domain, start_body_classifier

    if name not in ctx.profile.transfer or name not in IN_DOMAIN or model.pretrained_loaded:
        return 0.0  # ImageNet weights, where they arrived, come first
    plan, t0 = IN_DOMAIN[name], time.perf_counter()
    source = None  # the plan's provenance, unless the start differs from it
    if plan.needs and _run_trained(plan.needs, ctx) is None:
        log.warning("%s: %s, its in-domain start, was not trained earlier in this run: %s", name, plan.needs,
                    "its body is pre-trained from random init" if plan.start_from else "trained from random init")
        if not plan.start_from:
            return 0.0
        source = replace(plan, start_from=None).pretrained
    if plan.classifier.startswith("body:"):
        from spinebench.models.classifiers import fit_min_input

        body = plan.make_classifier()
        if source is None and plan.start_from:
            start_body_classifier(body, plan, ctx.trained[plan.start_from])
        budget = settings.extra.get("pretrain_s")
        size = ctx.profile.classifier.image_size
        cls_settings = replace(ctx.profile.classifier, final_checkpoint=False, time_budget_s=budget,
                               epochs=plan.pretrain_epochs or ctx.profile.classifier.epochs,
                               image_size=fit_min_input(size, body.min_input_size) if size else None)
        # validated only where that selects an epoch (val_every > 0): one validation after the last epoch picks
        # nothing, and the body classifier's thresholds are never used (Inception-ResNet-v2's took 10-12 s of the
        # quick run on a 2-core fp32 EPYC, cProfile)
        train_model(body, train, val if cls_settings.val_every else None, settings=cls_settings, device=ctx.device,
                    seed=seed, progress=False)
        state = body.state_dict()
    else:
        state = ctx.trained[plan.classifier]
    _, model.pretrained_source = init_in_domain(model, state, name, source=source)
    return time.perf_counter() - t0


def _run_trained(name: str, ctx: RunContext):
    """Classifier ``name``'s state dict as trained earlier in this run (kept in ``ctx.trained``, or read back from
    this run's weights when the run was resumed after it finished), or None."""
    if name not in ctx.trained:  # a resumed run: the source finished in an earlier session
        from spinebench.weights import read_records

        rec = read_records(ctx.weights_dir).get(name) if ctx.weights_dir.is_dir() else None
        if rec is not None and rec.run_id == ctx.run_id and rec.file and rec.path.is_file():
            ctx.trained[name] = rec.state_dict()
    return ctx.trained.get(name)


def _save_trained(model, name, task, ctx: RunContext, seed, scored, settings, input_size, kwargs, fit,
                  calibration: dict) -> Path:
    """Write the model and its :class:`~spinebench.weights.TrainedWeights` record (the one writer)."""
    from spinebench import __version__
    from spinebench.weights import TrainedWeights, data_kind

    data = " ".join(ctx.data)
    rec = TrainedWeights(
        model=name, task=task.name, thresholds=[float(t) for t in scored["thresholds"]],
        cache_side=ctx.profile.cache_side, image_size=list(settings.image_size) if settings.image_size else None,
        input_size=[int(v) for v in input_size], model_kwargs=kwargs, data=data, data_kind=data_kind(data),
        split_file=str(ctx.split_file), run_id=ctx.run_id, seed=seed,
        pretrained=getattr(model, "pretrained_source", None) or bool(model.pretrained_loaded),
        metrics={k: v for k, v in scored["metrics"].items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)},
        spinebench_version=__version__, git_commit=ctx.git_commit,
        extra={"device": str(ctx.device), "profile": ctx.profile.name, "best_epoch": fit["best_epoch"],
               "train_loss": fit["train_loss"], "train_seconds": round(fit["train_seconds"], 1),
               **({"calibration": calibration} if calibration else {})})
    return rec.save(model.cpu(), ctx.weights_dir)


def evaluate(*, weights_dir: str | os.PathLike = "weights", data: Sequence[str] = ("synth",),
             models: Sequence[str] | None = None, device: str = "auto", split: str = "test",
             split_file: str | None = None, split_seed: int = 0, out: str | os.PathLike | None = None,
             n_boot: int = 1000, progress: bool = True) -> list[dict]:
    """Score saved models on any data without training (e.g. synthetic-trained models on hybrid-real images).

    Thresholds are the ones chosen on the training run's validation split (from the weights record): nothing
    is tuned on the data being evaluated. ``split`` = test | val | train | all picks the images scored.
    Each model sees the images as its record preprocesses them (the training decode downscale, then its task's
    evaluation transform), in fp32 (``engine.train.predict``) as in the run that trained it. Rows have the
    leaderboard's columns.
    """
    from spinebench.evaluation.results import RESULT_COLUMNS, append_rows, error_row, make_row
    from spinebench.models import model_info
    from spinebench.weights import trained_records

    dev = resolve_device(device)
    records_w = trained_records(weights_dir)
    if not records_w:
        raise SpinebenchError(f"no trained models in {weights_dir}; run `python -m spinebench run-all` first")
    names = list(models) if models else list(records_w)
    missing = [m for m in names if m not in records_w]
    if missing:
        raise SpinebenchError(f"no weights for {', '.join(missing)} in {weights_dir} (have: {', '.join(records_w)})")
    # rendered sources (synth) at the size the largest of the models' training decodes kept
    records = load_records(data, max_side=max(records_w[m].cache_side for m in names))
    if split_file:
        apply_split_file(records, split_file)
    else:
        assign_splits(records, seed=split_seed)
    chosen = records if split == "all" else [r for r in records if r["split"] == split]
    if not chosen:
        raise SpinebenchError(f"no images in split {split!r} of {' '.join(data)}")
    by_side: dict[int, SpineDataset] = {}  # images decoded once per training downscale (usually one)
    commit = _git_commit()
    run_id = "eval-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows = []
    for name in names:
        try:
            rec = records_w[name]
            model = rec.load(dev)
            info = model_info(name)
            task = get_task(info["task"])
            if rec.cache_side not in by_side:
                by_side[rec.cache_side] = decoded_dataset(chosen, rec.cache_side)
            ds = task.scorable(by_side[rec.cache_side])
            if not len(ds):
                raise SpinebenchError(f"{name} ({task.name}) can score none of the chosen images")
            size = tuple(rec.image_size) if rec.image_size else None
            pred = predict(model, ds.with_transform(rec.transform()), dev)  # fp32, as in the training run's scores
            # the thresholds validated in training, unchanged: nothing is tuned on the data evaluated
            # (per finding; weights from runs before the either-finding rule also hold an 'any' one, not used)
            thresholds = list(rec.decision_thresholds()) if task.thresholds else []
            metrics = task.score_at(pred, thresholds, n_boot, 0)
            rows.append(make_row(run_id=run_id, model=name, task=task.name, paper_name=info.get("paper_name", ""),
                                 data=" ".join(data), split_file=split_file or "", n_test=len(ds),
                                 seed="" if rec.seed is None else rec.seed, pretrained=rec.imagenet,
                                 device=str(dev), precision="fp32", params_m=round(info["params_m"], 3),
                                 input_size="x".join(str(v) for v in rec.input_size or []),
                                 latency_ms=round(measure_latency(model, ds, dev, size), 2),
                                 git_commit=commit, status="ok",
                                 **{k: v for k, v in metrics.items() if k in RESULT_COLUMNS}))
        except SpinebenchError:
            raise
        except Exception as e:  # noqa: BLE001
            log.error("%s failed: %s", name, e)
            rows.append(error_row(name, e, run_id=run_id, data=" ".join(data), device=str(dev)))
    if out:
        append_rows(Path(out), rows)
    return rows


def _make_report(run_dir: Path) -> None:
    try:
        from spinebench import figures
    except ImportError:
        return
    try:
        figures.build_report(run_dir=run_dir, out=run_dir / "report")
    except Exception as e:  # noqa: BLE001 - a figure problem must not lose the run's results
        log.warning("report for %s failed: %s", run_dir, e)


def _dist_init(device: str) -> tuple[int, int]:
    """torchrun sets WORLD_SIZE/RANK: start DistributedDataParallel (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _dist_done(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
