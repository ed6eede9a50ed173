"""One self-contained HTML page per X-ray: what every model said about it, for a person to read or file.

Everything is in the one file (images as base64 PNG, inline CSS, no script, no external link): the image as the
models saw it, each detector's boxes, each classifier's Grad-CAM heatmaps, the summary table, the Cobb overlay with
its angles and grade (when a Cobb model is trained), the agreement, each model's provenance and the
not-a-diagnosis warning. Image facts are the predictor's ``SAFE_META`` only: no DICOM patient field reaches it.
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from pathlib import Path

import numpy as np

from spinebench import DISCLAIMER
from spinebench.cobb import curve_span

_STYLE = ("body{font-family:Arial,Helvetica,sans-serif;max-width:1200px;margin:2em auto;padding:0 1.2em;color:#222;"
          "line-height:1.45}h1{font-size:1.5em}h2{margin-top:1.5em;border-bottom:1px solid #ddd}"
          "table{border-collapse:collapse;font-size:.9em;margin:.5em 0}th,td{border:1px solid #ccc;"
          "padding:.25em .55em;text-align:left;vertical-align:top}th{background:#f3f3f3}"
          ".warn{font-weight:bold;background:#fff4d6;border-left:4px solid #e69f00;padding:.5em .8em}"
          "figure{display:inline-block;margin:.6em 1em .6em 0;vertical-align:top}"
          "figcaption{color:#555;font-size:.9em}img{max-height:520px;border:1px solid #ddd}")
_TASK_TITLES = (("detection", "Detectors: Lum (implant) and sco (scoliosis) boxes"),
                ("classification", "Classifiers: Grad-CAM of implant | scoliosis"),
                ("cobb", "Cobb angles"))


def png_data_uri(rgb: np.ndarray) -> str:
    """uint8 grey or RGB pixels -> ``data:image/png;base64,...`` (deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _table(header, rows) -> str:
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e('' if c is None else str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(rgb: np.ndarray, caption: str) -> str:
    e = html.escape
    return f"<figure><img src='{png_data_uri(rgb)}' alt='{e(caption)}'><figcaption>{e(caption)}</figcaption></figure>"


def xray_report_html(result: dict, images: dict[str, np.ndarray], name: str) -> str:
    """The page for one analysis (``Analysis.result`` and ``Analysis.images``, drawn); ``name``: the file's name."""
    from spinebench.predict.drawing import SUMMARY_HEADERS, agreement_text, summary_rows

    e = html.escape
    models = result["models"]
    body = [f"<h1>spinebench: {e(name)}</h1>", f"<p class='warn'>{e(DISCLAIMER)}</p>"]
    facts = [[k.replace("_", " "), v] for k, v in result["image"].items() if v not in (None, "")]
    body += ["<h2>Image</h2>", _table(["fact", "value"], facts)]
    if "input" in images:
        body.append(_figure(images["input"], "As the models see it (windowing and inversion applied, downscaled)"))
    body += ["<h2>Summary</h2>", _table(SUMMARY_HEADERS, summary_rows(result)),
             f"<p>{e(re.sub(r'[*]', '', agreement_text(result).split(chr(10))[0]))}</p>"]
    for task, title in _TASK_TITLES:
        names = [n for n, r in models.items() if r.get("task") == task]
        if not names:
            continue
        body.append(f"<h2>{e(title)}</h2>")
        for n in names:
            r = models[n]
            caption = f"{n}: error: {r['error']}" if "error" in r else f"{n} · {r.get('ms', 0):.0f} ms"
            if task == "cobb" and "largest" in r:
                spans = {k: curve_span(r["end_vertebrae"][k]) if k in r.get("end_vertebrae", {}) else k.upper()
                         for k in r["angles"]}
                angles = ", ".join(f"{spans[k]} {v:.1f}°" for k, v in r["angles"].items())
                caption = f"{n}: {angles}; largest {r['largest']:.1f}° ({spans[r['largest_curve']]}), " \
                          f"grade {r['grade']}"
                body.append(_table(["curve (end vertebrae)", "angle (°)", "AASCE name"],
                                   [[spans[k], f"{v:.1f}", k.upper()] for k, v in r["angles"].items()]
                                   + [["grade", r["grade"], ""]]))
            if n in images:
                body.append(_figure(images[n], caption))
            else:
                body.append(f"<p>{e(caption)}</p>")
    prov = result.get("provenance") or {}
    rows = [[n, p.get("weights_sha256", ""), p.get("run_id", ""), p.get("data_kind", ""),
             "yes" if p.get("pretrained") is True else "no" if p.get("pretrained") is False else p.get("pretrained"),
             p.get("trained_with", "")] for n, p in (prov.get("models") or {}).items()]
    body += ["<h2>Provenance</h2>",
             f"<p>spinebench {e(str(prov.get('spinebench_version', '')))}; each model's weights:</p>",
             _table(["model", "weights sha256", "training run", "data", "ImageNet/COCO weights", "trained with"],
                    rows),
             f"<p class='warn'>{e(DISCLAIMER)}</p>"]
    return ("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>spinebench: {e(name)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def report_name(name: str, taken: set[str]) -> str:
    """A safe, unused ``<stem>.html`` for a file's report."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem or Path(name).name).strip("._") or "xray"
    out, k = f"{stem}.html", 2
    while out in taken:
        out, k = f"{stem}-{k}.html", k + 1
    taken.add(out)
    return out


def write_xray_report(result: dict, images: dict[str, np.ndarray], name: str, folder: str | os.PathLike,
                      taken: set[str] | None = None) -> Path:
    """Write the page of one analysis into ``folder``; returns its path."""
    path = Path(folder) / report_name(name, taken if taken is not None else set())
    path.write_text(xray_report_html(result, images, Path(name).name), encoding="utf-8")
    return path
