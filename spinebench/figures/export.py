"""Writing figures: interactive HTML (plotly) and static PNG/SVG (matplotlib) of every figure.

Static images are drawn by :mod:`spinebench.figures.static` from the very plotly figure the HTML holds, with
matplotlib's Agg renderer: no browser, nothing beyond requirements.txt, offline, the same pixels on every machine.
(plotly's own static export, kaleido, needs a Chrome/Chromium that a fresh machine does not have, so it is not
used.) A figure that cannot be drawn statically costs its PNG/SVG only: one warning, its HTML is kept, and the
report says which static images are missing.

Determinism: HTML gets a fixed ``div_id`` and plotly.js by reference (``plotly.min.js`` written once beside the
figures, so the folder works offline); the same figure gives the same PNG pixels and byte-identical SVG.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping

import plotly.graph_objects as go
import plotly.io as pio

log = logging.getLogger(__name__)

#: Static formats written beside each HTML figure.
STATIC_FORMATS = ("png", "svg")
PNG_SCALE = 2  # print-ready: twice the layout's pixels
PLOTLY_CONFIG = {"displaylogo": False, "responsive": False,
                 "toImageButtonOptions": {"format": "png", "scale": PNG_SCALE}}


def div_id(name: str) -> str:
    """The fixed HTML id of a figure (also used inside report.html)."""
    return "spinebench-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def stable(fig: go.Figure, name: str) -> go.Figure:
    """Give every trace a fixed ``uid`` (plotly otherwise draws random ones into SVG class names)."""
    for i, trace in enumerate(fig.data):
        if trace.uid is None:
            trace.uid = f"{div_id(name)}-{i}"
    return fig


def figure_html(fig: go.Figure, name: str, include_plotlyjs: bool | str = False) -> str:
    """A figure as an HTML fragment (``include_plotlyjs=False``) or page (``"directory"``), deterministic."""
    return pio.to_html(stable(fig, name), full_html=include_plotlyjs == "directory",
                       include_plotlyjs=include_plotlyjs, div_id=div_id(name), config=PLOTLY_CONFIG, validate=False)


def static_export_error() -> str | None:
    """None when static PNG/SVG export works here, else why not (one line). Draws a tiny figure: well under 1 s."""
    import tempfile

    try:
        from spinebench.figures.static import write_static

        with tempfile.TemporaryDirectory() as d:
            write_static(go.Figure(go.Bar(x=[1], y=[1])), {"png": os.path.join(d, "probe.png")})
        return None
    except Exception as e:  # noqa: BLE001 - any failure means "no static export here"
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def write_figures(figures: Mapping[str, go.Figure], folder: str | os.PathLike, static: bool = True
                  ) -> dict[str, dict[str, Path]]:
    """Write ``name.html`` (+ ``name.png``/``name.svg`` when ``static``) for every figure.

    Returns {name: {"html": path, "png": path, "svg": path}} with only the files actually written.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Path]] = {}
    for name, fig in figures.items():
        path = folder / f"{name}.html"
        stable(fig, name).write_html(path, include_plotlyjs="directory", full_html=True, div_id=div_id(name),
                                     config=PLOTLY_CONFIG, validate=False)
        written[name] = {"html": path}
    if not static:
        return written
    from spinebench.figures.static import write_static

    for name, fig in figures.items():
        paths = {fmt: folder / f"{name}.{fmt}" for fmt in STATIC_FORMATS}
        try:
            write_static(fig, paths, scale=PNG_SCALE)
        except Exception as e:  # noqa: BLE001 - a static image is a copy; the HTML figure stays
            log.warning("static PNG/SVG of figure %s failed (%s: %s); kept its interactive HTML", name,
                        type(e).__name__, " ".join(str(e).split())[:200])
            for p in paths.values():  # no half-written pair
                p.unlink(missing_ok=True)
            continue
        written[name].update(paths)
    return written
