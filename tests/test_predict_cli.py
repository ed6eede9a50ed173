"""``python -m spinebench predict``: folders of real files (a PNG, a real CR DICOM from pydicom-data, an
extension-less DICOM, a corrupt file) through the demo's Predictor, with the weights' provenance in every output.

Weights: the random-init models of test_predict.py (plumbing, not accuracy), two of them to keep it fast.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from spinebench import FINDINGS, __version__
from spinebench.cli import main
from spinebench.errors import SpinebenchError
from test_predict import example, make_demo_weights

MODELS = ["det_faster_rcnn_inception_v2", "cls_squeezenet1_1"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from spinebench.weights import MANIFEST

    demo = make_demo_weights(tmp_path_factory.getbasetemp() / "demo_weights")
    wdir = tmp_path_factory.mktemp("cli_weights")
    manifest = json.loads((demo / MANIFEST).read_text())
    for name in MODELS:
        shutil.copy(demo / f"{name}.pt", wdir)
    (wdir / MANIFEST).write_text(json.dumps({n: manifest[n] for n in MODELS}))
    return wdir


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    from pydicom.data import get_testdata_file

    rg1 = get_testdata_file("RG1_UNCR.dcm", download=False)  # a real CR chest, MONOCHROME1, patient fields set
    if rg1 is None:
        pytest.skip("pydicom-data's RG1_UNCR.dcm is not installed")
    d = tmp_path_factory.mktemp("xrays")
    shutil.copy(example("scoliosis"), d / "a_scoliosis.png")
    shutil.copy(rg1, d / "b_cr.dcm")
    shutil.copy(example("dicom"), d / "c_dicom_without_extension")  # DICOM by content
    (d / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # truncated PNG
    (d / "notes.txt").write_text("not an image, not listed\n")
    return d


def test_folders_expand_to_their_image_files(inputs, tmp_path):
    from spinebench.predict import expand_inputs

    files = expand_inputs([inputs, inputs / "a_scoliosis.png"])  # a file named twice is done once
    assert [f.name for f in files] == ["a_scoliosis.png", "b_cr.dcm", "c_dicom_without_extension", "d_broken.png"]
    with pytest.raises(SpinebenchError, match="no such file"):
        expand_inputs([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpinebenchError, match="no image files"):
        expand_inputs([tmp_path / "empty"])


def test_an_unreadable_file_is_named_once(inputs, weights, monkeypatch, capsys):
    """A file given by a relative path: the error line names it once ("spinebench: d_broken.png: ..."), not twice."""
    monkeypatch.chdir(inputs)
    assert main(["predict", "d_broken.png", "--weights", str(weights), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spinebench: d_broken.png: ") and err[0].count("d_broken.png") == 1


def test_json_has_every_models_findings_and_provenance(inputs, weights, tmp_path, capsys):
    from spinebench.weights import read_records

    out = tmp_path / "p.json"
    rc = main(["predict", str(inputs), "--weights", str(weights), "--json", "--out", str(out), "-q"])
    assert rc == 1  # one file could not be read
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "d_broken.png" in err[0] and err[0].startswith("spinebench: ")
    text = out.read_text()
    doc = json.loads(text)
    records = read_records(weights)
    assert doc["spinebench_version"] == __version__ and "not a diagnosis" in doc["disclaimer"]
    for name in MODELS:
        p = doc["provenance"]["models"][name]
        assert p["weights_sha256"] == records[name].sha256 and len(p["weights_sha256"]) == 64
        assert p["run_id"] == "20250101-000000-quick" and p["pretrained"] is False
        assert p["data_kind"] == "synthetic + real"
    by_file = {Path(e["file"]).name: e for e in doc["files"]}
    assert set(by_file) == {"a_scoliosis.png", "b_cr.dcm", "c_dicom_without_extension", "d_broken.png"}
    assert "error" in by_file["d_broken.png"] and "result" not in by_file["d_broken.png"]
    for fname in ("a_scoliosis.png", "b_cr.dcm", "c_dicom_without_extension"):
        r = by_file[fname]["result"]
        assert list(r["models"]) == MODELS and r["provenance"] == doc["provenance"]
        for name, m in r["models"].items():
            for f in FINDINGS:
                assert m[f]["positive"] == (m[f]["probability"] >= m[f]["threshold"])
        assert isinstance(r["models"]["det_faster_rcnn_inception_v2"]["boxes"], list)
    cr = by_file["b_cr.dcm"]["result"]["image"]
    assert cr["format"] == "dicom" and cr["modality"] == "CR" and cr["inverted"] is True
    for identity in ("CompressedSamples", "9RG1", "19400305", "Hamburg"):  # RG1's patient / institution fields
        assert identity not in text


def test_csv_rows_carry_provenance(inputs, weights, capsys):
    from spinebench.predict import BATCH_COLUMNS
    from spinebench.weights import read_records

    rc = main(["predict", str(inputs / "a_scoliosis.png"), str(inputs / "d_broken.png"), "--weights",
               str(weights), "--models", "cls_squeezenet1_1", "--csv", "-q"])
    assert rc == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == BATCH_COLUMNS and len(rows) == 2
    ok, bad = rows
    assert ok["model"] == "cls_squeezenet1_1" and ok["weights_sha256"] == read_records(weights)[
        "cls_squeezenet1_1"].sha256
    assert ok["spinebench_version"] == __version__ and ok["data_kind"] == "synthetic + real"
    assert ok["pretrained"] == "False" and ok["run_id"] == "20250101-000000-quick"
    for f in FINDINGS:
        assert int(ok[f"{f}_positive"]) == int(float(ok[f"{f}_probability"]) >= float(ok[f"{f}_threshold"]))
    assert bad["file"].endswith("d_broken.png") and bad["error"] and not bad["model"]


def test_all_good_files_exit_0_with_a_text_table_and_a_progress_bar(inputs, weights, capsys):
    rc = main(["predict", str(inputs / "a_scoliosis.png"), str(inputs / "c_dicom_without_extension"),
               "--weights", str(weights), "--models", "cls_squeezenet1_1"])
    assert rc == 0
    cap = capsys.readouterr()
    assert "a_scoliosis.png:" in cap.out and "cls_squeezenet1_1" in cap.out and "not a diagnosis" in cap.out
    assert "predict" in cap.err and "/2 " in cap.err  # tqdm's bar over the 2 files


def test_usage_errors_are_one_line_and_exit_2(inputs, weights, tmp_path, capsys):
    for argv, msg in (([str(tmp_path / "missing.png"), "--weights", str(weights)], "no such file"),
                      ([str(inputs), "--weights", str(tmp_path)], "no usable trained models|no trained"),
                      ([str(inputs), "--weights", str(weights), "--models", "cls_resnet50"], "no trained weights"),
                      ([str(inputs), "--weights", str(weights), "--out", str(tmp_path / "x.txt")], "--json or --csv")):
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("spinebench: error:") and "\n" not in err
        assert __import__("re").search(msg, err), err
    with pytest.raises(SystemExit) as e:
        main(["predict", str(inputs), "--json", "--csv"])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def weights_with_cobb(weights, tmp_path_factory) -> Path:
    import torch

    from spinebench.engine.weights import save_weights
    from spinebench.models import create_model, list_models

    cobb = list_models(task="cobb")
    if not cobb:
        pytest.skip("no Cobb-angle model registered")
    wdir = tmp_path_factory.mktemp("cli_weights_cobb")
    for p in weights.iterdir():
        shutil.copy(p, wdir)
    torch.manual_seed(0)
    kwargs = {"input_size": [128, 64]}
    save_weights(create_model(cobb[0], pretrained="none", **kwargs), wdir,
                 meta={"model": cobb[0], "task": "cobb", "thresholds": [], "run_id": "20250101-000000-quick",
                       "data": "aasce=/x", "model_kwargs": kwargs, "pretrained": False})
    return wdir


def test_report_per_xray_is_self_contained(inputs, weights_with_cobb, tmp_path, capsys):
    import base64
    import re

    from PIL import Image

    from spinebench import DISCLAIMER
    from spinebench.weights import read_records

    reports = tmp_path / "reports"
    rc = main(["predict", str(inputs), "--weights", str(weights_with_cobb), "--json", "--report", str(reports),
               "-q"])
    assert rc == 1
    doc = json.loads(capsys.readouterr().out)
    pages = sorted(p.name for p in reports.iterdir())
    assert pages == ["a_scoliosis.html", "b_cr.html", "c_dicom_without_extension.html"]  # not the broken file
    assert {Path(e["report"]).name for e in doc["files"] if "report" in e} == set(pages)
    records = read_records(weights_with_cobb)
    assert any(r.task == "cobb" for r in records.values())  # every page also carries the Cobb model's picture
    for name in pages:
        text = (reports / name).read_text()
        assert DISCLAIMER in text
        assert not re.search(r"(src|href)=['\"](?!data:)", text), name  # nothing outside the file
        uris = re.findall(r"src='data:image/png;base64,([^']+)'", text)
        assert len(uris) == 1 + len(records), name  # the model view, then one picture per model
        for u in uris:
            im = Image.open(io.BytesIO(base64.b64decode(u)))
            im.load()
            assert im.mode in ("L", "RGB") and min(im.size) >= 32  # the view is grey, the drawings RGB
        for rec in records.values():
            assert rec.sha256 in text and rec.model in text
        assert "Cobb angles" in text and "grade" in text and "implant p" in text  # Cobb section, summary table
        assert re.search(r"[TL]\d+-[TL]\d+ \d+\.\d°", text)  # curves named by their end vertebrae
    cr = (reports / "b_cr.html").read_text()
    for identity in ("CompressedSamples", "9RG1", "19400305", "Hamburg"):
        assert identity not in cr
    assert "MONOCHROME1" in cr and "CR" in cr  # technical facts are shown
