"""The Gradio demo launched on localhost and called through gradio_client, as a Space visitor's script would.

Uses the random-init weights of test_predict.py (plumbing, not accuracy); nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_predict import EXAMPLES, example, make_demo_weights

pytest.importorskip("gradio_client")


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def app_module(tmp_path_factory):
    import sys

    if str(ROOT) not in sys.path:  # app.py lives at the repository root
        sys.path.insert(0, str(ROOT))
    import app

    weights = make_demo_weights(tmp_path_factory.getbasetemp() / "demo_weights")
    app.WEIGHTS_DIR = weights
    app.sp.get_predictor(str(weights))  # as main() does: models loaded (and optimised) before serving
    return app


@pytest.fixture(scope="module")
def client(app_module):
    from gradio_client import Client

    limit, app_module.MAX_FILE_SIZE = app_module.MAX_FILE_SIZE, "2mb"  # small: the limit is tested with 3 MB
    _, url, _ = app_module.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(url, verbose=False)
    finally:
        app_module.demo.close()
        app_module.MAX_FILE_SIZE = limit


def test_every_event_has_an_api_name(app_module):
    names = [d.api_name for d in app_module.demo.fns.values()]
    assert all(names), names
    for name in ("analyze", "batch", "leaderboard", "model_cards"):
        assert name in names


def test_analyze_endpoint_returns_one_entry_per_model(client, app_module):
    from gradio_client import handle_file

    r = client.predict(handle_file(example("implant_and_scoliosis")), api_name="/analyze")
    assert isinstance(r, dict)
    json.dumps(r)
    assert len(r["models"]) == 6
    for m in r["models"].values():
        assert set(m["implant"]) == {"probability", "threshold", "positive", "test_auroc", "signal"}
    assert r["agreement"]["models"] == 6 and "not a diagnosis" in r["disclaimer"]
    from spinebench import __version__
    from spinebench.weights import read_records

    records = read_records(app_module.WEIGHTS_DIR)  # provenance: which weights gave these answers
    assert r["provenance"]["spinebench_version"] == __version__
    for name, p in r["provenance"]["models"].items():
        assert p["weights_sha256"] == records[name].sha256 and p["data_kind"] == records[name].data_kind
        assert p["pretrained"] is False and p["run_id"] == records[name].run_id


def test_dicom_through_the_api_shows_no_patient_data(client):
    from gradio_client import handle_file

    r = client.predict(handle_file(example("dicom")), api_name="/analyze")
    text = json.dumps(r)
    assert r["image"]["format"] == "dicom" and r["image"]["modality"] == "DX"
    assert "DEMO-EXAMPLE" not in text and "SYNTHETIC" not in text


def test_bad_upload_gives_one_clear_message_and_the_app_stays_up(client, tmp_path):
    from gradio_client import handle_file

    bad = tmp_path / "Doe_John_1970.dcm"
    bad.write_bytes(b"DICM" + b"\0" * 300)
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(bad)), api_name="/analyze")
    msg = str(err.value)
    assert "not" in msg.lower() and "Traceback" not in msg
    assert "/tmp" not in msg and "gradio" not in msg.lower()
    # still serving
    r = client.predict(handle_file(example("normal")), api_name="/analyze")
    assert len(r["models"]) == 6


def test_uploads_are_deleted_after_the_request(client, tmp_path):
    """The uploaded file (named like a patient) is gone from Gradio's upload folder once analysed."""
    import gradio as gr
    from gradio_client import handle_file

    src = tmp_path / "Patient_Jane_Roe_2024.png"
    shutil.copy(example("scoliosis"), src)
    with open(src, "ab") as f:
        f.write(b"\0unique-trailer-42")  # not byte-identical to the shipped example
    client.predict(handle_file(str(src)), api_name="/analyze")
    root = Path(gr.utils.get_upload_folder())
    assert not list(root.rglob("Patient_Jane_Roe_2024*"))


def test_upload_size_is_limited(client, tmp_path):
    from gradio_client import handle_file

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\0" * 3_000_000)
    with pytest.raises(Exception, match="(?i)size|large|limit|413"):
        client.predict(handle_file(str(big)), api_name="/analyze")


def test_concurrent_visitors_are_queued(client):
    from gradio_client import handle_file

    jobs = [client.submit(handle_file(example(n)), api_name="/analyze") for n in ("normal", "implant", "dicom")]
    results = [j.result(timeout=300) for j in jobs]
    assert all(len(r["models"]) == 6 for r in results)


def test_ui_event_returns_pictures_table_and_json(client):
    from gradio_client import handle_file

    out = client.predict(handle_file(example("normal")), api_name="/analyze_ui")
    view, meta, agreement, table, result, report, *panels = out
    assert Path(view).is_file() and "format: jpeg" in meta and "of 6" in agreement
    page = Path(report).read_text()  # the download: one self-contained page naming every model's weights
    assert "<html" in page.lower() and "not a diagnosis" in page
    assert all(m["weights_sha256"] in page for m in result["provenance"]["models"].values())
    assert len(table["data"]) == 6
    assert len(result["models"]) == 6
    shown = [p["value"] for p in panels if p.get("visible", True) and p.get("value")]
    assert len(shown) == 6 and all(Path(p).is_file() for p in shown)


def test_batch_returns_a_csv(client, tmp_path):
    import csv

    from gradio_client import handle_file

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = client.predict([handle_file(example("normal")), handle_file(str(bad))], api_name="/batch")
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 7 and sum(bool(r["error"]) for r in rows) == 1


def test_model_cards_and_leaderboard(client, app_module, tmp_path, monkeypatch):
    cards = client.predict(api_name="/model_cards")
    assert len(cards) == len(app_module.PANELS)
    assert all("Intended use" in c for c in cards)
    # no results yet: the leaderboard says so instead of failing
    monkeypatch.setattr(app_module.sp, "results_file", lambda **kw: None)
    dd, table, plot = client.predict("all", api_name="/leaderboard")
    assert "No results yet" in json.dumps(table)


def test_leaderboard_reads_results_and_filters_by_data(app_module, tmp_path, monkeypatch):
    from spinebench.evaluation.results import append_rows, make_row

    rows = [make_row(run_id="r1", model=m, task=t, data=d, status="ok", any_sensitivity=0.8,
                     any_sensitivity_lo=0.7, any_sensitivity_hi=0.9, any_specificity=0.9, accuracy=0.85, loss=0.3)
            for m, t in (("cls_densenet121", "classification"), ("det_faster_rcnn_inception_v2", "detection"))
            for d in ("synth", "aasce=/data/aasce")]
    path = tmp_path / "leaderboard.csv"
    append_rows(path, rows)
    monkeypatch.setattr(app_module.sp, "results_file", lambda **kw: path)
    dd, table, fig = app_module.leaderboard("aasce")
    assert set(dd.choices) >= {("all", "all"), ("aasce", "aasce"), ("synth", "synth")} or \
        {"all", "aasce", "synth"} <= {c[0] if isinstance(c, tuple) else c for c in dd.choices}
    assert set(table["Data"]) == {"aasce"} and len(table) == 2
    assert "0.80 [0.70, 0.90]" in table.to_string()
    assert fig.data  # paper bars beside ours


def test_examples_are_offered(app_module):
    assert len(app_module.EXAMPLES) >= 5
    assert all(Path(p).parent == EXAMPLES for p, _ in app_module.EXAMPLES)


def test_ensure_weights_uses_existing_then_trains(app_module, tmp_path, monkeypatch):
    """The demo's weights: existing ones as they are (the Hub: tests/test_hub.py); else it trains the quick
    profile itself. Training on demand lives in app.py, not in the library's inference side."""
    import spinebench.engine.runner as runner

    weights = app_module.WEIGHTS_DIR
    assert app_module.ensure_weights(weights) == weights
    trained = []

    def fake_run_all(**kw):  # the real run is tested in test_engine.py; here: what the app asks for
        trained.append(kw)
        for f in ("manifest.json", "cls_squeezenet1_1.pt"):
            shutil.copy(Path(weights) / f, Path(kw["weights_dir"]) / f)
        return tmp_path

    monkeypatch.setattr(runner, "run_all", fake_run_all)
    monkeypatch.delenv(app_module.sp.WEIGHTS_REPO_ENV, raising=False)
    new_dir = tmp_path / "fresh"
    new_dir.mkdir()
    out = app_module.ensure_weights(new_dir, results_dir=tmp_path / "results", runs_dir=tmp_path / "runs")
    assert out == new_dir and trained and trained[0]["profile"] == "quick" and trained[0]["progress"] is True
