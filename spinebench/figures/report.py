"""``build_report``: a run folder (or a leaderboard CSV) -> tables, figures, report.html and report.md.

Output layout (``out``)::

    report.html     one self-contained file: plotly.js inline once, every figure and table, the caveats
    report.md       the same text, figures as PNG links (HTML links when static export was unavailable)
    tables/         table5_detection_api.{csv,md,tex}, table6_transfer_learning.{csv,md,tex}, leaderboard.{csv,md}
    figures/        <name>.html (+ .png, .svg): fig8_detection_api, fig9_transfer_learning, roc_curves,
                    confusion_matrices, training_curves, detection_map, cobb_scatter, cobb_bland_altman,
                    test_images; plotly.min.js beside them for the HTML files

Nothing written depends on the clock or on dict/file-system order: the same inputs give byte-identical CSV,
Markdown, LaTeX and HTML (PNGs: identical pixels).
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from spinebench import FINDINGS, __version__
from spinebench.data.sources import data_kind
from spinebench.errors import SpinebenchError
from spinebench.evaluation.results import COBB_PREDICTION_COLUMNS, LOG_COLUMNS, PREDICTION_COLUMNS
from spinebench.figures import export, plots, tables
from spinebench.figures.tables import DASH, model_order, num, select_rows, short_name
from spinebench.paper import CITATION, PAPER_RESULTS, PAPER_TOTAL_IMAGES

log = logging.getLogger(__name__)

FIGURE_CAPTIONS = {
    "fig8_detection_api": "Figure 8 (paper) vs ours: the two Faster R-CNN detectors. Grey: the paper's value; blue: "
                          "ours with its 95% CI. Sensitivity/specificity are abnormal vs normal images.",
    "fig9_transfer_learning": "Figure 9 (paper) vs ours: the four ImageNet classifiers. Grey: the paper's value; "
                              "blue: ours with its 95% CI.",
    "roc_curves": "ROC curves on the test split per finding, all models on one plot (first seed of each model).",
    "confusion_matrices": "Confusion matrices on the test split at the thresholds chosen on validation; cells "
                          "hold image counts, shading the share of their true row.",
    "training_curves": "Training curves: train loss, validation loss and validation AUROC per epoch.",
    "detection_map": "Detection mAP (COCO) per detector and class on the test split, 95% CIs where computed.",
    "cobb_scatter": "Cobb angles: predicted vs true per region (dashed: identity).",
    "cobb_bland_altman": "Cobb angles: Bland-Altman plot (solid: bias; dashed: 95% limits of agreement).",
    "test_images": "Test images with each model's probabilities (I = implant, S = scoliosis; + = called positive; "
                   "green = right, red = wrong).",
}


# ---------------------------------------------------------------------------------------------------- inputs
@dataclass
class RunData:
    """Everything the report reads from a run folder (or only ``rows`` for a leaderboard CSV)."""

    rows: list[dict]
    source: str
    run_dir: Path | None = None
    config: dict = field(default_factory=dict)
    split: pd.DataFrame | None = None
    predictions: dict[str, pd.DataFrame] = field(default_factory=dict)
    any_thresholds: dict[str, float] = field(default_factory=dict)
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)
    cobb: dict[str, pd.DataFrame] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _read_csv(path: Path, columns: Sequence[str], what: str, problems: list[str]) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
    except Exception as e:  # noqa: BLE001 - one unreadable file costs one figure, not the report
        problems.append(f"{what} {path.name} could not be read ({type(e).__name__}); left out")
        return None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        problems.append(f"{what} {path.name} lacks column(s) {', '.join(missing)}; left out")
        return None
    return df


def _seed_files(folder: Path, model: str, seeds: Sequence, suffix: str) -> Path | None:
    """The file of the model's lowest seed that exists (seeds of the rows the tables use first)."""
    for s in sorted({int(num(x)) for x in seeds if math.isfinite(num(x))}):
        p = folder / f"{model}-s{s}{suffix}"
        if p.is_file():
            return p
    found = sorted(folder.glob(f"{model}-s*{suffix}"))
    found = [p for p in found if p.name[len(model) + 2:-len(suffix)].isdigit()]
    return found[0] if found else None


def load_results(path: str | os.PathLike) -> RunData:
    from spinebench.evaluation.results import read_rows

    path = Path(path)
    if path.is_dir():
        raise SpinebenchError(f"--results wants a leaderboard CSV, got a folder: {path} (use --run for run folders)")
    rows = _checked_rows(read_rows(path), path)
    return RunData(rows=rows, source=str(path))


def _checked_rows(rows: list[dict], path: Path) -> list[dict]:
    if not rows:
        raise SpinebenchError(f"no result rows in {path}")
    if "model" not in rows[0] or "status" not in rows[0]:
        raise SpinebenchError(f"{path} is not a spinebench results CSV (no 'model'/'status' columns)")
    return rows


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a run folder written by :func:`spinebench.engine.runner.run_all` (see its docstring)."""
    from spinebench.evaluation.results import read_rows

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SpinebenchError(f"run folder not found: {run_dir}")
    problems: list[str] = []
    lb = run_dir / "leaderboard.csv"
    if lb.is_file():
        rows = _checked_rows(read_rows(lb), lb)
    else:
        rows = []
        for p in sorted((run_dir / "metrics").glob("*.json")):
            try:
                rows.append(json.loads(p.read_text())["row"])
            except (OSError, ValueError, KeyError, TypeError):
                problems.append(f"metrics file {p.name} is unreadable; left out")
        if not rows:
            raise SpinebenchError(f"{run_dir} holds no results (no leaderboard.csv, no metrics/*.json): "
                                  "is it a spinebench run folder?")
    config = {}
    if (run_dir / "config.json").is_file():
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except ValueError:
            problems.append("config.json is not valid JSON; run configuration unknown")
    else:
        problems.append("config.json is missing; run configuration unknown")
    split = None
    if (run_dir / "split.csv").is_file():
        split = _read_csv(run_dir / "split.csv", ("image_id", "patient_id", "split"), "split file", problems)
    data = RunData(rows=rows, source=str(run_dir), run_dir=run_dir, config=config, split=split, problems=problems)

    for model, mine in select_rows(rows).items():
        seeds = [r.get("seed") for r in mine]
        p = _seed_files(run_dir / "predictions", model, seeds, ".csv")
        if p is not None:
            df = _read_csv(p, PREDICTION_COLUMNS, "predictions", problems)
            if df is not None and len(df):
                data.predictions[model] = df.sort_values("image_id", kind="mergesort").reset_index(drop=True)
        m = _seed_files(run_dir / "metrics", model, seeds, ".json")
        if m is not None:
            try:
                t = json.loads(m.read_text()).get("thresholds") or []
                if len(t) > len(FINDINGS):
                    data.any_thresholds[model] = float(t[len(FINDINGS)])
            except (OSError, ValueError, TypeError, AttributeError):
                problems.append(f"metrics file {m.name} is unreadable; thresholds unknown")
        lg = _seed_files(run_dir / "logs", model, seeds, ".csv")
        if lg is not None:
            df = _read_csv(lg, LOG_COLUMNS, "training log", problems)
            if df is not None and len(df):
                data.histories[model] = df
        c = _seed_files(run_dir / "predictions", model, seeds, "-cobb.csv")
        if c is not None:
            df = _read_csv(c, COBB_PREDICTION_COLUMNS, "Cobb predictions", problems)
            if df is not None and len(df):
                data.cobb[model] = df.sort_values("image_id", kind="mergesort").reset_index(drop=True)
    return data


# ------------------------------------------------------------------------------------------------------ data
KIND_TEXT = {
    "synthetic": "computer-generated radiographs, no real patient: the numbers show that the pipeline works and "
                 "how models rank on this synthetic task, and say nothing about real X-rays",
    "hybrid": "real radiographs with surgical hardware rendered onto them: implant findings are synthetic, "
              "scoliosis labels come from the real images",
    "real": "real images from the named data set",
}


def _load_test_records(config: dict, split: pd.DataFrame | None, problems: list[str]) -> dict[str, dict]:
    """image_id -> record with its split, for the data counts and the image grid; {} when the data is not here."""
    specs = config.get("data") or []
    if not specs:
        return {}
    try:
        from spinebench.data.sources import load_records
        from spinebench.engine.profiles import profile_cache_side

        records = load_records(specs, max_side=profile_cache_side(config))  # the run's own rendering of synth
    except Exception as e:  # noqa: BLE001 - the data may live on another machine
        problems.append(f"the run's data ({' '.join(specs)}) could not be loaded here ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:160]}); finding counts per split and the test-image grid "
                        "are left out")
        return {}
    splits = dict(zip(split["image_id"], split["split"])) if split is not None else {}
    out = {}
    for r in records:
        r = dict(r)
        r["split"] = splits.get(r["image_id"], r.get("split", ""))
        out[r["image_id"]] = r
    return out


def _split_counts(split: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    df = split.copy()
    df["source"] = df["image_id"].astype(str).str.split("/", n=1).str[0]
    header = ["source", "train images (patients)", "val images (patients)", "test images (patients)", "total"]
    body = []
    for src in sorted(df["source"].unique()) + ["all"]:
        sub = df if src == "all" else df[df["source"] == src]
        cells = [src]
        for s in ("train", "val", "test"):
            part = sub[sub["split"] == s]
            cells.append(f"{len(part)} ({part['patient_id'].nunique()})")
        cells.append(f"{len(sub)} ({sub['patient_id'].nunique()})")
        body.append(cells)
    return header, body


def _finding_counts(records: Mapping[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["split", "images", "implant", "scoliosis", "both", "normal"]
    body = []
    for s in ("train", "val", "test"):
        rs = [r for r in records.values() if r.get("split") == s]
        imp = sum(int(r["implant"]) == 1 for r in rs)
        sco = sum(int(r["scoliosis"]) == 1 for r in rs)
        both = sum(int(r["implant"]) == 1 and int(r["scoliosis"]) == 1 for r in rs)
        normal = sum(int(r["implant"]) == 0 and int(r["scoliosis"]) == 0 for r in rs)
        body.append([s, str(len(rs)), str(imp), str(sco), str(both), str(normal)])
    return header, body


def _grid_items(data: RunData, records: Mapping[str, dict], n: int) -> list[dict]:
    """Up to ``n`` test images, chosen round-robin over implant / scoliosis / both / normal (sorted ids), each with
    every model's probabilities."""
    from spinebench.io import load_image

    if not data.predictions or not records or n <= 0:
        return []
    preds = {m: df.set_index("image_id") for m, df in data.predictions.items()}
    ids = sorted(set().union(*(set(df.index) for df in preds.values())) & set(records))
    buckets: dict[tuple, list[str]] = {(1, 0): [], (0, 1): [], (1, 1): [], (0, 0): []}
    for iid in ids:
        r = records[iid]
        buckets.setdefault((int(r["implant"]), int(r["scoliosis"])), []).append(iid)
    chosen: list[str] = []
    while len(chosen) < min(n, len(ids)):
        for key in ((1, 0), (0, 1), (1, 1), (0, 0)):
            if buckets[key] and len(chosen) < n:
                chosen.append(buckets[key].pop(0))
    items = []
    for iid in chosen:
        r = records[iid]
        try:
            img, _ = load_image(r["path"])
        except Exception as e:  # noqa: BLE001
            data.problems.append(f"test image {iid} could not be loaded ({type(e).__name__}); not in the grid")
            continue
        truth = [f for f in FINDINGS if int(r[f]) == 1]
        name = iid.split("/", 1)[-1]
        title = f"{name[:26]}{'…' if len(name) > 26 else ''}: {' + '.join(truth) if truth else 'normal'}"
        lines = []
        for m in model_order(preds):
            if iid not in preds[m].index:
                continue
            row = preds[m].loc[iid]
            lines.append((m, [(f, float(row[f"prob_{f}"]), int(row[f"pred_{f}"]), int(row[f"true_{f}"]))
                              for f in FINDINGS]))
        items.append({"image": img, "title": title, "lines": lines})
    return items


# --------------------------------------------------------------------------------------------------- caveats
def caveats(data: RunData, kinds: Sequence[str], static_ok: bool | None) -> list[str]:
    """The honest list: what these numbers are and are not."""
    sel = select_rows(data.rows)
    out = []
    if "synthetic" in kinds:
        out.append("The data is synthetic: no number here is evidence about real patients or real X-rays.")
    if "hybrid" in kinds:
        out.append("Hybrid data: implants are rendered onto real radiographs, so implant detection is measured on "
                   "synthetic hardware and is likely easier than on real post-operative films.")
    out.append(f"The paper's {PAPER_TOTAL_IMAGES} images (private Vietnamese hospital X-rays, MRI slices, AASCE) are "
               "not available: paper and ours are different data, and the paper reports no confidence intervals.")
    out.append("The paper's loss (TF Object Detection API total loss, Keras training loss) and its validation "
               "accuracy are not the quantities we report (test BCE, exact-match test accuracy); compare "
               "sensitivity and specificity only.")
    sizes = sorted({str(r.get("input_size")) for rs in sel.values() for r in rs
                    if r.get("status") == "ok" and r.get("input_size")})
    if sizes:
        out.append(f"The paper resized every image to 48 x 48 pixels; our input sizes: {', '.join(sizes)}.")
    not_pre = [short_name(m) for m, rs in sel.items()
               if any(r.get("status") == "ok" and r.get("pretrained") is False for r in rs)]
    if not_pre:
        out.append(f"Trained from random initialisation, without ImageNet/COCO weights: {', '.join(not_pre)}; the "
                   "paper fine-tuned pretrained models, so these are not like-for-like.")
    profile = data.config.get("profile")
    if profile == "quick":
        out.append("Profile 'quick': smoke-scale training (few epochs, capped steps, small inputs) to check the "
                   "pipeline on a CPU; do not cite these numbers. Use --profile paper on a GPU.")
    n_test = sorted({int(num(r.get("n_test"))) for rs in sel.values() for r in rs
                     if math.isfinite(num(r.get("n_test")))})
    if n_test and min(n_test) < 100:
        out.append(f"Small test split ({', '.join(map(str, n_test))} images): the 95% CIs (bootstrap over patients) "
                   "are wide; differences inside them are not evidence that one model is better.")
    failed = [f"{short_name(m)} ({rs[-1].get('error') or 'error'})" for m, rs in sel.items()
              if not any(r.get("status") == "ok" for r in rs)]
    if failed:
        out.append("Failed models (no metrics): " + "; ".join(failed))
    missing = [short_name(p["model"]) for p in PAPER_RESULTS if p["model"] not in sel]
    if missing:
        out.append(f"Not in these results: {', '.join(missing)}.")
    if any(r.get("task") == "detection" for rs in sel.values() for r in rs):
        out.append("Detectors' image-level probabilities are their highest box score per class (0 without a box).")
    if data.run_dir is None:
        out.append("Built from a leaderboard CSV: the run-specific figures (ROC, confusion matrices, training "
                   "curves, Cobb agreement, test images) need the run folder (--run) and were skipped.")
    if static_ok is False:
        out.append("Static PNG/SVG export failed here for some figures (see the log); those are interactive "
                   "HTML only.")
    out.extend(data.problems)
    return out


# ---------------------------------------------------------------------------------------------------- render
class _Doc:
    """A tiny document model rendered to both Markdown and HTML, so the two reports never disagree."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str, strong: bool = False) -> None:
        self.blocks.append(("p", text, strong))

    def ul(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], body: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", list(header), [list(map(str, r)) for r in body]))

    def figure(self, name: str, fig, files: Mapping[str, Path], caption: str) -> None:
        self.blocks.append(("figure", name, fig, dict(files), caption))

    def links(self, items: Sequence[tuple[str, str]]) -> None:
        self.blocks.append(("links", list(items)))

    def markdown(self, out: Path) -> str:
        parts = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                parts.append("#" * b[1] + " " + b[2])
            elif kind == "p":
                parts.append(f"**{b[1]}**" if b[2] else b[1])
            elif kind == "ul":
                parts.append("\n".join(f"- {x}" for x in b[1]))
            elif kind == "table":
                parts.append(tables.markdown_table(b[1], b[2]).rstrip("\n"))
            elif kind == "figure":
                _, name, _, files, caption = b
                rel = {k: Path(v).relative_to(out).as_posix() for k, v in files.items()}
                if "png" in rel:
                    parts.append(f"![{caption}]({rel['png']})\n\n*{caption}* "
                                 f"([interactive]({rel['html']}), [SVG]({rel.get('svg', rel['png'])}))")
                else:
                    parts.append(f"*{caption}* ([interactive figure]({rel['html']}))")
            elif kind == "links":
                parts.append(" · ".join(f"[{t}]({u})" for t, u in b[1]))
        return "\n\n".join(parts) + "\n"

    def html(self, title: str) -> str:
        import plotly.offline

        e = html.escape
        body = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif kind == "p":
                body.append(f"<p class='strong'>{e(b[1])}</p>" if b[2] else f"<p>{e(b[1])}</p>")
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{e(h)}</th>" for h in b[1])
                rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in b[2])
                body.append(f"<div class='tw'><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")
            elif kind == "figure":
                _, name, fig, _, caption = b
                body.append(f"<figure>{export.figure_html(fig, name)}<figcaption>{e(caption)}</figcaption></figure>")
            elif kind == "links":
                body.append("<p>" + " · ".join(f"<a href='{e(u)}'>{e(t)}</a>" for t, u in b[1]) + "</p>")
        style = ("body{font-family:Arial,Helvetica,sans-serif;max-width:1500px;margin:2em auto;padding:0 1.5em;"
                 "color:#222;line-height:1.45}h1{font-size:1.7em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;"
                 "padding-bottom:.2em}table{border-collapse:collapse;font-size:.88em;margin:.5em 0}"
                 "th,td{border:1px solid #ccc;padding:.25em .55em;text-align:left;vertical-align:top}"
                 "th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}.tw{overflow-x:auto}"
                 "p.strong{font-weight:bold;background:#fff4d6;border-left:4px solid #e69f00;padding:.5em .8em}"
                 "figure{margin:1.2em 0;overflow-x:auto}figcaption{color:#555;font-size:.9em;margin-top:.3em}")
        return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
                f"<title>{e(title)}</title>\n<style>{style}</style>\n"
                f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return path


def _leaderboard_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    return buf.getvalue()


def _config_table(config: dict) -> tuple[list[str], list[list[str]]]:
    keys = ("run_id", "data", "profile", "models", "seeds", "device", "precision", "pretrained", "image_size",
            "epochs", "split_mode", "split_seed", "split_counts", "world_size", "git_commit", "torch", "started")
    body = []
    for k in keys + tuple(sorted(set(config) - set(keys))):
        if k not in config:
            continue
        v = config[k]
        if isinstance(v, (list, tuple)):
            v = ", ".join(map(str, v))
        elif isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        body.append([k, DASH if v is None or v == "" else str(v)])
    return ["setting", "value"], body


def _models_table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "task", "status", "ImageNet/COCO weights", "seeds", "epochs", "input size", "params (M)",
              "train s", "latency ms"]
    body = []
    for m, rs in select_rows(rows).items():
        r = rs[0]
        ok = [x for x in rs if x.get("status") == "ok"]
        pre = {x.get("pretrained") for x in ok}
        body.append([short_name(m), str(r.get("task", "")), r.get("status", "") if not ok else "ok",
                     "mixed" if len(pre) > 1 else ("yes" if pre == {True} else "no" if pre == {False} else DASH),
                     ", ".join(str(x.get("seed")) for x in ok) or DASH, str(r.get("epochs", "")) or DASH,
                     str(r.get("input_size", "")) or DASH, tables.fmt_num(num(r.get("params_m")), 1),
                     tables.fmt_num(tables.estimate(rs, "train_seconds").value, 0),
                     tables.fmt_num(tables.estimate(rs, "latency_ms").value, 1)])
    return header, body


def build_report(run_dir: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *,
                 results: str | os.PathLike | None = None, static: bool = True, n_images: int = 8) -> Path:
    """Write tables, figures, report.html and report.md for a run folder (``run_dir``) or a leaderboard CSV
    (``results``: the run-specific figures are skipped, and the report says so). Returns ``out``.

    ``out`` defaults to ``<run_dir>/report`` (or ``report/`` beside the CSV). ``static=False`` skips PNG/SVG.
    ``n_images``: test images in the grid (0 to skip loading images).
    """
    if (run_dir is None) == (results is None):
        raise SpinebenchError("give either a run folder (--run) or a results CSV (--results), not both or neither")
    data = load_run(run_dir) if run_dir is not None else load_results(results)
    out = Path(out) if out is not None else (Path(run_dir) / "report" if run_dir is not None
                                              else Path(results).parent / "report")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SpinebenchError(f"cannot create output folder {out}: {e.strerror}") from None
    rows = data.rows
    config = data.config
    run_id = config.get("run_id") or (data.run_dir.name if data.run_dir else Path(data.source).name)

    # ---- tables
    table_files: dict[str, Path] = {}
    for number, (stem, _) in tables.PAPER_TABLES.items():
        for ext, text in tables.paper_table_files(rows, number).items():
            table_files[f"{stem}.{ext}"] = _write_text(out / "tables" / f"{stem}.{ext}", text)
    lb = tables.leaderboard_table(rows)
    table_files["leaderboard.csv"] = _write_text(out / "tables" / "leaderboard.csv", _leaderboard_csv(lb))
    lb_md = tables.markdown_table(list(lb.columns), lb.astype(str).values.tolist())
    table_files["leaderboard.md"] = _write_text(out / "tables" / "leaderboard.md", lb_md)

    # ---- figures
    figs: dict[str, object] = {}
    skipped: list[str] = []
    for number, name, title in ((5, "fig8_detection_api", "Figure 8: detection API models, paper vs ours"),
                                (6, "fig9_transfer_learning", "Figure 9: transfer-learning models, paper vs ours")):
        models = [p["model"] for p in PAPER_RESULTS if p["table"] == number]
        figs[name] = plots.comparison_figure(rows, models, title=title)
    if any(math.isfinite(num(r.get("map_50"))) for rs in select_rows(rows).values() for r in rs):
        figs["detection_map"] = plots.detection_map_figure(rows)
    else:
        skipped.append("detection mAP: no detector with detection metrics")
    records: dict[str, dict] = {}
    if data.run_dir is not None:
        if data.predictions:
            figs["roc_curves"] = plots.roc_figure(data.predictions)
            figs["confusion_matrices"] = plots.confusion_figure(data.predictions, data.any_thresholds)
        else:
            skipped.append("ROC curves and confusion matrices: no predictions/*.csv")
        if data.histories:
            figs["training_curves"] = plots.training_figure(data.histories)
        else:
            skipped.append("training curves: no logs/*.csv")
        if data.cobb:
            figs["cobb_scatter"], figs["cobb_bland_altman"] = plots.cobb_figures(data.cobb)
        else:
            skipped.append("Cobb-angle scatter and Bland-Altman: no Cobb model in this run "
                           "(predictions/<model>-s<seed>-cobb.csv)")
        if n_images > 0:
            records = _load_test_records(config, data.split, data.problems)
            items = _grid_items(data, records, n_images)
            if items:
                figs["test_images"] = plots.image_grid_figure(items)
            else:
                skipped.append("test-image grid: no test images with predictions could be loaded")
    else:
        skipped.append("ROC curves, confusion matrices, training curves, Cobb agreement and the test-image grid: "
                       "built from a results CSV, they need a run folder (--run)")
    files = export.write_figures(figs, out / "figures", static=static)
    static_ok = None if not static or not figs else all("png" in f for f in files.values())

    # ---- data statement
    specs = config.get("data") or sorted({str(r.get("data")) for r in rows if r.get("data")})
    if isinstance(specs, str):
        specs = specs.split()
    spec_list = [s for item in specs for s in str(item).split()]
    kinds = [data_kind(s) for s in spec_list]
    overall = "synthetic" if set(kinds) == {"synthetic"} else "hybrid" if "hybrid" in kinds else \
        "real" if set(kinds) == {"real"} else "mixed"

    doc = _Doc()
    doc.h(1, f"spinebench report: {run_id}")
    if kinds:
        doc.p(f"Data: {overall.upper()}. " + "; ".join(f"{s} is {k}: {KIND_TEXT[k]}"
                                                      for s, k in zip(spec_list, kinds)) + ".", strong=True)
    doc.p(f"Reimplementation of: {CITATION}")
    doc.p(f"Source of results: {'run folder' if data.run_dir else 'results CSV'} {data.source}.")

    doc.h(2, "Run configuration")
    if config:
        doc.table(*_config_table(config))
    else:
        doc.p("No run configuration (built from a results CSV, or config.json missing).")
    doc.table(*_models_table(rows))

    doc.h(2, "Data")
    if data.split is not None:
        doc.p("Images (patients) per source and split, from the run's split.csv (patient-level split: no patient "
              "is in two splits).")
        doc.table(*_split_counts(data.split))
    else:
        counts = sorted({(str(r.get("data")), str(r.get("n_train")), str(r.get("n_val")), str(r.get("n_test")))
                         for r in rows if r.get("status") == "ok"})
        doc.table(["data", "train", "val", "test"], [list(c) for c in counts])
    if records:
        doc.p("Findings per split (an image can carry both):")
        doc.table(*_finding_counts(records))

    doc.h(2, "The paper's tables, reproduced")
    for number, (stem, title) in tables.PAPER_TABLES.items():
        df = tables.paper_table(rows, number)
        header, body = tables.paper_table_display(df)
        doc.h(3, title)
        doc.table(header, body)
        doc.links([(f"{stem}.{ext}", f"tables/{stem}.{ext}") for ext in ("csv", "md", "tex")])
    doc.ul(tables.table_notes(tables.paper_table(rows, 6)))

    doc.h(2, "Figures")
    for name in figs:
        doc.figure(name, figs[name], files[name], FIGURE_CAPTIONS.get(name, name))
    if skipped:
        doc.p("Not drawn:")
        doc.ul(skipped)

    doc.h(2, "Leaderboard")
    doc.p("Every metric with its 95% CI (bootstrap over patients); sensitivity/specificity are abnormal vs normal.")
    doc.table(list(lb.columns), lb.astype(str).values.tolist())
    doc.links([("leaderboard.csv", "tables/leaderboard.csv"), ("leaderboard.md", "tables/leaderboard.md")])

    doc.h(2, "Caveats")
    doc.ul(caveats(data, kinds, static_ok))
    doc.p(f"Generated by spinebench {__version__}.")

    _write_text(out / "report.md", doc.markdown(out))
    _write_text(out / "report.html", doc.html(f"spinebench report: {run_id}"))
    log.info("report written to %s", out / "report.html")
    return out
