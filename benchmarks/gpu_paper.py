"""The paper's protocol on one GPU, timed: ``run-all --profile paper --device cuda`` on ``synth hybrid:aasce=PATH``
under a hard wall limit, with GPU utilisation and memory sampled while it runs.

One command does everything: checks the GPU (``nvidia-smi``, ``torch.cuda``), prepares the data into the cache
(generates the synthetic set, renders the AASCE hybrid set) so that run-all's clock holds only decoding, training
and scoring, starts ``nvidia-smi ... -lms 500`` in the background, runs ``python -m spinebench run-all`` under
``timeout`` (whatever finished before the limit is still collected), and leaves in one folder (``--out``, default
``$OUT``) the files listed below.

Lanes (``--lanes``, default on a GPU: :data:`GPU_LANES`): one H200 is far from busy with one of these models (a
detector step is mostly Python and small kernels; SqueezeNet barely warms it), and one after another the seven
need ~20 minutes. So the models run as concurrent run-all processes on the one GPU ("lanes", each ``--models`` a
part of the seven, with the same data, split seed and profile, hence the same split: the split files are compared),
each model with a training time budget (``--time-budget`` per lane, shared equally by its models; the cosine
schedule follows the clock and the best validated state is kept). The lanes' run folders are merged into one
(``config.json`` lists the lanes; ``split.csv``, logs, metrics, predictions, one leaderboard, one weights folder of
hard links) and the report is drawn from it. ``--lanes 1`` is one plain run-all, the models in turn. (``run-all
--lanes N`` does the same inside the library; this script runs its lanes as separate commands instead, for a hard
wall limit on each and a log per lane, and plans them by hand for the GPU.)

    leaderboard.csv        the run's rows (rebuilt from metrics/*.json when run-all was stopped by the limit)
    weights_manifest.json  the weights manifest (the weights themselves stay in --work)
    config.json, run_summary.json, split.csv, logs/, metrics/, predictions/, report/ (its files up to 1 MB)
    lane<i>.log            each lane's run-all log (with lanes)
    gpu_timing.csv         per model: train and wall seconds, images/s, GPU utilisation (mean, max) and memory
    gpu_samples.csv        every nvidia-smi sample (unix time, utilisation %, memory used MB)
    gpu_paper.json         what ran: commands, limits, exit codes, GPU check, data, notes
    run_all.log            run-all's log

``gpu_timing.csv``: ``images_per_s`` is the sum of the per-epoch ``images`` over the sum of the per-epoch
``seconds`` of ``logs/<model>-s<seed>.csv`` (an epoch's seconds include its validation pass). A model's window
starts when its first epoch started (the log's last write minus the epochs' seconds) and ends when its metrics JSON
was written (training, validation, test scoring, latency, saving); utilisation and ``gpu_mem_used_max_mb``
(nvidia-smi: the whole device, the allocator's cache from earlier models included) are over that window;
``cuda_peak_allocated_mb`` is the model's own ``torch.cuda.max_memory_allocated``, recorded by run-all. The model
the wall limit stopped is ``unfinished`` (its window ends at the stop, its images/s are its finished epochs').
With lanes the windows overlap and the utilisation is the whole GPU's, shared by the models running then.

    bash benchmarks/gpu_paper.sh                       # on the GPU machine: all seven models, paper profile
    bash benchmarks/gpu_paper.sh --dry-run --out OUT   # anywhere: CPU, tiny data, 1 epoch, two models, two lanes
    python benchmarks/gpu_paper.py --pack-aasce .gpu/aasce2019  # a 1024 px copy of the AASCE set to carry along
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("gpu_paper")

TIMING_COLUMNS = ["model", "seed", "task", "status", "epochs", "train_seconds", "wall_seconds", "images",
                  "images_per_s", "gpu_util_mean", "gpu_util_max", "gpu_mem_used_max_mb", "cuda_peak_allocated_mb",
                  "gpu_samples", "window_start", "window_end", "note"]
REPORT_FILE_LIMIT = 1_000_000     # report files above this stay in the run folder (listed in gpu_paper.json)
COLLECT_RESERVE_S = 45            # kept back from run-all's limit to collect the outputs (and draw a late report)
DRY_MODELS = ["cls_squeezenet1_1", "det_faster_rcnn_inception_v2"]
DRY_SYNTH_N = 48
#: the seven models in five lanes of about equal GPU time: each detector and the Cobb model alone, the classifiers
#: in pairs of a slow and a fast one (H200 training img/s, bench_models: DenseNet 420 / SqueezeNet 2619,
#: Inception-v3 522 / ResNet-50 1011)
GPU_LANES = (("det_faster_rcnn_inception_resnet_v2",), ("det_faster_rcnn_inception_v2",), ("cobb_vertebra_resnet34",),
             ("cls_densenet121", "cls_squeezenet1_1"), ("cls_inception_v3", "cls_resnet50"))
LANE_THREADS = "3"   # OMP/MKL threads of each lane's main process: 16 cores shared by 5 lanes and their loaders
PACK_SIDE = 1024     # --pack-aasce: the paper profile's cache side (all that run-all keeps of a film)


def default_aasce() -> Path:
    """``$SPINEBENCH_AASCE``, else ``../shared/data/aasce2019`` beside the repository, else ``shared/data/...``
    inside it (where the GPU machine's copy of the working tree carries it)."""
    if os.environ.get("SPINEBENCH_AASCE"):
        return Path(os.environ["SPINEBENCH_AASCE"])
    beside = ROOT.parent / "shared" / "data" / "aasce2019"
    inside = ROOT / "shared" / "data" / "aasce2019"
    return beside if beside.exists() or not inside.exists() else inside


# ---------------------------------------------------------------- GPU check and sampling

def gpu_check(device_index: int) -> dict:
    """What this machine says about its GPU: nvidia-smi's name/memory/driver and torch's view."""
    out: dict = {"nvidia_smi": None, "torch_cuda": False, "torch_device": None}
    if shutil.which("nvidia-smi"):
        try:
            res = subprocess.run(["nvidia-smi", "-i", str(device_index),
                                  "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30)
            out["nvidia_smi"] = res.stdout.strip() if res.returncode == 0 else f"error: {res.stderr.strip()}"
        except (OSError, subprocess.TimeoutExpired) as e:
            out["nvidia_smi"] = f"error: {e}"
    code = ("import json, torch; ok = torch.cuda.is_available(); "
            f"print(json.dumps([ok, torch.cuda.get_device_name({device_index}) if ok else None, torch.__version__]))")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        ok, name, version = json.loads(res.stdout.strip().splitlines()[-1])
        out.update(torch_cuda=ok, torch_device=name, torch=version)
    except Exception as e:  # noqa: BLE001 - the check reports, it does not fail
        out["torch_error"] = str(e)
    return out


class GpuSampler:
    """``nvidia-smi --query-gpu=utilization.gpu,memory.used -lms 500`` in the background; each line is stamped
    with this machine's clock on arrival (the same clock as the run folder's file times)."""

    def __init__(self, path: Path, device_index: int = 0, interval_ms: int = 500):
        self.path, self.samples = path, []
        self._proc = subprocess.Popen(
            ["nvidia-smi", "-i", str(device_index), "--query-gpu=utilization.gpu,memory.used",
             "--format=csv,noheader,nounits", "-lms", str(interval_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with open(self.path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time", "gpu_util", "mem_used_mb"])
            for line in self._proc.stdout:
                parts = [p.strip() for p in line.split(",")]
                try:
                    sample = (time.time(), float(parts[0]), float(parts[1]))
                except (ValueError, IndexError):
                    continue  # "[N/A]" or a stray line
                self.samples.append(sample)
                w.writerow([f"{sample[0]:.3f}", sample[1], sample[2]])
                f.flush()

    def stop(self) -> list[tuple[float, float, float]]:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._thread.join(10)
        return self.samples


# ---------------------------------------------------------------- the timing table

def _read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def timing_rows(run_dir: Path, samples: list[tuple[float, float, float]] | None,
                stopped_at: float | None = None) -> list[dict]:
    """One row per model and seed of ``config.json`` (see the module docstring for what each column means).

    ``samples``: (unix time, utilisation %, memory used MB); None when there was no nvidia-smi (GPU columns empty).
    ``stopped_at``: when the wall limit stopped run-all. The model it was training (the first without a metrics
    JSON) is ``unfinished``, its window ends there (images/s from its finished epochs, if any); the models after it
    were ``not started``.
    """
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    rows, prev_end, stopped_seen = [], None, False
    for name in cfg["models"]:
        for seed in cfg["seeds"]:
            tag = f"{name}-s{seed}"
            log_path, metrics_path = run_dir / "logs" / f"{tag}.csv", run_dir / "metrics" / f"{tag}.json"
            epochs = _read_log(log_path)
            metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
            # stopped by the limit: the first model without metrics, and (lanes) any that had finished epochs
            running = not metrics and stopped_at is not None and (bool(epochs) or not stopped_seen)
            if not metrics and not running and not epochs:
                rows.append({"model": name, "seed": seed, "status": "not started"})
                continue
            stopped_seen = stopped_seen or running
            result = metrics.get("row", {})
            images = sum(_num(e.get("images")) for e in epochs)
            seconds = sum(_num(e.get("seconds")) for e in epochs)
            train_end = log_path.stat().st_mtime if epochs else None
            end = metrics_path.stat().st_mtime if metrics else stopped_at if running else train_end
            start = train_end - seconds if epochs else (prev_end if prev_end is not None else end)
            prev_end = end
            row = {"model": name, "seed": seed, "task": result.get("task", ""),
                   "status": result.get("status", "unfinished") if metrics else "unfinished",
                   "epochs": len(epochs),
                   "train_seconds": result.get("train_seconds", round(seconds, 1) if epochs else ""),
                   "wall_seconds": round(end - start, 1), "images": int(images) if epochs else "",
                   "images_per_s": round(images / seconds, 1) if seconds > 0 else "",
                   "cuda_peak_allocated_mb": metrics.get("cuda_peak_allocated_mb", ""),
                   "window_start": _iso(start), "window_end": _iso(end), "note": ""}
            if samples is None:
                row["note"] = "no nvidia-smi: GPU columns empty"
            else:
                inside = [s for s in samples if start <= s[0] <= end]
                row["gpu_samples"] = len(inside)
                if inside:
                    util = [s[1] for s in inside]
                    row.update(gpu_util_mean=round(sum(util) / len(util), 1), gpu_util_max=max(util),
                               gpu_mem_used_max_mb=max(s[2] for s in inside))
                else:
                    row["note"] = "no GPU sample inside the window"
            if row["status"] == "unfinished":
                what = f"{len(epochs)} epochs finished" if epochs else "no epoch finished, window from the model before"
                row["note"] = "; ".join(filter(None, [f"stopped by the wall limit ({what})", row["note"]]))
            rows.append(row)
    return rows


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------- collecting the outputs

def collect(run_dir: Path, weights_dir: Path, out: Path, summary: dict) -> None:
    """Copy the run folder's small files to ``out``; rebuild what a stopped run-all did not write."""
    for name in ("config.json", "split.csv", "leaderboard.csv", "run_summary.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out / name)
    for sub in ("logs", "metrics", "predictions"):   # predictions: per-source figures (real films only, ...)
        if (run_dir / sub).is_dir():
            shutil.copytree(run_dir / sub, out / sub, dirs_exist_ok=True)   # copy2: file times kept
    if not (out / "leaderboard.csv").is_file():
        sys.path.insert(0, str(ROOT))
        from spinebench.evaluation.results import append_rows

        rows = [json.loads(p.read_text())["row"] for p in sorted((run_dir / "metrics").glob("*.json"))]
        append_rows(out / "leaderboard.csv", rows)
        (out / ".leaderboard.csv.lock").unlink(missing_ok=True)   # append_rows' lock file: not an output
        summary["notes"].append(f"leaderboard.csv rebuilt from {len(rows)} metrics/*.json (run-all did not finish)")
    if not (out / "run_summary.json").is_file():
        (out / "run_summary.json").write_text(json.dumps(
            {"wall_seconds": summary.get("run_all_seconds"), "timed_out": summary.get("timed_out"),
             "written_by": "benchmarks/gpu_paper.py: run-all stopped before writing its own"}, indent=2))
    manifest = weights_dir / "manifest.json"
    if manifest.is_file():
        shutil.copy2(manifest, out / "weights_manifest.json")
    else:
        summary["notes"].append(f"no weights manifest in {weights_dir}: no model finished")
    report = run_dir / "report"
    skipped = []
    for p in sorted(report.rglob("*")) if report.is_dir() else []:
        if p.is_file():
            if p.stat().st_size > REPORT_FILE_LIMIT:
                skipped.append(f"{p.relative_to(run_dir)} ({p.stat().st_size / 1e6:.1f} MB)")
                continue
            dest = out / "report" / p.relative_to(report)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
    summary["report_files_left_in_run_folder"] = skipped


# ---------------------------------------------------------------- the command

def _smi_index(cuda_index: int) -> int:
    """nvidia-smi's index of torch's ``cuda:N`` (they differ when CUDA_VISIBLE_DEVICES picks GPUs by number)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if cuda_index < len(visible) and visible[cuda_index].isdigit():
        return int(visible[cuda_index])
    return cuda_index


def _child_env(cache: str | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if cache:
        env["SPINEBENCH_CACHE"] = cache
    env.setdefault("TQDM_MININTERVAL", "30")  # INFO logs in run_all.log, progress bars only every 30 s
    return env


def _spinebench(*args: str) -> list[str]:
    return [sys.executable, "-m", "spinebench", *args]


def _timed(cmd: list[str], timeout_s: float) -> list[str]:
    """``cmd`` under coreutils ``timeout``: TERM at the limit, KILL 15 s later."""
    return ["timeout", "--kill-after=15", f"{max(1, int(timeout_s))}", *cmd]


def _run(cmd: list[str], env: dict, log_file, timeout_s: float | None = None) -> int:
    """Run ``cmd`` with its output appended to ``log_file``; under coreutils ``timeout`` when given a limit (TERM,
    then KILL 15 s later), so a stopped run-all leaves its finished models' files behind."""
    if timeout_s is not None:
        cmd = _timed(cmd, timeout_s)
    log_file.write(f"\n$ {' '.join(cmd)}\n")
    log_file.flush()
    return subprocess.run(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT).returncode


def pack_aasce(src: Path, dst: Path, side: int = PACK_SIDE) -> int:
    """A copy of the AASCE training split with every film downscaled to ``side`` px on its longest side (JPEG q95)
    and the label CSVs (landmarks normalised to the image size, so they hold for any size), small enough to travel
    to a GPU machine (60 -> ~25 MB). The paper profile keeps 1024 px of each film, so the run sees the same films up
    to one re-encoding; the hybrid hardware is then drawn at that size instead of full size. Returns the image count."""
    from PIL import Image

    labels, images = Path("boostnet_labeldata/labels/training"), Path("boostnet_labeldata/data/training")
    if not (src / images).is_dir():
        raise SystemExit(f"gpu_paper: error: {src / images} not found (not an AASCE 2019 folder)")
    (dst / labels).mkdir(parents=True, exist_ok=True)
    (dst / images).mkdir(parents=True, exist_ok=True)
    for name in ("filenames.csv", "landmarks.csv", "angles.csv"):
        shutil.copy2(src / labels / name, dst / labels / name)
    n = 0
    for f in sorted((src / images).glob("*.jpg")):
        with Image.open(f) as im:
            im = im.convert("L")
            scale = min(1.0, side / max(im.size))
            if scale < 1.0:
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS)
            im.save(dst / images / f.name, quality=95)
        n += 1
    return n


def merge_lane_runs(lane_runs: list[Path | None], merged: Path, weights: Path, notes: list[str]) -> Path:
    """One run folder from the lanes' run folders (``spinebench.engine.lanes.merge_lanes``: config, split, logs,
    metrics, predictions, one weights folder of hard links), with its leaderboard and ``run_summary.json``."""
    sys.path.insert(0, str(ROOT))
    from spinebench.engine.lanes import lanes_summary, merge_lanes
    from spinebench.evaluation.results import append_rows

    rows = merge_lanes(lane_runs, merged, weights, notes)
    if rows:
        append_rows(merged / "leaderboard.csv", rows)
        (merged / ".leaderboard.csv.lock").unlink(missing_ok=True)
    summary = {**lanes_summary(lane_runs), "lanes": len([d for d in lane_runs if d is not None])}
    (merged / "run_summary.json").write_text(json.dumps(summary, indent=2))
    return merged


def _start(cmd: list[str], env: dict, log_path: Path, timeout_s: float) -> tuple[subprocess.Popen, object]:
    """Start ``cmd`` under ``timeout`` (:func:`_timed`), its output into ``log_path``."""
    cmd = _timed(cmd, timeout_s)
    f = open(log_path, "a")
    f.write(f"$ {' '.join(cmd)}\n")
    f.flush()
    return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT), f


def run_lanes(lanes: list[list[str]], base_cmd: list[str], work: Path, env: dict, out: Path, limit: float,
              lane_budget: float | None) -> list[int]:
    """Every lane's run-all at once under one wall limit; their exit codes (124/137: stopped by the limit)."""
    procs = []
    for i, lane in enumerate(lanes):
        d = work / "lanes" / str(i)
        cmd = [*base_cmd, "--models", *lane, "--out", str(d / "runs"), "--results", str(d / "results"),
               "--weights", str(d / "weights"), "--no-report"]
        if lane_budget:
            cmd += ["--time-budget", f"{lane_budget / len(lane):g}"]
        d.mkdir(parents=True, exist_ok=True)
        lane_env = {**env, "OMP_NUM_THREADS": LANE_THREADS, "MKL_NUM_THREADS": LANE_THREADS} if len(lanes) > 1 else env
        procs.append(_start(_spinebench(*cmd), lane_env, out / f"lane{i}.log", limit))
    codes = []
    for proc, f in procs:
        codes.append(proc.wait())
        f.close()
    return codes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT"),
                   help="folder for the outputs (default $OUT, else <work>/out)")
    p.add_argument("--work", help="run folders, weights and results (default runs/gpu_paper/<time>)")
    p.add_argument("--aasce", default=str(default_aasce()),
                   help="AASCE 2019 folder for hybrid:aasce=PATH (default $SPINEBENCH_AASCE or "
                        "../shared/data/aasce2019 beside the repository); 'none' or a missing folder: synth only")
    p.add_argument("--budget", type=float, help="hard wall limit of this whole command in seconds "
                                                "(default 570; --dry-run 300)")
    p.add_argument("--device", help="default cuda (--dry-run: cpu)")
    p.add_argument("--models", nargs="+", help="default: every model (--dry-run: %s)" % " ".join(DRY_MODELS))
    p.add_argument("--lanes", type=int, help="concurrent run-all processes: 1 = one run-all, the models in turn; "
                                             "default: GPU_LANES on a GPU (five), one lane a model with --dry-run")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="training seconds of each lane, shared equally by its models (default 400 with lanes on a "
                        "GPU: the lanes then end ~440 s after they start; 20 with --dry-run; else the profile's)")
    p.add_argument("--aux-shape-weight", type=float, metavar="W",
                   help="run-all --aux-shape-weight for every lane (the classifiers' train-time spine-shape loss)")
    p.add_argument("--cache", help="SPINEBENCH_CACHE for the generated data (default: the usual cache)")
    p.add_argument("--pack-aasce", metavar="DIR", help="only write a 1024 px copy of --aasce to DIR (to carry to a "
                                                       "GPU machine) and exit")
    p.add_argument("--dry-run", action="store_true",
                   help=f"CPU, quick profile, 1 epoch, {DRY_SYNTH_N} synthetic images (+ the AASCE hybrid set), "
                        "two models in two lanes: proves the script and its outputs without a GPU")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.pack_aasce:
        n = pack_aasce(Path(args.aasce), Path(args.pack_aasce))
        log.info("%d films at <= %d px in %s", n, PACK_SIDE, args.pack_aasce)
        return 0

    t0 = time.time()
    budget = args.budget or (300.0 if args.dry_run else 570.0)
    device = args.device or ("cpu" if args.dry_run else "cuda")
    dev_index = _smi_index(int(device.split(":")[1]) if device.startswith("cuda:") else 0)
    work = Path(args.work or ROOT / "runs" / "gpu_paper" / _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    out = Path(args.out) if args.out else work / "out"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    env = _child_env(args.cache)
    summary: dict = {"command": [sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
                     "mode": "dry-run" if args.dry_run else "gpu", "budget_s": budget, "device": device,
                     "work": str(work), "notes": [],
                     "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    logf = open(out / "run_all.log", "a")

    # 1. the GPU
    summary["gpu"] = gpu = gpu_check(dev_index)
    log.info("GPU check: %s", gpu)
    if device.startswith("cuda") and not gpu.get("torch_cuda"):
        print(f"gpu_paper: error: --device {device} but torch sees no CUDA device ({gpu}); "
              "use --dry-run on a CPU", file=sys.stderr)
        (out / "gpu_paper.json").write_text(json.dumps(summary, indent=2))
        return 2
    sampler = None
    if gpu["nvidia_smi"] and not str(gpu["nvidia_smi"]).startswith("error"):
        sampler = GpuSampler(out / "gpu_samples.csv", dev_index)
    else:
        write_csv(out / "gpu_samples.csv", [], ["time", "gpu_util", "mem_used_mb"])
        summary["notes"].append("no nvidia-smi on this machine: no GPU samples, GPU columns of gpu_timing.csv empty")

    # 2. the data, prepared into the cache (synthetic set generated, hybrid hardware rendered)
    aasce = None if args.aasce.lower() == "none" else Path(args.aasce).resolve()
    if aasce is not None and not aasce.exists():
        summary["notes"].append(f"AASCE data not found at {aasce}: synth only")
        log.warning("AASCE data not found at %s: running on synth only", aasce)
        aasce = None
    t_prep = time.time()
    if args.dry_run:
        synth_dir = work / f"synth{DRY_SYNTH_N}"
        if not (synth_dir / "manifest.csv").is_file():
            _run(_spinebench("data", "synth", "--out", str(synth_dir), "--n", str(DRY_SYNTH_N)), env, logf)
        data = [f"synth={synth_dir}"]
    else:
        data = ["synth"]
    if aasce is not None:
        data.append(f"hybrid:aasce={aasce}")
    summary["data"] = data
    rc = _run(_spinebench("data", "inspect", *data), env, logf, timeout_s=budget - COLLECT_RESERVE_S)
    summary["prep_seconds"] = round(time.time() - t_prep, 1)
    if rc != 0:
        summary["notes"].append(f"data preparation failed (exit {rc}): see run_all.log")

    # 3. run-all under the wall limit: one process, or concurrent lanes
    models = args.models or (DRY_MODELS if args.dry_run else None)
    if args.lanes == 1:
        lanes = [list(models)] if models else []
    elif args.dry_run or args.lanes:
        names = list(models) if models else [m for lane in GPU_LANES for m in lane]
        k = args.lanes or len(names)
        lanes = [names[i::k] for i in range(min(k, len(names)))]
    else:
        lanes = [list(lane) for lane in GPU_LANES if not models or set(lane) <= set(models)]
    lane_budget = args.time_budget or ((20.0 if args.dry_run else 400.0) if len(lanes) > 1 else None)
    summary["lanes"], summary["lane_time_budget_s"] = lanes, lane_budget
    runs = work / "runs"
    before = set(runs.iterdir()) if runs.is_dir() else set()
    base = ["run-all", "--data", *data, "--device", device, "--pretrained", "none"]
    base += ["--profile", "quick", "--epochs", "1"] if args.dry_run else ["--profile", "paper"]
    if args.aux_shape_weight is not None:
        base += ["--aux-shape-weight", f"{args.aux_shape_weight:g}"]
    limit = budget - (time.time() - t0) - COLLECT_RESERVE_S
    summary["run_all_limit_s"] = round(limit)
    t_run = time.time()
    if len(lanes) > 1:
        summary["run_all_command"] = " ".join(["python", "-m", "spinebench", *base, "--models", "<lane>",
                                               "--time-budget", "<lane budget / models>"])
        codes = run_lanes(lanes, base, work, env, out, limit, lane_budget) if limit > 0 else [124]
        rc = next((c for c in codes if c != 0), 0)
        summary["lane_rcs"] = codes
    else:
        cmd = [*base, "--out", str(runs), "--results", str(work / "results"), "--weights", str(work / "weights")]
        if models:
            cmd += ["--models", *models]
        if args.time_budget:
            cmd += ["--time-budget", f"{args.time_budget:g}"]
        summary["run_all_command"] = " ".join(["python", "-m", "spinebench", *cmd])
        rc = _run(_spinebench(*cmd), env, logf, timeout_s=limit) if limit > 0 else 124
    t_stop = time.time()
    summary["run_all_seconds"] = round(t_stop - t_run, 1)
    summary["run_all_rc"] = rc
    summary["timed_out"] = rc in (124, 137)
    if summary["timed_out"]:
        summary["notes"].append(f"run-all stopped by the wall limit ({limit:.0f} s): unfinished models are marked")
    samples = sampler.stop() if sampler else None

    # 4. collect
    if len(lanes) > 1:
        sys.path.insert(0, str(ROOT))
        from spinebench.engine.lanes import lane_run_dirs

        merged = runs / (_dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-lanes")
        try:
            new = [merge_lane_runs(lane_run_dirs(work / "lanes", len(lanes)), merged, work / "weights",
                                   summary["notes"])]
        except RuntimeError as e:
            new = []
            summary["notes"].append(str(e))
    else:
        new = sorted(set(runs.iterdir()) - before) if runs.is_dir() else []
    if not new or not (new[-1] / "config.json").is_file():
        summary["notes"].append("run-all wrote no run folder: see run_all.log")
        (out / "gpu_paper.json").write_text(json.dumps(summary, indent=2))
        print(f"gpu_paper: error: run-all wrote no run folder (exit {rc}); see {out / 'run_all.log'}", file=sys.stderr)
        return 1
    run_dir = summary["run_dir"] = new[-1]
    left = budget - (time.time() - t0) - 5
    if not (run_dir / "report").is_dir() and left > 15 and any((run_dir / "metrics").glob("*.json")):
        _run(_spinebench("figures", "--run", str(run_dir)), env, logf, timeout_s=min(left, 60))
    collect(run_dir, work / "weights", out, summary)
    rows = timing_rows(run_dir, samples, stopped_at=t_stop if summary["timed_out"] else None)
    write_csv(out / "gpu_timing.csv", rows, TIMING_COLUMNS)
    summary["run_dir"] = str(run_dir)
    summary["total_seconds"] = round(time.time() - t0, 1)
    (out / "gpu_paper.json").write_text(json.dumps(summary, indent=2, default=str))
    logf.close()
    for r in rows:
        log.info("%-36s %-11s train %6s s  %7s img/s  util %s/%s %%  peak %s MB", r["model"], r.get("status"),
                 r.get("train_seconds", ""), r.get("images_per_s", ""), r.get("gpu_util_mean", "-"),
                 r.get("gpu_util_max", "-"), r.get("cuda_peak_allocated_mb") or r.get("gpu_mem_used_max_mb") or "-")
    log.info("done in %.0f s (run-all %.0f s, exit %s); outputs in %s", summary["total_seconds"],
             summary["run_all_seconds"], rc, out)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
