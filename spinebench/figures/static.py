"""Static PNG/SVG of a plotly figure through matplotlib: no browser, nothing beyond requirements.txt, offline.

plotly's own static export (kaleido) drives a headless Chrome, which a fresh machine does not have. Every figure of
spinebench is built once, as plotly (:mod:`spinebench.figures.plots`), and this module draws that same figure
object with matplotlib's Agg renderer, so the interactive HTML and the static images cannot disagree about the
data: it reads the figure's traces (``Bar`` with error bars and value labels, ``Scatter`` lines and markers,
``Heatmap`` with cell text, ``Image``) and its layout (subplot domains, axis titles, ranges, log and reversed axes,
titles and subtitles, annotations in paper / domain / data coordinates, horizontal reference lines, the legend).
What it does not draw: hover text, colour inside rich-text annotations (the text is kept, in one colour) and
anything no spinebench figure uses.

Deterministic: the same figure gives the same PNG pixels and byte-identical SVG (fixed hash salt, no date).
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import Mapping

import numpy as np

PX_PT = 0.75  # plotly sizes are CSS pixels; matplotlib's are points (figure drawn at 96 dpi: 1 px = 0.75 pt)
DPI = 96
_DASH = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-.", "longdash": "--", "longdashdot": "-."}
_PLOTLY_DEFAULT_MARGIN = {"l": 80, "r": 80, "t": 100, "b": 80}
_GRID = "#ebebeb"


def _text(s) -> str:
    """plotly's rich text (``<br>``, ``<b>``, ``<span style=...>``, entities) as plain lines."""
    s = re.sub(r"<br\s*/?>", "\n", str(s or ""), flags=re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", s))


def _ref(r: str | None, default: str) -> str:
    """'x2' -> 'xaxis2' (the layout key of a trace's axis)."""
    r = r or default
    return r[0] + "axis" + r[1:]


class _Canvas:
    """One matplotlib figure laid out like the plotly one: figure pixels, margins, an axes per subplot."""

    def __init__(self, layout: Mapping):
        from matplotlib.figure import Figure
        from matplotlib.transforms import Affine2D

        self.layout = layout
        self.w = float(layout.get("width") or 900)
        self.h = float(layout.get("height") or 500)
        m = {**_PLOTLY_DEFAULT_MARGIN, **(layout.get("margin") or {})}
        self.fig = Figure(figsize=(self.w / DPI, self.h / DPI), dpi=DPI, facecolor="white")
        self.x0, self.y0 = m["l"] / self.w, m["b"] / self.h
        self.pw, self.ph = 1 - (m["l"] + m["r"]) / self.w, 1 - (m["t"] + m["b"]) / self.h
        self.paper = Affine2D().scale(self.pw, self.ph).translate(self.x0, self.y0) + self.fig.transFigure
        self.axes: dict[tuple[str, str], object] = {}
        self.bars: dict[tuple[str, str], list] = {}

    def ax(self, xref: str, yref: str):
        key = (_ref(xref, "x"), _ref(yref, "y"))
        if key not in self.axes:
            xl, yl = self.layout.get(key[0]) or {}, self.layout.get(key[1]) or {}
            dx, dy = xl.get("domain") or [0, 1], yl.get("domain") or [0, 1]
            rect = [self.x0 + dx[0] * self.pw, self.y0 + dy[0] * self.ph, (dx[1] - dx[0]) * self.pw,
                    (dy[1] - dy[0]) * self.ph]
            a = self.fig.add_axes(rect)
            a.set_axisbelow(True)
            a.grid(True, color=_GRID, linewidth=0.8)
            for side in ("top", "right"):
                a.spines[side].set_visible(False)
            for side in ("left", "bottom"):
                a.spines[side].set_color("#cccccc")
            a.tick_params(colors="#444444", labelsize=11 * PX_PT, length=0)
            a.categories = {"x": [], "y": []}
            self.axes[key] = a
        return self.axes[key]

    def axes_px(self, a) -> tuple[float, float]:
        """An axes' size in layout pixels."""
        box = a.get_position()
        return box.width * self.w, box.height * self.h

    def transform(self, xref: str | None, yref: str | None):
        """The matplotlib transform of plotly's (xref, yref): paper, 'x domain' or data coordinates."""
        from matplotlib.transforms import blended_transform_factory

        def one(ref: str | None, axis: str):
            ref = ref or "paper"
            if ref == "paper":
                return self.paper
            key = _ref(ref.split()[0], axis)
            a = next((v for (kx, ky), v in self.axes.items() if (kx if axis == "x" else ky) == key), None)
            if a is None:
                a = self.ax(ref.split()[0], "y") if axis == "x" else self.ax("x", ref.split()[0])
            return a.transAxes if ref.endswith("domain") else a.transData

        return blended_transform_factory(one(xref, "x"), one(yref, "y"))


def _cat(a, axis: str, values) -> np.ndarray:
    """Category labels -> positions 0, 1, ... on an axes (plotly's category axes), numbers unchanged."""
    vals = list(values)
    if not vals or not isinstance(vals[0], str):
        return np.asarray([np.nan if v is None else v for v in vals], dtype=float)
    cats = a.categories[axis]
    for v in vals:
        if v not in cats:
            cats.append(v)
    return np.asarray([cats.index(v) for v in vals], dtype=float)


def _label(t: Mapping) -> str | None:
    """The legend entry of a trace (None: not in the legend, as plotly's ``showlegend=False``)."""
    return None if t.get("showlegend") is False or not t.get("name") else _text(t["name"])


def _bar(c: _Canvas, t: Mapping, i: int, n: int) -> None:
    a = c.ax(t.get("xaxis"), t.get("yaxis"))
    x = _cat(a, "x", t.get("x") or [])
    y = np.asarray([np.nan if v is None else v for v in t.get("y") or []], dtype=float)
    width = 0.8 / n
    xs = x - 0.4 + width * (i + 0.5)
    colour = (t.get("marker") or {}).get("color") or "#1f77b4"
    err = t.get("error_y") or {}
    yerr = None
    if err.get("array") is not None:
        plus = np.asarray(err["array"], dtype=float)
        minus = np.asarray(err.get("arrayminus") if err.get("arrayminus") is not None else plus, dtype=float)
        yerr = np.vstack([minus, plus])
    ok = np.isfinite(y)
    a.bar(xs[ok], y[ok], width=width * 0.95, color=colour, label=_label(t),
          yerr=None if yerr is None else yerr[:, ok], ecolor=err.get("color", "#222222"),
          error_kw={"elinewidth": float(err.get("thickness", 1.5)) * PX_PT, "capsize": float(err.get("width", 4))
                    * PX_PT})
    texts = t.get("text")
    if texts is not None:
        size = float((t.get("textfont") or {}).get("size") or 12)
        inside = t.get("textposition") == "inside"
        longest = max((len(_text(s)) for s in texts), default=1) or 1
        bar_px = width * c.axes_px(a)[0] / max(1, len(a.categories["x"]) or len(xs))
        size = min(size, bar_px / (0.62 * longest)) * PX_PT  # plotly shrinks text to fit its bar, too
        for xv, yv, s, top in zip(xs, y, list(texts), y + (yerr[1] if yerr is not None else 0)):
            if not np.isfinite(yv) or not str(s):
                continue
            a.annotate(_text(s), (xv, 0 if inside else top), xytext=(0, 3), textcoords="offset points",
                       ha="center", va="bottom", fontsize=size, color="#222222", clip_on=False)


def _scatter(c: _Canvas, t: Mapping) -> None:
    a = c.ax(t.get("xaxis"), t.get("yaxis"))
    x = _cat(a, "x", t.get("x") if t.get("x") is not None else [])
    y = np.asarray(t.get("y") if t.get("y") is not None else [], dtype=float)
    mode = t.get("mode") or "lines+markers"
    line, marker = t.get("line") or {}, t.get("marker") or {}
    colour = line.get("color") or marker.get("color") or "#1f77b4"
    kw = {"color": colour, "label": _label(t)}
    if "lines" in mode:
        kw.update(linewidth=float(line.get("width", 2)) * PX_PT, linestyle=_DASH.get(line.get("dash"), "-"),
                  drawstyle="steps-post" if line.get("shape") == "hv" else "default")
    else:
        kw["linestyle"] = "none"
    if "markers" in mode:
        kw.update(marker="o", markersize=float(marker.get("size", 6)) * PX_PT, markeredgewidth=0,
                  alpha=float(marker.get("opacity", 1)))
    a.plot(x, y, **kw)


def _heatmap(c: _Canvas, t: Mapping) -> None:
    import matplotlib

    a = c.ax(t.get("xaxis"), t.get("yaxis"))
    z = np.asarray(t["z"], dtype=float)
    xs, ys = _cat(a, "x", t.get("x") or range(z.shape[1])), _cat(a, "y", t.get("y") or range(z.shape[0]))
    lo, hi = t.get("zmin", np.nanmin(z)), t.get("zmax", np.nanmax(z))
    cmap = matplotlib.colormaps["Blues"]
    a.imshow(z, cmap=cmap, vmin=lo, vmax=hi, aspect="auto", origin="lower", interpolation="nearest",
             extent=(xs.min() - 0.5, xs.max() + 0.5, ys.min() - 0.5, ys.max() + 0.5))
    a.grid(False)
    text = t.get("text")
    if text is not None:
        size = float((t.get("textfont") or {}).get("size") or 12) * PX_PT
        for r, yv in enumerate(ys):
            for k, xv in enumerate(xs):
                frac = (z[r, k] - lo) / max(hi - lo, 1e-12)
                a.text(xv, yv, str(np.asarray(text)[r, k]), ha="center", va="center", fontsize=size,
                       color="white" if frac > 0.55 else "#222222")


def _image(c: _Canvas, t: Mapping) -> None:
    from PIL import Image

    a = c.ax(t.get("xaxis"), t.get("yaxis"))
    src = str(t.get("source") or "")
    if src.startswith("data:"):
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
    else:
        im = np.asarray(t.get("z"), dtype=np.uint8)
    h, w = im.shape[:2]
    a.imshow(im, extent=(-0.5, w - 0.5, h - 0.5, -0.5), aspect="auto", interpolation="nearest")
    a.grid(False)


def _axes_layout(c: _Canvas) -> None:
    for (xk, yk), a in c.axes.items():
        for axis, key in (("x", xk), ("y", yk)):
            spec = c.layout.get(key) or {}
            cats = a.categories[axis]
            if cats:
                labels = [_text(s) for s in cats]
                kw = {}
                longest = max(len(line) for s in labels for line in s.split("\n"))
                if axis == "x" and longest * 7 > c.axes_px(a)[0] / len(cats):  # plotly tilts crowded labels
                    kw = {"rotation": 30, "ha": "right", "rotation_mode": "anchor"}
                getattr(a, f"set_{axis}ticks")(range(len(cats)), labels, **kw)
            title = (spec.get("title") or {}).get("text")
            if title:
                getattr(a, f"set_{axis}label")(_text(title), fontsize=12 * PX_PT, color="#444444")
            if spec.get("type") == "log":
                getattr(a, f"set_{axis}scale")("log")
            if spec.get("range") is not None:
                lo, hi = spec["range"]
                if spec.get("type") == "log":
                    lo, hi = 10 ** lo, 10 ** hi
                getattr(a, f"set_{axis}lim")(lo, hi)
            elif cats:
                getattr(a, f"set_{axis}lim")(-0.5, len(cats) - 0.5)
            if spec.get("autorange") == "reversed":
                getattr(a, f"invert_{axis}axis")()
            if spec.get("visible") is False:
                getattr(a, f"{axis}axis").set_visible(False)
        if all((c.layout.get(k) or {}).get("visible") is False for k in (xk, yk)):
            a.set_axis_off()


def _shapes(c: _Canvas) -> None:
    for s in c.layout.get("shapes") or []:
        if s.get("type", "line") != "line":
            continue
        line = s.get("line") or {}
        kw = {"color": line.get("color", "#444444"), "linestyle": _DASH.get(line.get("dash"), "-"),
              "linewidth": float(line.get("width", 2)) * PX_PT}
        xref, yref = str(s.get("xref") or "paper"), str(s.get("yref") or "paper")
        if xref.endswith("domain") and not yref.endswith("domain") and yref != "paper" \
                and s.get("y0") == s.get("y1"):
            # add_hline: a data level across the subplot; axhline also widens the y range to show it, like plotly
            c.ax(xref.split()[0], yref).axhline(s["y0"], s.get("x0", 0), s.get("x1", 1), **kw)
            continue
        from matplotlib.lines import Line2D

        c.fig.add_artist(Line2D([s.get("x0", 0), s.get("x1", 1)], [s.get("y0", 0), s.get("y1", 0)],
                                transform=c.transform(xref, yref), **kw))


_HA = {"left": "left", "right": "right", "center": "center"}
_VA = {"top": "top", "bottom": "bottom", "middle": "center"}


def _annotations(c: _Canvas) -> None:
    for an in c.layout.get("annotations") or []:
        font = an.get("font") or {}
        family = str(font.get("family") or "")
        kw = {"ha": _HA.get(an.get("xanchor"), "center"), "va": _VA.get(an.get("yanchor"), "center"),
              "fontsize": float(font.get("size") or 13) * PX_PT, "color": font.get("color") or "#222222",
              "multialignment": an.get("align") or "center",
              "family": "monospace" if "mono" in family.lower() else "sans-serif"}
        if an.get("bgcolor"):
            kw["bbox"] = {"facecolor": "white", "alpha": 0.85, "edgecolor": an.get("bordercolor") or "white",
                          "boxstyle": "square,pad=0.3", "linewidth": 0.6}
        c.fig.text(an.get("x", 0.5), an.get("y", 0.5), _text(an.get("text")),
                   transform=c.transform(an.get("xref"), an.get("yref")), **kw)


def _title_and_legend(c: _Canvas) -> None:
    title = c.layout.get("title") or {}
    top = 1 - 12 / c.h
    if title.get("text"):
        x = float(title.get("x", 0.01))
        x = c.x0 + x * c.pw if title.get("xref") == "paper" else x  # plotly's default: the whole figure
        c.fig.text(x, top, _text(title["text"]), ha="left", va="top",
                   fontsize=float((title.get("font") or {}).get("size") or 17) * PX_PT, color="#222222")
        sub = (title.get("subtitle") or {}).get("text")
        if sub:
            c.fig.text(x, top - 26 / c.h, _text(sub), ha="left", va="top", fontsize=12 * PX_PT, color="#555555")
    handles, labels = [], []
    for a in c.axes.values():
        for h, lbl in zip(*a.get_legend_handles_labels()):
            if lbl and not lbl.startswith("_") and lbl not in labels:
                handles.append(h)
                labels.append(lbl)
    if c.layout.get("showlegend") is False or len(labels) < 1:
        return
    lg = c.layout.get("legend") or {}
    horizontal = lg.get("orientation") == "h"
    yanchor = lg.get("yanchor") or ("bottom" if horizontal else "top")
    xanchor = lg.get("xanchor") or "left"
    loc = f"{'upper' if yanchor == 'top' else 'lower' if yanchor == 'bottom' else 'center'} " \
          f"{xanchor if xanchor in ('left', 'right') else 'center'}"
    c.fig.legend(handles, labels, loc=loc.replace("center center", "center"),
                 bbox_to_anchor=(float(lg.get("x", 1.02)), float(lg.get("y", 1.0))), bbox_transform=c.paper,
                 ncol=len(labels) if horizontal else 1, frameon=False, fontsize=12 * PX_PT, borderaxespad=0,
                 handlelength=1.6, columnspacing=1.2)


def _decoded(v):
    """plotly >= 6 stores numeric arrays as ``{"dtype", "bdata"[, "shape"]}`` in ``to_dict()``: plain arrays."""
    if isinstance(v, dict):
        if "bdata" in v and "dtype" in v:
            a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
            shape = v.get("shape")
            if shape:
                a = a.reshape([int(n) for n in str(shape).split(",")] if isinstance(shape, str) else shape)
            return a
        return {k: _decoded(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_decoded(x) for x in v]
    return v


def to_matplotlib(fig):
    """A plotly figure -> a matplotlib ``Figure`` of the same pixel size and layout (no pyplot state touched)."""
    d = _decoded(fig.to_dict() if hasattr(fig, "to_dict") else dict(fig))
    c = _Canvas(d.get("layout") or {})
    traces = d.get("data") or []
    groups: dict[tuple, list[int]] = {}
    for k, t in enumerate(traces):
        if t.get("type") == "bar":
            groups.setdefault((_ref(t.get("xaxis"), "x"), _ref(t.get("yaxis"), "y")), []).append(k)
    for k, t in enumerate(traces):
        kind = t.get("type") or "scatter"
        if kind == "bar":
            g = groups[(_ref(t.get("xaxis"), "x"), _ref(t.get("yaxis"), "y"))]
            _bar(c, t, g.index(k), len(g) if (c.layout.get("barmode") or "group") == "group" else 1)
        elif kind == "scatter":
            _scatter(c, t)
        elif kind == "heatmap":
            _heatmap(c, t)
        elif kind == "image":
            _image(c, t)
    _shapes(c)
    _axes_layout(c)
    _annotations(c)
    _title_and_legend(c)
    return c.fig


def write_static(fig, paths: Mapping[str, str | Path], scale: float = 2) -> None:
    """Write the figure as each of ``paths`` ({"png": path, "svg": path}); PNG at ``scale`` x its layout pixels."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "spinebench", "svg.fonttype": "path",
                                "font.family": ["DejaVu Sans"], "axes.unicode_minus": False}):
        mfig = to_matplotlib(fig)
        for fmt, path in paths.items():
            mfig.savefig(path, format=fmt, dpi=DPI * scale if fmt == "png" else DPI, facecolor="white",
                         metadata={"Date": None} if fmt == "svg" else {"Software": None})
