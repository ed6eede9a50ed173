"""The plotly figures: paper-vs-ours comparisons (the paper's Figures 8 and 9) and the figures beyond the paper
(ROC, confusion matrices, training curves, detection mAP, Cobb-angle agreement, test images).

Every function takes plain data (result rows, per-model prediction DataFrames) and returns a
``plotly.graph_objects.Figure`` with a fixed size, so the report, the CLI and the demo draw the same thing.
Nothing here reads files.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape as html_escape
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from spinebench import FINDINGS
from spinebench.figures.tables import (METRIC_LABELS, PAPER_KEY_OF, estimate, fmt_paper, model_order, num,
                                       select_rows, short_name)
from spinebench.paper import PAPER_RESULTS, paper_row

PAPER_COLOR = "#a6a6a6"
OURS_COLOR = "#1f77b4"
#: One colour per model, the same in every figure (Okabe-Ito-like, readable in colour-blind vision and print).
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#F0E442", "#999999")
TEMPLATE = "plotly_white"
FONT = dict(family="Arial, Helvetica, sans-serif", size=13)
GROUPS = (*FINDINGS, "any")
RATE_METRICS = {"any_sensitivity", "any_specificity", "accuracy", "implant_auroc", "scoliosis_auroc", "any_auroc",
                "map", "map_50"}


def model_colors(models: Sequence[str]) -> dict[str, str]:
    """Colour per model: the paper's six keep fixed colours; others follow alphabetically."""
    fixed = [p["model"] for p in PAPER_RESULTS]
    others = sorted(set(models) - set(fixed))
    order = fixed + others
    return {m: _PALETTE[order.index(m) % len(_PALETTE)] for m in models}


def _layout(fig: go.Figure, title: str, width: int, height: int, subtitle: str | None = None, **kw) -> go.Figure:
    kw.setdefault("margin", dict(l=60, r=20, t=100 if subtitle else 90, b=60))
    t = dict(text=title, x=0.01, xanchor="left", font=dict(size=17))
    if subtitle:
        t["subtitle"] = dict(text=subtitle, font=dict(size=12, color="#555"))
    fig.update_layout(title=t, template=TEMPLATE, font=FONT, width=width, height=height, **kw)
    return fig


def empty_figure(title: str, message: str, width: int = 700, height: int = 300) -> go.Figure:
    """A figure that says why there is nothing to draw (kept in the report so the gap is visible)."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#555"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, width, height)


# ------------------------------------------------------------------------------------------ paper comparison
def comparison_figure(rows: Sequence[Mapping], models: Sequence[str],
                      metrics: Sequence[str] = ("any_sensitivity", "any_specificity", "accuracy", "loss"),
                      title: str | None = None) -> go.Figure:
    """Paper bars (grey) beside ours (blue, 95% CI error bars), one panel per metric, one group per model.

    ``rows``: result rows (any number of runs; :func:`select_rows` picks each model's latest run). Metrics
    without a paper counterpart show ours alone; a model we have no ok row for shows the paper's bar alone.
    """
    sel = select_rows(rows)
    models = list(models)
    labels = []
    for m in models:
        mine = sel.get(m, [])
        status = "" if any(r.get("status") == "ok" for r in mine) else "failed" if mine else "not run"
        labels.append(short_name(m) + (f"<br>({status})" if status else ""))
    titles = [METRIC_LABELS.get(m, m) for m in metrics]
    # many models: panels in two columns so bars stay wide enough to carry their values
    ncols = len(metrics) if len(models) <= 4 else min(2, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.07,
                        vertical_spacing=0.22 if nrows > 1 else 0.0)
    for k, metric in enumerate(metrics):
        i = k + 1
        rc = dict(row=k // ncols + 1, col=k % ncols + 1)
        paper_vals = []
        for m in models:
            p = paper_row(m) or {}
            v = p.get(PAPER_KEY_OF.get(metric, ""), None)
            paper_vals.append(float(v) if v is not None else None)
        est = [estimate(sel.get(m, []), metric) for m in models]
        ours = [e.value if math.isfinite(e.value) else None for e in est]
        plus = [e.hi - e.value if math.isfinite(e.hi) and math.isfinite(e.value) else 0 for e in est]
        minus = [e.value - e.lo if math.isfinite(e.lo) and math.isfinite(e.value) else 0 for e in est]
        if any(v is not None for v in paper_vals):
            fig.add_trace(go.Bar(
                name="paper", x=labels, y=paper_vals, marker_color=PAPER_COLOR, legendgroup="paper",
                showlegend=i == 1, text=[fmt_paper(v) if v is not None else "" for v in paper_vals],
                textposition="inside", insidetextanchor="start", textangle=0,
                textfont=dict(color="#222", size=12),
                hovertemplate="%{x}<br>paper: %{y:.3f}<extra></extra>"), **rc)
        fig.add_trace(go.Bar(
            name="ours (95% CI)", x=labels, y=ours, marker_color=OURS_COLOR, legendgroup="ours",
            showlegend=i == 1, error_y=dict(type="data", symmetric=False, array=plus, arrayminus=minus,
                                            color="#222", thickness=1.5, width=4),
            text=[f"{v:.2f}" if v is not None else "" for v in ours], textposition="inside",
            insidetextanchor="start", textangle=0, textfont=dict(color="white", size=12),
            customdata=[[e.lo, e.hi, e.n] for e in est],
            hovertemplate="%{x}<br>ours: %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}]"
                          "<br>seeds: %{customdata[2]}<extra></extra>"), **rc)
        if metric in RATE_METRICS:
            fig.update_yaxes(range=[0, 1.05], **rc)
        else:
            top = max([v for v in paper_vals + [e.hi if math.isfinite(e.hi) else e.value for e in est]
                       if v is not None and math.isfinite(v)] or [1.0])
            fig.update_yaxes(range=[0, top * 1.08], **rc)
        fig.update_xaxes(tickangle=-30 if max(len(s) for s in labels) > 10 else 0, **rc)
    width = max(640, 120 + ncols * (70 + 66 * len(models)))
    _layout(fig, title or "Paper vs spinebench", width, 120 + 380 * nrows, barmode="group", bargap=0.2,
            bargroupgap=0.04, uniformtext=dict(minsize=9, mode="hide"),
            subtitle="Grey: the paper. Blue: ours on the test split, 95% CI. Sensitivity/specificity: abnormal "
                     "(implant or scoliosis) vs normal.",
            legend=dict(orientation="h", yanchor="bottom", y=1.1, xanchor="right", x=1))
    return fig


# ---------------------------------------------------------------------------------------------- predictions
def _group_arrays(pred: pd.DataFrame, group: str, any_threshold: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, score, decision) of one finding, or of 'any' (abnormal vs normal: score = highest probability,
    decision by the 'any' threshold when known, else either finding flagged), as the metrics protocol does."""
    if group != "any":
        return (pred[f"true_{group}"].to_numpy(int), pred[f"prob_{group}"].to_numpy(float),
                pred[f"pred_{group}"].to_numpy(int))
    y = np.column_stack([pred[f"true_{f}"].to_numpy(int) for f in FINDINGS]).max(1)
    s = np.column_stack([pred[f"prob_{f}"].to_numpy(float) for f in FINDINGS]).max(1)
    if any_threshold is not None and math.isfinite(any_threshold):
        d = (s >= any_threshold).astype(int)
    else:
        d = np.column_stack([pred[f"pred_{f}"].to_numpy(int) for f in FINDINGS]).max(1)
    return y, s, d


def roc_figure(predictions: Mapping[str, pd.DataFrame], title: str = "ROC curves on the test split") -> go.Figure:
    """One panel per finding (implant, scoliosis, abnormal vs normal), one curve per model, AUROC in the legend
    box of each panel. ``predictions``: model -> the runner's predictions CSV as a DataFrame."""
    from sklearn.metrics import roc_auc_score, roc_curve

    models = model_order(predictions)
    colors = model_colors(models)
    names = {"implant": "Implant (Lum)", "scoliosis": "Scoliosis (sco)", "any": "Abnormal vs normal"}
    fig = make_subplots(rows=1, cols=3, subplot_titles=[names[g] for g in GROUPS], horizontal_spacing=0.06)
    for c, group in enumerate(GROUPS, start=1):
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color="#bbb", dash="dash", width=1),
                                 showlegend=False, hoverinfo="skip"), row=1, col=c)
        auc_lines = []
        for m in models:
            y, s, _ = _group_arrays(predictions[m], group)
            if y.min() == y.max():
                auc_lines.append(f"{short_name(m)}: n/a")
                continue
            fpr, tpr, _ = roc_curve(y, s)
            auc = roc_auc_score(y, s)
            auc_lines.append(f"<span style='color:{colors[m]}'>■</span> {short_name(m)} {auc:.2f}")
            fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", line=dict(color=colors[m], width=2, shape="hv"),
                                     name=short_name(m), legendgroup=m, showlegend=c == 1,
                                     hovertemplate=f"{short_name(m)}<br>FPR %{{x:.2f}}, TPR %{{y:.2f}}<br>"
                                                   f"AUROC {auc:.3f}<extra></extra>"), row=1, col=c)
        fig.add_annotation(text="AUROC<br>" + "<br>".join(auc_lines), xref=f"x{c} domain" if c > 1 else "x domain",
                           yref=f"y{c} domain" if c > 1 else "y domain", x=0.98, y=0.02, xanchor="right",
                           yanchor="bottom", align="left", showarrow=False, bgcolor="rgba(255,255,255,0.85)",
                           bordercolor="#ccc", borderwidth=1, font=dict(size=11))
        fig.update_xaxes(title_text="1 − specificity", range=[-0.01, 1.01], constrain="domain", row=1, col=c)
        fig.update_yaxes(title_text="sensitivity" if c == 1 else None, range=[-0.01, 1.01], row=1, col=c)
    return _layout(fig, title, 1300, 500, legend=dict(orientation="h", yanchor="bottom", y=1.1, xanchor="right",
                                                      x=1))


def confusion_figure(predictions: Mapping[str, pd.DataFrame], any_thresholds: Mapping[str, float] | None = None,
                     title: str = "Confusion matrices on the test split (thresholds chosen on validation)"
                     ) -> go.Figure:
    """A 2 x 2 count matrix per model (rows) and finding (columns), cells shaded by the share of their true row."""
    models = model_order(predictions)
    any_thresholds = any_thresholds or {}
    names = {"implant": "implant", "scoliosis": "scoliosis", "any": "abnormal"}
    titles = [f"{short_name(m)}: {names[g]}" for m in models for g in GROUPS]
    fig = make_subplots(rows=len(models), cols=3, subplot_titles=titles, horizontal_spacing=0.1,
                        vertical_spacing=min(0.08, 0.35 / max(1, len(models))))
    for r, m in enumerate(models, start=1):
        for c, group in enumerate(GROUPS, start=1):
            y, _, d = _group_arrays(predictions[m], group, any_thresholds.get(m))
            cm = np.array([[np.sum((y == t) & (d == p)) for p in (0, 1)] for t in (0, 1)])
            share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            fig.add_trace(go.Heatmap(z=share, x=["pred −", "pred +"], y=["true −", "true +"], zmin=0, zmax=1,
                                     colorscale="Blues", showscale=False, text=cm, texttemplate="%{text}",
                                     textfont=dict(size=14),
                                     hovertemplate="%{y}, %{x}: %{text} images<extra></extra>"), row=r, col=c)
            fig.update_yaxes(autorange="reversed", row=r, col=c)
    fig.update_annotations(font=dict(size=12))
    return _layout(fig, title, 760, 110 + 200 * len(models))


def training_figure(histories: Mapping[str, pd.DataFrame], title: str = "Training curves (per epoch)") -> go.Figure:
    """Train loss, validation loss and validation AUROC per finding against epochs, one line per model.
    Detector train losses (sum of Faster R-CNN losses) and classifier BCE share the log-scaled panel."""
    models = model_order(histories)
    colors = model_colors(models)
    panels = (("train_loss", "Train loss (log)"), ("val_loss", "Validation loss (image-level BCE)"),
              ("val_auroc_implant", "Validation AUROC implant"), ("val_auroc_scoliosis", "Validation AUROC scoliosis"))
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in panels], horizontal_spacing=0.08,
                        vertical_spacing=0.14)
    for k, (col, _) in enumerate(panels):
        r, c = divmod(k, 2)
        for m in models:
            h = histories[m]
            if col not in h or h.empty:
                continue
            fig.add_trace(go.Scatter(x=h["epoch"], y=h[col], mode="lines+markers", name=short_name(m),
                                     legendgroup=m, showlegend=k == 0, line=dict(color=colors[m], width=2),
                                     marker=dict(size=5),
                                     hovertemplate=f"{short_name(m)}<br>epoch %{{x}}: %{{y:.3f}}<extra></extra>"),
                          row=r + 1, col=c + 1)
        fig.update_xaxes(title_text="epoch", row=r + 1, col=c + 1, dtick=1 if _max_epoch(histories) <= 12 else None)
    fig.update_yaxes(type="log", row=1, col=1)
    for c in (1, 2):
        fig.add_hline(y=0.5, line=dict(color="#999", dash="dot", width=1), row=2, col=c,
                      annotation_text="chance", annotation_position="bottom right",
                      annotation_font=dict(size=10, color="#777"))
    fig.update_yaxes(range=[0, 1.02], row=2, col=1)
    fig.update_yaxes(range=[0, 1.02], row=2, col=2)
    return _layout(fig, title, 1100, 760, legend=dict(orientation="h", yanchor="bottom", y=1.06, xanchor="right", x=1))


def _max_epoch(histories: Mapping[str, pd.DataFrame]) -> int:
    return int(max([h["epoch"].max() for h in histories.values() if "epoch" in h and not h.empty] or [0]))


def detection_map_figure(rows: Sequence[Mapping], title: str = "Detection mAP on the test split") -> go.Figure:
    """COCO mAP@[.5:.95] and mAP@.5 (with 95% CIs) and AP per class, one group per detector."""
    sel = select_rows(rows)
    dets = [m for m, rs in sel.items() if any(math.isfinite(num(r.get("map_50"))) for r in rs)]
    if not dets:
        return empty_figure(title, "No detector with detection metrics in these results.")
    series = (("map", "mAP@[.5:.95]"), ("map_50", "mAP@.5"), ("ap50_Lum", "AP@.5 Lum (implant)"),
              ("ap50_sco", "AP@.5 sco (scoliosis)"), ("map_Lum", "AP@[.5:.95] Lum"), ("map_sco", "AP@[.5:.95] sco"))
    colors = ("#0072B2", "#56B4E9", "#D55E00", "#E69F00", "#F4A582", "#F6D58A")
    fig = go.Figure()
    for (key, label), color in zip(series, colors):
        est = [estimate(sel[m], key) for m in dets]
        vals = [e.value if math.isfinite(e.value) else None for e in est]
        err = None
        if any(math.isfinite(e.lo) for e in est):
            err = dict(type="data", symmetric=False, color="#222", thickness=1.5, width=4,
                       array=[e.hi - e.value if math.isfinite(e.hi) else 0 for e in est],
                       arrayminus=[e.value - e.lo if math.isfinite(e.lo) else 0 for e in est])
        fig.add_trace(go.Bar(name=label, x=[short_name(m) for m in dets], y=vals, marker_color=color, error_y=err,
                             text=[f"{v:.2f}" if v is not None else "n/a" for v in vals], textposition="outside",
                             cliponaxis=False, hovertemplate=f"%{{x}}<br>{label}: %{{y:.3f}}<extra></extra>"))
    fig.update_yaxes(range=[0, 1.05], title_text="average precision")
    return _layout(fig, title, max(700, 260 + 330 * len(dets)), 520, barmode="group",
                   subtitle="A missing bar: that class has no box in the test ground truth (AP undefined).",
                   legend=dict(orientation="h", yanchor="top", y=-0.1, xanchor="left", x=0))


# ---------------------------------------------------------------------------------------------------- Cobb
COBB_REGIONS = (("pt", "PT (proximal thoracic)"), ("mt", "MT (main thoracic)"), ("tl", "TL (thoracolumbar/lumbar)"))


def cobb_figures(cobb: Mapping[str, pd.DataFrame]) -> tuple[go.Figure, go.Figure]:
    """Predicted vs true Cobb angle per region (identity line) and the Bland-Altman plot (difference vs mean,
    bias and 95% limits of agreement), one colour per Cobb model."""
    models = model_order(cobb)
    colors = model_colors(models)
    titles = [t for _, t in COBB_REGIONS]
    sc = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.07)
    ba = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.07)
    for c, (reg, _) in enumerate(COBB_REGIONS, start=1):
        top = 10.0
        for m in models:
            df = cobb[m]
            t, p = df[f"true_{reg}"].to_numpy(float), df[f"pred_{reg}"].to_numpy(float)
            ok = np.isfinite(t) & np.isfinite(p)
            t, p = t[ok], p[ok]
            if not t.size:
                continue
            top = max(top, float(t.max()), float(p.max()))
            mae = float(np.abs(p - t).mean())
            sc.add_trace(go.Scatter(x=t, y=p, mode="markers", name=short_name(m), legendgroup=m, showlegend=c == 1,
                                    marker=dict(color=colors[m], size=7, opacity=0.75),
                                    customdata=df.loc[ok, "image_id"],
                                    hovertemplate="%{customdata}<br>true %{x:.1f}°, predicted %{y:.1f}°"
                                                  f"<extra>{short_name(m)} (MAE {mae:.1f}°)</extra>"), row=1, col=c)
            mean, diff = (t + p) / 2, p - t
            bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else 0.0
            ba.add_trace(go.Scatter(x=mean, y=diff, mode="markers", name=short_name(m), legendgroup=m,
                                    showlegend=c == 1, marker=dict(color=colors[m], size=7, opacity=0.75),
                                    hovertemplate="mean %{x:.1f}°, predicted − true %{y:.1f}°<extra></extra>"),
                         row=1, col=c)
            for level, dash, label in ((bias, "solid", f"bias {bias:+.1f}°"),
                                       (bias + 1.96 * sd, "dash", f"+1.96 SD {bias + 1.96 * sd:+.1f}°"),
                                       (bias - 1.96 * sd, "dash", f"−1.96 SD {bias - 1.96 * sd:+.1f}°")):
                ba.add_hline(y=level, line=dict(color=colors[m], dash=dash, width=1.2), row=1, col=c,
                             annotation_text=label, annotation_position="top right",
                             annotation_font=dict(size=10, color=colors[m]))
        sc.add_trace(go.Scatter(x=[0, top * 1.05], y=[0, top * 1.05], mode="lines", showlegend=False,
                                line=dict(color="#999", dash="dash", width=1), hoverinfo="skip"), row=1, col=c)
        sc.update_xaxes(title_text="true angle (°)", range=[0, top * 1.05], row=1, col=c)
        sc.update_yaxes(title_text="predicted angle (°)" if c == 1 else None, range=[0, top * 1.05],
                        scaleanchor=f"x{c}" if c > 1 else "x", row=1, col=c)
        ba.update_xaxes(title_text="mean of true and predicted (°)", row=1, col=c)
        ba.update_yaxes(title_text="predicted − true (°)" if c == 1 else None, zeroline=True, row=1, col=c)
    legend = dict(orientation="h", yanchor="bottom", y=1.1, xanchor="right", x=1)
    return (_layout(sc, "Cobb angle: predicted vs true (test split)", 1300, 480, legend=legend),
            _layout(ba, "Cobb angle: Bland-Altman agreement (test split)", 1300, 480, legend=legend))


# ------------------------------------------------------------------------------------------------ image grid
def _thumb_uri(img: np.ndarray, box: tuple[int, int]) -> tuple[str, int, int]:
    """A grey float image in [0, 1] -> PNG data URI scaled (up or down) to fit ``box`` (w, h); deterministic."""
    from PIL import Image

    a = (np.clip(np.asarray(img, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a, mode="L")
    f = min(box[0] / im.width, box[1] / im.height)
    im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def image_grid_figure(items: Sequence[Mapping], title: str = "Test images and each model's output",
                      cols: int = 4, thumb: tuple[int, int] = (240, 300)) -> go.Figure:
    """Thumbnails with the truth and every model's probabilities under each.

    ``items``: dicts with ``image`` ((H, W) float in [0, 1]), ``title`` (one line) and ``lines`` (list of
    ``(model, [(finding, prob, decision, truth)...])``). A probability is green when the thresholded decision is
    right and red when wrong; ``+`` marks a positive decision.
    """
    if not items:
        return empty_figure(title, "No test images could be loaded for this run.")
    cols = max(1, min(cols, len(items)))
    rows = math.ceil(len(items) / cols)
    line_h, text_lines = 15, 1 + max(len(it["lines"]) for it in items)
    cell_w, cell_h = max(thumb[0], 300) + 20, thumb[1] + 12 + line_h * text_lines + 24
    ml, mr, mt, mb = 20, 20, 110, 10
    width, height = ml + mr + cols * cell_w, mt + mb + rows * cell_h
    pw, ph = width - ml - mr, height - mt - mb
    fig = go.Figure()
    for k, it in enumerate(items):
        r, c = divmod(k, cols)
        uri, w, h = _thumb_uri(it["image"], thumb)
        ax = "" if k == 0 else str(k + 1)
        # exact pixel boxes: the thumbnail is drawn 1:1 in a thumb-sized box, centred
        x0, y1 = c * cell_w, ph - r * cell_h
        fig.add_trace(go.Image(source=uri, hoverinfo="skip", xaxis=f"x{ax}", yaxis=f"y{ax}"))
        fig.layout[f"xaxis{ax}"] = dict(domain=[x0 / pw, (x0 + thumb[0]) / pw], visible=False, anchor=f"y{ax}",
                                        range=[-(thumb[0] - w) / 2 - 0.5, w + (thumb[0] - w) / 2 - 0.5])
        fig.layout[f"yaxis{ax}"] = dict(domain=[(y1 - thumb[1]) / ph, y1 / ph], visible=False, anchor=f"x{ax}",
                                        range=[h + (thumb[1] - h) / 2 - 0.5, -(thumb[1] - h) / 2 - 0.5])
        lines = [f"<b>{html_escape(it['title'])}</b>"]
        for model, cells in it["lines"]:
            parts = []
            for finding, prob, decision, truth in cells:
                color = "#1a7f37" if int(decision) == int(truth) else "#cf222e"
                parts.append(f"{finding[0].upper()} <span style='color:{color}'>{prob:.2f}{'+' if decision else ' '}"
                             "</span>")
            lines.append(f"{short_name(model)[:25]:<25} " + " ".join(parts))
        fig.add_annotation(text="<br>".join(lines), xref="paper", yref="paper", x=x0 / pw,
                           y=(y1 - thumb[1] - 8) / ph, xanchor="left", yanchor="top", align="left", showarrow=False,
                           font=dict(family="DejaVu Sans Mono, Menlo, Consolas, monospace", size=10.5))
    return _layout(fig, title, width, height, margin=dict(l=ml, r=mr, t=mt, b=mb),
                   subtitle="I = implant, S = scoliosis probability; + = called positive at the validation "
                            "threshold; green = right, red = wrong")
