"""Writing figures: interactive HTML always, static PNG/SVG through kaleido when a Chromium is at hand.

Static export is plotly's own route (``plotly.io.write_images``, kaleido >= 1.0), which drives a headless
Chrome/Chromium: Debian's ``chromium`` package is found by kaleido's ``choreographer`` on its own (or point
``BROWSER_PATH`` at a browser binary). ``choreographer``'s ``plotly_get_chrome`` can also download one, but nothing
here downloads anything at run time. No browser, or any export failure: one warning, the HTML files are kept and
the report says that static images are missing. All figures go through one ``write_images`` call, which starts
the browser once (about 2-4 s for a whole report instead of that per figure).

Determinism: HTML gets a fixed ``div_id`` and plotly.js by reference (``plotly.min.js`` written once beside the
figures, so the folder works offline); SVG's random plotly uid is replaced by a fixed one. PNGs come out with the
same pixels for the same figure (their bytes are Chromium's PNG encoder's and have been identical in practice).
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
_warned = False


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


def _fix_svg_uid(path: Path) -> None:
    """plotly draws SVG clip paths with a random 6-hex uid per render: make it fixed so SVGs are reproducible."""
    text = path.read_text(encoding="utf-8")
    m = re.search(r'id="defs-([0-9a-f]{6})"', text)
    if m:
        text = text.replace(m.group(1), "5b5b5b")
        path.write_text(text, encoding="utf-8")


def static_export_error() -> str | None:
    """None when kaleido can render a tiny figure here, else why not (one line). Starts a browser: seconds."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as d:
            pio.write_images([go.Figure(go.Bar(x=[1], y=[1]))], [os.path.join(d, "probe.png")])
        return None
    except Exception as e:  # noqa: BLE001 - any failure means "no static export here"
        return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"


def write_figures(figures: Mapping[str, go.Figure], folder: str | os.PathLike, static: bool = True
                  ) -> dict[str, dict[str, Path]]:
    """Write ``name.html`` (+ ``name.png``/``name.svg`` when ``static`` and possible) for every figure.

    Returns {name: {"html": path, "png": path, "svg": path}} with only the files actually written.
    """
    global _warned
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Path]] = {}
    for name, fig in figures.items():
        path = folder / f"{name}.html"
        stable(fig, name).write_html(path, include_plotlyjs="directory", full_html=True, div_id=div_id(name),
                       config=PLOTLY_CONFIG, validate=False)
        written[name] = {"html": path}
    if not static or not figures:
        return written
    figs, paths = [], []
    for name, fig in figures.items():
        for fmt in STATIC_FORMATS:
            figs.append(fig)
            paths.append(folder / f"{name}.{fmt}")
    try:
        # kaleido ignores layout.width/height unless they are passed again here
        pio.write_images(figs, paths, scale=[PNG_SCALE if p.suffix == ".png" else 1 for p in paths],
                         width=[f.layout.width or 900 for f in figs], height=[f.layout.height or 500 for f in figs],
                         validate=False)
    except Exception as e:  # noqa: BLE001 - static images are a bonus; the HTML figures stay
        if not _warned:
            log.warning("static PNG/SVG export failed (%s: %s); kept the interactive HTML figures. It needs "
                        "kaleido>=1 and a Chrome/Chromium (apt-get install chromium, or set BROWSER_PATH).",
                        type(e).__name__, " ".join(str(e).split())[:200])
            _warned = True
        for p in paths:  # no half-written set: either every static file or none
            if p.is_file():
                p.unlink()
        return written
    for name in figures:
        for fmt in STATIC_FORMATS:
            p = folder / f"{name}.{fmt}"
            if p.is_file() and p.stat().st_size > 0:
                if fmt == "svg":
                    _fix_svg_uid(p)
                written[name][fmt] = p
    return written
