"""Result rows -> the paper's Tables 5 and 6 (paper value beside ours with its 95% CI) and the leaderboard table.

Which rows count: per model, the rows of the latest run (last ``run_id`` in file order) that has an ``ok`` row for
it, all its seeds together. With one seed a cell is that row's value and its patient-bootstrap CI; with several
it is the mean over seeds and an interval spanning the seeds' CIs (smallest lower, largest upper bound): a
conservative envelope, said in the table notes.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import pandas as pd

from spinebench.paper import PAPER_RESULTS, paper_row

DASH = "—"
#: The paper's table metrics -> our result columns. Sensitivity/specificity are abnormal-vs-normal ("any").
PAPER_METRICS = {"sensitivity": "any_sensitivity", "specificity": "any_specificity",
                 "accuracy": "accuracy", "loss": "loss"}
#: Our result column -> the paper's key (for the comparison figures).
PAPER_KEY_OF = {v: k for k, v in PAPER_METRICS.items()}
METRIC_LABELS = {
    "any_sensitivity": "Sensitivity", "any_specificity": "Specificity", "accuracy": "Accuracy", "loss": "Loss",
    "implant_auroc": "AUROC implant", "scoliosis_auroc": "AUROC scoliosis", "any_auroc": "AUROC any",
    "implant_sensitivity": "Sensitivity implant", "implant_specificity": "Specificity implant",
    "scoliosis_sensitivity": "Sensitivity scoliosis", "scoliosis_specificity": "Specificity scoliosis",
    "map": "mAP@[.5:.95]", "map_50": "mAP@.5", "smape": "SMAPE (%)",
    "smape_real": "SMAPE real films (%)", "mae_pt": "MAE PT (°)",
    "mae_mt": "MAE MT (°)", "mae_tl": "MAE TL (°)",
}
PAPER_TABLES = {
    5: ("table5_detection_api", "Table 5: detection \"API\" models (Faster R-CNN)"),
    6: ("table6_transfer_learning", "Table 6: transfer-learning classifiers"),
}


def num(v) -> float:
    """A cell as float; NaN for "", None, text or bool-less junk (CSV rows mix numbers and blanks)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def model_order(models: Iterable[str]) -> list[str]:
    """The paper's models first (Table 5 then 6, in its order), then any others alphabetically: one fixed order
    for every table and figure."""
    models = set(models)
    ordered = [p["model"] for p in PAPER_RESULTS if p["model"] in models]
    return ordered + sorted(models - set(ordered))


def short_name(model: str) -> str:
    """Display name: registry name without its task prefix (``cls_densenet121`` -> ``densenet121``)."""
    for prefix in ("cls_", "det_"):
        if model.startswith(prefix):
            model = model[len(prefix):]
            break
    return model.replace("faster_rcnn_", "frcnn_")


def select_rows(rows: Iterable[Mapping]) -> dict[str, list[dict]]:
    """Per model (in :func:`model_order`), the rows of its latest run with an ``ok`` row (all seeds, by seed);
    a model that only ever failed keeps its last ``error`` row so tables can say it failed."""
    rows = [dict(r) for r in rows if r.get("model")]
    out: dict[str, list[dict]] = {}
    for model in model_order({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        ok = [r for r in mine if r.get("status") == "ok"]
        if ok:
            run = ok[-1].get("run_id", "")
            chosen = [r for r in ok if r.get("run_id", "") == run]
            out[model] = sorted(chosen, key=lambda r: (num(r.get("seed")), str(r.get("seed"))))
        else:
            out[model] = [mine[-1]]
    return out


@dataclass(frozen=True)
class Estimate:
    """One metric of one model: value and 95% CI (NaN where unknown), over ``n`` seeds."""

    value: float
    lo: float
    hi: float
    n: int

    def fmt(self, digits: int = 2) -> str:
        return fmt_ci(self.value, self.lo, self.hi, digits)


def estimate(model_rows: Sequence[Mapping], key: str) -> Estimate:
    """Aggregate ``key`` over a model's ok rows (see the module docstring for several seeds)."""
    ok = [r for r in model_rows if r.get("status") == "ok"]
    vals = [num(r.get(key)) for r in ok]
    vals = [v for v in vals if math.isfinite(v)]
    if not vals:
        return Estimate(math.nan, math.nan, math.nan, 0)
    value = sum(vals) / len(vals)
    los = [v for v in (num(r.get(f"{key}_lo")) for r in ok) if math.isfinite(v)]
    his = [v for v in (num(r.get(f"{key}_hi")) for r in ok) if math.isfinite(v)]
    if len(ok) == 1:
        lo, hi = (los[0] if los else math.nan), (his[0] if his else math.nan)
    else:
        lo, hi = (min(los) if los else math.nan), (max(his) if his else math.nan)
    return Estimate(value, lo, hi, len(vals))


def fmt_num(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}" if _finite(num(v)) else DASH


def fmt_ci(v: float, lo: float, hi: float, digits: int = 2) -> str:
    """``0.91 [0.85, 0.96]``; the bare value when the CI is unknown; an em dash when there is no value."""
    if not _finite(num(v)):
        return DASH
    if _finite(num(lo)) and _finite(num(hi)):
        return f"{v:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
    return f"{v:.{digits}f}"


def fmt_paper(v) -> str:
    """The paper's number as printed there (0.81, 0.935, 2.274): at least two decimals, no trailing noise."""
    if v is None or not _finite(num(v)):
        return DASH
    s = f"{float(v):.3f}".rstrip("0")
    return s + "0" * max(0, 2 - len(s.split(".")[1]))


def _status_of(model_rows: Sequence[Mapping]) -> str:
    if not model_rows:
        return "not run"
    ok = [r for r in model_rows if r.get("status") == "ok"]
    return "ok" if ok else f"{model_rows[-1].get('status') or 'error'}"


def _pretrained_of(model_rows: Sequence[Mapping]) -> str:
    vals = {bool(r.get("pretrained")) for r in model_rows if r.get("status") == "ok" and r.get("pretrained") != ""}
    if not vals:
        return DASH
    return "mixed" if len(vals) > 1 else ("yes" if vals.pop() else "no")


# ------------------------------------------------------------------------------------------------ paper tables
def paper_table(rows: Iterable[Mapping], table: int) -> pd.DataFrame:
    """Table 5 or 6 as numbers: one row per model of the paper's table, the paper's value and ours (mean, 95% CI
    bounds) for sensitivity, specificity, accuracy and loss. NaN where there is no value."""
    if table not in PAPER_TABLES:
        raise ValueError(f"the paper has result tables 5 and 6, not {table}")
    sel = select_rows(rows)
    out = []
    for p in PAPER_RESULTS:
        if p["table"] != table:
            continue
        mine = sel.get(p["model"], [])
        rec = {"model": p["model"], "paper_name": p["paper_name"], "status": _status_of(mine),
               "pretrained": _pretrained_of(mine), "n_seeds": sum(r.get("status") == "ok" for r in mine),
               "n_test": num(mine[0].get("n_test")) if mine else math.nan,
               "data": str(mine[0].get("data", "")) if mine else ""}
        for metric, key in PAPER_METRICS.items():
            e = estimate(mine, key)
            rec[f"paper_{metric}"] = num(p.get(metric))
            rec[f"ours_{metric}"], rec[f"ours_{metric}_lo"], rec[f"ours_{metric}_hi"] = e.value, e.lo, e.hi
        out.append(rec)
    return pd.DataFrame(out)


def paper_table_display(df: pd.DataFrame, digits: int = 2) -> tuple[list[str], list[list[str]]]:
    header = ["Model (paper)", "Ours"]
    for metric in PAPER_METRICS:
        header += [f"{metric.capitalize()} paper", f"{metric.capitalize()} ours [95% CI]"]
    body = []
    for r in df.to_dict("records"):
        ours = short_name(r["model"]) + ("" if r["status"] == "ok" else f" ({r['status']})")
        cells = [r["paper_name"], ours]
        for metric in PAPER_METRICS:
            cells.append(fmt_paper(r[f"paper_{metric}"]))
            cells.append(fmt_ci(r[f"ours_{metric}"], r[f"ours_{metric}_lo"], r[f"ours_{metric}_hi"], digits))
        body.append(cells)
    return header, body


def table_notes(df: pd.DataFrame) -> list[str]:
    """Footnotes every rendering of a paper table carries: what is compared, and what is not comparable."""
    notes = [
        "Sensitivity/specificity: abnormal (implant or scoliosis) vs normal images on our test split; an image is "
        "abnormal when either finding passes its own threshold chosen on validation; 95% CI by bootstrap over "
        "patients.",
        "Accuracy: ours is exact-match accuracy (both findings right) on test; the paper's is a validation "
        "accuracy. Loss: ours is test binary cross-entropy; the paper's is its framework's training loss "
        "(TF Object Detection API total loss for Table 5). Neither compares directly.",
        "The paper's 598 images (200 private hospital X-rays, 300 MRI slices, 98 AASCE) are not available; the "
        "columns compare methods, not the same data.",
    ]
    seeds = sorted({int(n) for n in df.get("n_seeds", []) if n and n > 1})
    if seeds:
        notes.append("Models with several seeds: mean over seeds; the interval spans the seeds' CIs.")
    return notes


def _csv_text(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(df.columns)
    for rec in df.itertuples(index=False):
        w.writerow([(f"{v:.4f}" if math.isfinite(v) else "") if isinstance(v, float) else v for v in rec])
    return buf.getvalue()


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "°": r"$^\circ$", DASH: "--",
        '"': "''"}


def _tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(s))


def latex_paper_table(df: pd.DataFrame, table: int, digits: int = 2) -> str:
    """A booktabs ``table`` (needs ``\\usepackage{booktabs}``): two sub-columns, paper and ours, per metric."""
    _, title = PAPER_TABLES[table]
    _, body = paper_table_display(df, digits)
    n_metrics = len(PAPER_METRICS)
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        rf"\caption{{{_tex_escape(title)}: the paper's values beside ours (95\% CI). "
        + _tex_escape(" ".join(table_notes(df))) + "}",
        rf"\label{{tab:spinebench-table{table}}}",
        r"\begin{tabular}{ll" + "rl" * n_metrics + "}",
        r"\toprule",
        " & ".join(["", ""] + [rf"\multicolumn{{2}}{{c}}{{{m.capitalize()}}}" for m in PAPER_METRICS]) + r" \\",
        " ".join(rf"\cmidrule(lr){{{3 + 2 * i}-{4 + 2 * i}}}" for i in range(n_metrics)),
        " & ".join(["Model (paper)", "Ours"] + ["Paper", "Ours [95\\% CI]"] * n_metrics) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(_tex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def paper_table_files(rows: Iterable[Mapping], table: int) -> dict[str, str]:
    """The three renderings of Table ``table``: {"csv": numbers, "md": display, "tex": booktabs}."""
    df = paper_table(rows, table)
    _, title = PAPER_TABLES[table]
    header, body = paper_table_display(df)
    md = f"**{title}**\n\n" + markdown_table(header, body) + "\n" + "".join(f"- {n}\n" for n in table_notes(df))
    return {"csv": _csv_text(df), "md": md, "tex": latex_paper_table(df, table)}


# ------------------------------------------------------------------------------------------------- leaderboard
LEADERBOARD_METRICS = ("any_sensitivity", "any_specificity", "accuracy", "loss", "implant_auroc", "scoliosis_auroc",
                       "map_50")
COBB_METRICS = ("smape", "smape_real", "mae_pt", "mae_mt", "mae_tl")


def leaderboard_table(rows: Iterable[Mapping]) -> pd.DataFrame:
    """One display row per model (the rows :func:`select_rows` keeps): status, data, ImageNet weights, each metric
    as ``0.91 [0.85, 0.96]`` with the paper's sensitivity/specificity beside ours, timings. Strings throughout:
    made for showing (the demo's Leaderboard tab, report.md), not for computing."""
    sel = select_rows(rows)
    has_cobb = any(r.get("task") == "cobb" for rs in sel.values() for r in rs)
    out = []
    for model, mine in sel.items():
        first = mine[0]
        p = paper_row(model) or {}
        rec = {"Model": short_name(model), "Paper name": p.get("paper_name") or first.get("paper_name", ""),
               "Task": first.get("task", ""), "Status": _status_of(mine), "Data": str(first.get("data", "")),
               "Seeds": str(sum(r.get("status") == "ok" for r in mine)), "ImageNet": _pretrained_of(mine)}
        for key in LEADERBOARD_METRICS:
            rec[METRIC_LABELS[key]] = estimate(mine, key).fmt(2)
            if key in PAPER_KEY_OF and key in ("any_sensitivity", "any_specificity"):
                rec[f"{METRIC_LABELS[key]} (paper)"] = fmt_paper(p.get(PAPER_KEY_OF[key]))
        if has_cobb:
            for key in COBB_METRICS:
                rec[METRIC_LABELS[key]] = estimate(mine, key).fmt(1)
        rec["Train s"] = fmt_num(estimate(mine, "train_seconds").value, 0)
        rec["Latency ms"] = fmt_num(estimate(mine, "latency_ms").value, 1)
        if rec["Status"] != "ok":
            rec["Status"] += f": {first.get('error', '')}"[:120] if first.get("error") else ""
        out.append(rec)
    return pd.DataFrame(out)
