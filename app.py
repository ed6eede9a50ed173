"""spinebench demo: six models' opinion on a spine X-ray (lumbar implant, scoliosis), side by side.

``python app.py`` serves it (Gradio; honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT). On a fresh clone without
trained weights it first fetches them ($SPINEBENCH_WEIGHTS_REPO, a Hugging Face Hub repository) or trains the quick
profile offline (about nine minutes on a 2-core CPU, with progress bars), then serves. That training on demand is
the app's choice and lives here: the library's inference side never imports the training orchestration.

This file only lays out components; prediction, heatmaps, drawing, model cards and the leaderboard come from the
library (``spinebench.predict``, ``spinebench.figures``). Research software, not a medical device.

API (every event has an ``api_name``; see the README's "Demo" section)::

    from gradio_client import Client, handle_file
    result = Client("http://127.0.0.1:7860/").predict(handle_file("spine.dcm"), api_name="/analyze")
    result["models"]["cls_densenet121"]["scoliosis"]   # {"probability": ..., "threshold": ..., "positive": ...}
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import gradio as gr
from gradio import FileData

from spinebench import predict as sp
from spinebench.errors import SpinebenchError
from spinebench.io import SUPPORTED_EXTENSIONS

log = logging.getLogger("spinebench.app")

WEIGHTS_DIR = sp.default_weights_dir()
EXAMPLES_DIR = Path(sp.__file__).resolve().parent.parent / "assets" / "examples"
#: Largest upload accepted (per file); an uncompressed 4k x 4k 16-bit DICOM is 32 MB.
MAX_FILE_SIZE = "64mb"
#: Gradio's cache of uploads and outputs is swept every 5 minutes of files older than 10 minutes.
DELETE_CACHE = (300, 600)
PANELS = sp.panel_models()
_TASKS = {}


def _task(name: str) -> str:
    if name not in _TASKS:
        from spinebench.models import model_info

        _TASKS[name] = model_info(name)["task"]
    return _TASKS[name]


def _examples() -> list[tuple[str, str]]:
    """(path, label) of the shipped example images, label from the file name (``01_normal.jpg`` -> normal)."""
    if not EXAMPLES_DIR.is_dir():
        return []
    files = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in SUPPORTED_EXTENSIONS)
    return [(str(p), p.stem.split("_", 1)[-1].replace("_", " ")) for p in files]


EXAMPLES = _examples()
_EXAMPLE_HASHES = {hashlib.sha256(Path(p).read_bytes()).hexdigest() for p, _ in EXAMPLES}


# ---------------------------------------------------------------------------------------------------- helpers
def _predictor() -> sp.Predictor:
    try:
        return sp.get_predictor(str(WEIGHTS_DIR))
    except SpinebenchError as e:
        raise gr.Error(f"The models are not available: {sp.user_message(e)}", print_exception=False) from None


def _path_of(file) -> str | None:
    if file is None:
        return None
    if isinstance(file, dict):
        return file.get("path")
    return getattr(file, "path", None) or str(file)


def _forget_upload(path: str | None) -> None:
    """Delete an uploaded file from Gradio's upload folder once it has been analysed (never the examples, never a
    file outside that folder, e.g. one a test passed in)."""
    if not path:
        return
    try:
        p = Path(path).resolve()
        root = Path(gr.utils.get_upload_folder()).resolve()
        if root not in p.parents or not p.is_file():
            return
        if p.stat().st_size < 2_000_000 and hashlib.sha256(p.read_bytes()).hexdigest() in _EXAMPLE_HASHES:
            return
        p.unlink()
        if p.parent != root and not any(p.parent.iterdir()):
            p.parent.rmdir()
    except OSError as e:  # the sweep of DELETE_CACHE gets it later
        log.debug("could not delete an upload: %s", e.strerror)


def _run(path: str | None, draw: bool) -> sp.Analysis:
    if not path:
        raise gr.Error("Upload an X-ray (PNG, JPEG, TIFF or DICOM) or click an example first.", print_exception=False)
    predictor = _predictor()
    try:
        return predictor.analyze(path, draw=draw)
    except SpinebenchError as e:
        raise gr.Error(sp.user_message(e), print_exception=False) from None
    finally:
        _forget_upload(path)


# ---------------------------------------------------------------------------------------------------- events
def analyze(image: FileData) -> dict:
    """All models on one X-ray (PNG, JPEG, TIFF or DICOM): per model implant and scoliosis probabilities, the
    decision at the model's validated threshold, boxes for detectors and the time taken; how many models agree.
    Research tool, not a diagnosis."""
    return _run(_path_of(image), draw=False).result


def analyze_ui(file):
    a = _run(_path_of(file), draw=True)
    r = a.result
    panels = []
    for name in PANELS:
        if name in a.images:
            panels.append(gr.Image(value=a.images[name], label=_panel_label(name, r["models"][name]),
                                   visible=True))
        elif _task(name) == "cobb":
            panels.append(gr.Image(value=None, visible=False))
        else:
            panels.append(gr.Image(value=None, label=f"{name}: no trained weights in this deployment"))
    table = sp.summary_rows(r)
    from spinebench.predict.report import xray_report_html

    name = Path(getattr(file, "orig_name", None) or _path_of(file) or "xray").name
    report = _fresh_file("spinebench-report-", ".html")
    Path(report).write_text(xray_report_html(r, a.images, name), encoding="utf-8")
    out = [a.images["input"], sp.image_facts(r), sp.agreement_text(r), table, r, report, *panels]
    a.release()
    return out


def _panel_label(name: str, r: dict) -> str:
    if "error" in r:
        return f"{name}: error"
    if "largest" in r:  # a measurement (the Cobb model), not two decisions
        return f"Cobb angles ({name}): largest {r['largest']:.1f}°, {r['grade']} · {r.get('ms', 0):.0f} ms"
    return f"{name} · {r.get('ms', 0):.0f} ms"


_BATCH_DIR = Path(tempfile.gettempdir()) / "spinebench-demo-batch"


def batch(files: list[FileData]) -> str:
    """Several X-rays in, one CSV out: one row per (file, model) with probabilities and decisions."""
    paths = [_path_of(f) for f in files or []]
    if not paths:
        raise gr.Error("Upload one or more X-rays first.", print_exception=False)
    predictor = _predictor()
    names = [getattr(f, "orig_name", None) or (f.get("orig_name") if isinstance(f, dict) else None)
             or Path(p).name for f, p in zip(files, paths)]
    try:
        rows = sp.batch_rows(predictor, paths, names)
    finally:
        for p in paths:
            _forget_upload(p)
    return str(sp.write_batch_csv(rows, _fresh_file("spinebench-predictions-", ".csv")))


def _fresh_file(prefix: str, suffix: str) -> str:
    """A new file for a visitor's download (batch CSV, per-X-ray report); earlier visitors' files of that kind
    go once older than Gradio's cache age."""
    _BATCH_DIR.mkdir(exist_ok=True)
    for old in _BATCH_DIR.glob(f"{prefix}*{suffix}"):
        if time.time() - old.stat().st_mtime > DELETE_CACHE[1]:
            old.unlink(missing_ok=True)
    fd, out = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=_BATCH_DIR)
    os.close(fd)
    return out


def batch_ui(files):
    out = batch(files)
    import pandas as pd

    return out, pd.read_csv(out)


def leaderboard(data: str = "all"):
    choices, table, fig = sp.leaderboard_view(sp.results_file(weights_dir=WEIGHTS_DIR), data)
    return gr.Dropdown(choices=choices, value=data if data in choices else "all"), table, fig


def model_cards():
    cards = sp.model_cards(WEIGHTS_DIR)
    return [cards.get(n, f"### {n}\nNot registered.") for n in PANELS]


# ---------------------------------------------------------------------------------------------------- layout
INTRO = f"""# spinebench: lumbar implant and scoliosis on spine X-rays
Two Faster R-CNN detectors and four transfer-learning classifiers from Le Van et al. (2020), retrained by
spinebench on one protocol and data set, side by side. Upload an AP spine radiograph (PNG, JPEG, TIFF or DICOM;
up to {MAX_FILE_SIZE}) or click an example.

> **{sp.DISCLAIMER}** Uploads are deleted after analysis and never logged; only technical image facts
> (format, modality, size) are shown, never DICOM patient data.
"""

with gr.Blocks(title="spinebench demo", delete_cache=DELETE_CACHE) as demo:
    gr.Markdown(INTRO)
    with gr.Tabs():
        with gr.Tab("Analyze", id="analyze"):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    upload = gr.File(label="X-ray: PNG, JPEG, TIFF or DICOM", file_count="single",
                                     type="filepath", elem_id="upload")
                    run_btn = gr.Button("Analyze", variant="primary", elem_id="analyze-btn")
                    examples_slot = gr.Column()
                    view = gr.Image(label="As the models see it (DICOM windowing applied, downscaled)",
                                    interactive=False, format="png", elem_id="model-view", height=420)
                    meta_md = gr.Markdown(elem_id="image-meta")
                with gr.Column(scale=3):
                    agree_md = gr.Markdown("*Results appear here.*", elem_id="agreement")
                    summary = gr.Dataframe(headers=sp.SUMMARY_HEADERS, datatype=["str", "number", "str", "number",
                                                                                 "str", "number"],
                                           column_widths=["31%", "10%", "17%", "10%", "22%", "10%"],
                                           label="Summary: probability p and the decision at each model's threshold "
                                                 "t chosen on validation", interactive=False, elem_id="summary")
                    panel_images: list[gr.Image] = []
                    groups = [("Detectors: Lum (implant) and sco (scoliosis) boxes", "detection"),
                              ("Classifiers: Grad-CAM of implant | scoliosis", "classification"),
                              (None, "cobb")]  # shown only where a Cobb model is trained
                    for title, task in groups:
                        names = [n for n in PANELS if _task(n) == task]
                        if not names:
                            continue
                        if title:
                            gr.Markdown(f"### {title}")
                        with gr.Row():
                            for name in names:
                                panel_images.append(gr.Image(label=name, interactive=False, format="png",
                                                             height=380, visible=task != "cobb",
                                                             elem_id=f"panel-{name}",
                                                             elem_classes=["model-panel"]))
                    report_file = gr.File(label="Report of this X-ray (one HTML page: pictures, table, provenance)",
                                          interactive=False, elem_id="report-file")
                    with gr.Accordion("JSON (what /analyze returns)", open=False):
                        result_json = gr.JSON(elem_id="result-json")
            outputs = [view, meta_md, agree_md, summary, result_json, report_file, *panel_images]
            run_btn.click(analyze_ui, upload, outputs, api_name="analyze_ui", api_visibility="undocumented",
                          concurrency_id="models")
            upload.upload(analyze_ui, upload, outputs, api_name="analyze_upload", api_visibility="undocumented",
                          concurrency_id="models")
            if EXAMPLES:
                with examples_slot:
                    gr.Examples([[p] for p, _ in EXAMPLES], inputs=[upload], outputs=outputs, fn=analyze_ui,
                                run_on_click=True, cache_examples=False,
                                example_labels=[lbl for _, lbl in EXAMPLES], examples_per_page=len(EXAMPLES),
                                label="Examples (synthetic radiographs made by spinebench)",
                                api_name="analyze_example")
            gr.api(analyze, api_name="analyze", concurrency_id="models")

        with gr.Tab("Leaderboard", id="leaderboard"):
            gr.Markdown("Every metric on the test split with its 95% patient-bootstrap confidence interval. "
                        "Quick-profile numbers are a smoke-scale benchmark, not results to cite.")
            data_dd = gr.Dropdown(choices=["all"], value="all", label="Data set", elem_id="data-filter")
            board = gr.Dataframe(label="Leaderboard (click a header to sort)", interactive=False, wrap=True,
                                 elem_id="leaderboard")
            board_plot = gr.Plot(label="Paper (grey) vs ours (blue): sensitivity, specificity, accuracy, loss")
            data_dd.input(leaderboard, data_dd, [data_dd, board, board_plot], api_name="leaderboard")

        with gr.Tab("Model cards", id="cards"):
            card_mds = []
            for name in PANELS:
                with gr.Accordion(name, open=False):
                    card_mds.append(gr.Markdown())

        with gr.Tab("Batch", id="batch"):
            gr.Markdown("Several X-rays in, one CSV out: one row per file and model (probabilities, decisions at "
                        "each model's threshold, number of boxes, time). Files are deleted after the run.")
            batch_files = gr.File(label="X-rays", file_count="multiple", type="filepath", elem_id="batch-files")
            batch_btn = gr.Button("Run all models", variant="primary")
            batch_csv = gr.File(label="predictions.csv", interactive=False)
            batch_table = gr.Dataframe(label="Predictions", interactive=False)
            batch_btn.click(batch_ui, batch_files, [batch_csv, batch_table], api_name="batch_ui",
                            api_visibility="undocumented", concurrency_id="models")
            gr.api(batch, api_name="batch", concurrency_id="models")

    demo.load(leaderboard, data_dd, [data_dd, board, board_plot], api_name="leaderboard_load",
              api_visibility="undocumented")
    demo.load(model_cards, None, card_mds, api_name="model_cards")


def launch(**kwargs):
    """Queue and launch with the demo's limits (``main`` and the tests): one analysis at a time, up to 32 waiting
    visitors (more get a "queue full" message), uploads capped at MAX_FILE_SIZE. Server name and port come from
    GRADIO_SERVER_NAME / GRADIO_SERVER_PORT unless given."""
    return demo.queue(default_concurrency_limit=1, max_size=32).launch(max_file_size=MAX_FILE_SIZE, **kwargs)


def ensure_weights(weights_dir: str | os.PathLike | None = None, *, hub_repo: str | None = None,
                   revision: str | None = None, train_profile: str = "quick", data: tuple[str, ...] = ("synth",),
                   results_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
                   progress: bool = True) -> Path:
    """A weights folder with trained models, whatever it takes: there already or on the Hub
    (``spinebench.predict.find_weights``), else the ``train_profile`` profile trained on ``data`` now (quick: about
    nine minutes on a 2-core CPU, offline, with progress bars), writing results to ``results_dir`` for the
    leaderboard."""
    from spinebench.paths import repo_root

    wdir = Path(weights_dir) if weights_dir else sp.default_weights_dir()
    found = sp.find_weights(wdir, hub_repo=hub_repo, revision=revision)
    if found is not None:
        return found
    from spinebench.engine.runner import run_all
    from spinebench.weights import trained_records

    log.warning("no trained models in %s: training the %s profile on %s first (this takes a while)", wdir,
                train_profile, " ".join(data))
    root = repo_root()
    run_all(data=data, profile=train_profile, weights_dir=wdir, results=results_dir or root / "results",
            out=runs_dir or root / "runs", progress=progress)
    if not trained_records(wdir):
        raise SpinebenchError(f"training finished but no model was saved to {wdir}; see the run's error rows")
    return wdir


def main() -> None:
    """Weights first (existing, Hub or trained now), models loaded once, then serve."""
    global WEIGHTS_DIR
    # spinebench's own progress at INFO; third-party libraries (HTTP clients, figure export) only when they warn
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("spinebench").setLevel(logging.INFO)
    try:
        WEIGHTS_DIR = ensure_weights(WEIGHTS_DIR)  # a Hub snapshot when the weights came from there
        sp.get_predictor(str(WEIGHTS_DIR))
    except SpinebenchError as e:
        raise SystemExit(f"spinebench demo: {e}") from None
    launch()


if __name__ == "__main__":
    main()
