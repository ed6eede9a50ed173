"""What the demo says about the models: model cards (from their weights records) and the leaderboard view."""

from __future__ import annotations

import math
import os
from pathlib import Path

from spinebench.tasks import TASKS  # the tasks the predictor can run and the demo shows (spinebench.tasks)
from spinebench.weights import TrainedWeights, read_records

#: Order of the demo's panels by task; tasks registered later follow in registration order.
PANEL_ORDER = ("detection", "classification", "cobb")


def data_label(spec: str) -> str:
    """A data spec without local paths (``aasce=/home/x/data`` -> ``aasce``)."""
    return " ".join(s.split("=", 1)[0] for s in str(spec).split()) or "unknown"


def pretrained_text(pretrained: bool | str) -> str:
    """What was really loaded before training, for people: the source's name, or yes / no (random init)."""
    if isinstance(pretrained, str):
        return pretrained
    return "yes" if pretrained else "no (random init)"


def model_card(name: str, record: TrainedWeights | None = None) -> str:
    """Markdown card of one model: architecture, parameters, training data, ImageNet weights, metrics, intended use.

    The facts come from the model's weights record when it is trained (the demo and the Hub card show the same)."""
    from spinebench.models import model_info

    info = model_info(name)
    size = (record.image_size or record.input_size) if record else None
    lines = [f"### {name}", f"*Paper's name: {info.get('paper_name') or '—'}; task: {info['task']}*", "",
             info.get("card", ""), "",
             f"- **Parameters:** {info['params_m']:.2f} M",
             f"- **Input size:** {'x'.join(str(v) for v in (size or info['input_size']))}"]
    if record is not None:
        lines += [f"- **Training data:** {data_label(record.data)} ({record.data_kind})",
                  f"- **ImageNet/COCO weights used:** {pretrained_text(record.pretrained)}"]
        if record.thresholds:
            t = record.decision_thresholds()
            lines.append(f"- **Decision thresholds (chosen on validation):** implant {t[0]:.3f}, scoliosis {t[1]:.3f}")
        else:
            lines.append("- **Decision thresholds:** —")
        lines.append(f"- **Training run:** {record.run_id or '—'}")
        metrics = record.metrics
        keys = [k for k in ("any_sensitivity", "any_specificity", "accuracy", "loss", "implant_auroc",
                            "scoliosis_auroc", "map_50", "smape", "mae_pt", "mae_mt", "mae_tl") if k in metrics]
        if keys:
            lines += ["", "| metric | test value | 95% CI |", "| --- | --- | --- |"]
            for k in keys:
                lo, hi = metrics.get(f"{k}_lo"), metrics.get(f"{k}_hi")
                ci = f"{lo:.3f} – {hi:.3f}" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) \
                    and math.isfinite(lo) and math.isfinite(hi) else "—"
                v = metrics[k]
                lines.append(f"| {k} | {v:.3f} | {ci} |" if isinstance(v, (int, float)) and math.isfinite(v)
                             else f"| {k} | — | — |")
    else:
        lines.append("- **Trained weights:** none in this deployment")
    lines += ["", "**Intended use:** research and teaching only. Not a medical device; not for diagnosis."]
    return "\n".join(lines)


def model_cards(weights_dir: str | os.PathLike) -> dict[str, str]:
    """Cards of every registered model of a shown task, with its record's facts where trained."""
    from spinebench.models import list_models, model_info

    records = read_records(weights_dir) if Path(weights_dir).is_dir() else {}
    return {n: model_card(n, records.get(n)) for n in list_models() if model_info(n)["task"] in TASKS}


def panel_models() -> list[str]:
    """Registered models the demo gives a panel: detectors, then classifiers, then Cobb models (registry order)."""
    from spinebench.models import list_models

    order = [t for t in PANEL_ORDER if t in TASKS] + [t for t in TASKS if t not in PANEL_ORDER]
    return [n for task in order for n in list_models(task)]


def results_file(results_dir: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
                 ) -> Path | None:
    """The leaderboard CSV to show: ``results/leaderboard.csv``, else one shipped beside the weights (Hub)."""
    from spinebench.paths import repo_root
    from spinebench.predict.sources import default_weights_dir

    for path in (Path(results_dir or repo_root() / "results") / "leaderboard.csv",
                 Path(weights_dir or default_weights_dir()) / "leaderboard.csv"):
        if path.is_file():
            return path
    return None


def leaderboard_view(path: str | os.PathLike | None, data: str | None = None):
    """(data choices, leaderboard DataFrame, paper-vs-ours plotly figure) for the rows of one data set.

    ``data`` = None or "all" keeps every row; figures and table come from ``spinebench.figures``.
    """
    import pandas as pd

    from spinebench import figures
    from spinebench.evaluation.results import read_rows
    from spinebench.figures.plots import empty_figure

    if path is None:
        msg = "No results yet: run `python -m spinebench run-all` (or start the app once to train the quick profile)."
        return ["all"], pd.DataFrame({"message": [msg]}), empty_figure("Paper vs spinebench", msg)
    rows = read_rows(path)
    choices = ["all"] + sorted({data_label(r.get("data", "")) for r in rows if r.get("data", "") != ""})
    if data and data != "all":
        rows = [r for r in rows if data_label(r.get("data", "")) == data]
    from spinebench.models import model_info

    present = {r.get("model") for r in rows}
    models = [m for m in panel_models() if m in present and model_info(m)["task"] != "cobb"]
    table = figures.leaderboard_table(rows)
    if "Data" in table:
        table["Data"] = table["Data"].map(data_label)
    fig = figures.comparison_figure(rows, models, title=f"Paper vs spinebench ({data or 'all'} data)")
    return choices, table, fig
