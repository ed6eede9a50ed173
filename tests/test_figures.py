"""Tables, figures and reports from a small fake run folder (six models + a Cobb model, real metric code)."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from spinebench import FINDINGS
from spinebench.cli import main
from spinebench.paper import PAPER_RESULTS

SIX = [p["model"] for p in PAPER_RESULTS]
COBB = "cobb_vertebra_resnet34"
#: how well each fake model separates the classes (DenseNet best, as in the paper)
SKILL = {"det_faster_rcnn_inception_v2": 1.6, "det_faster_rcnn_inception_resnet_v2": 1.4, "cls_resnet50": 2.0,
         "cls_densenet121": 3.0, "cls_squeezenet1_1": 1.2, "cls_inception_v3": 2.4}


def _write_images(root: Path, n: int, rng: np.random.Generator) -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        implant, scoliosis = int(i % 4 in (1, 3)), int(i % 4 in (2, 3))
        img = np.tile(np.linspace(0.1, 0.3, 48, dtype=np.float32), (96, 1))
        bend = 6 * np.sin(np.arange(96) / 15) if scoliosis else np.zeros(96)
        for y in range(8, 88):  # a "spine", curved when scoliotic
            img[y, 20 + int(bend[y]):28 + int(bend[y])] = 0.7
        if implant:
            img[50:70, 14 + int(bend[60]):34 + int(bend[60])] = 1.0
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(root / "images" / f"img{i:03d}.png")
        rows.append({"path": f"images/img{i:03d}.png", "implant": implant, "scoliosis": scoliosis,
                     "patient_id": f"p{i:03d}"})
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "implant", "scoliosis", "patient_id"])
        w.writeheader()
        w.writerows(rows)


def _probs(y: np.ndarray, skill: float, rng: np.random.Generator) -> np.ndarray:
    z = rng.normal(0, 1, y.shape) + skill * (y - 0.5) * 2
    return 1 / (1 + np.exp(-z))


def make_fake_run(tmp: Path, cobb: bool = True) -> Path:
    """A run folder as spinebench.engine.runner writes it, from a tiny folder= data set and fake probabilities
    scored by the real protocol (evaluate_image_level)."""
    from spinebench.data.sources import load_records
    from spinebench.data.splits import assign_splits, write_split_file
    from spinebench.evaluation.metrics import choose_thresholds, evaluate_image_level
    from spinebench.evaluation.results import append_rows, make_row

    rng = np.random.default_rng(0)
    data_dir = tmp / "data"
    _write_images(data_dir, 64, rng)
    spec = f"folder={data_dir}"
    records = assign_splits(load_records([spec]), seed=0)
    run = tmp / "run"
    write_split_file(records, run / "split.csv")
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")}
    (run / "config.json").write_text(json.dumps({
        "run_id": "fake-run", "data": [spec], "profile": "quick", "models": SIX, "seeds": [0], "device": "cpu",
        "precision": "fp32", "pretrained": "auto", "image_size": None, "epochs": None, "split_mode": "patient",
        "split_seed": 0, "split_counts": counts, "git_commit": "abc1234", "torch": "x",
        "started": "2025-01-01T00:00:00+00:00"}, indent=2))
    val = [r for r in records if r["split"] == "val"]
    test = [r for r in records if r["split"] == "test"]
    yv = np.array([[r[f] for f in FINDINGS] for r in val])
    yt = np.array([[r[f] for f in FINDINGS] for r in test])
    rows = []
    for k, model in enumerate(SIX):
        task = "detection" if model.startswith("det_") else "classification"
        pv, pt = _probs(yv, SKILL[model], rng), _probs(yt, SKILL[model], rng)
        thr = choose_thresholds(yv, pv)
        metrics = evaluate_image_level(yt, pt, [r["patient_id"] for r in test], thr, n_boot=50, seed=0)
        if task == "detection":
            metrics.update({"map": 0.3 + 0.05 * k, "map_lo": 0.2, "map_hi": 0.45, "map_50": 0.6, "map_50_lo": 0.45,
                            "map_50_hi": 0.75, "map_Lum": 0.4, "map_sco": 0.2, "ap50_Lum": 0.7,
                            "ap50_sco": math.nan})
        row = make_row(run_id="fake-run", model=model, task=task, paper_name=model, data=spec,
                       n_train=counts["train"], n_val=counts["val"], n_test=counts["test"], seed=0,
                       pretrained=k != 4, device="cpu", epochs=4, input_size="128x128", params_m=10.0 + k,
                       train_seconds=30.0 + k, latency_ms=5.0 + k, status="ok", **metrics)
        rows.append(row)
        hist = [{"epoch": e, "train_loss": 1.0 / e + 0.01 * k, "val_loss": 0.8 / e + 0.02 * k,
                 "val_auroc_implant": 0.5 + 0.1 * e, "val_auroc_scoliosis": 0.45 + 0.1 * e, "lr": 1e-3,
                 "seconds": 2.0} for e in range(1, 5)]
        (run / "metrics").mkdir(exist_ok=True)
        (run / "metrics" / f"{model}-s0.json").write_text(json.dumps(
            {"row": row, "history": hist, "thresholds": thr.tolist()}, default=str))
        (run / "logs").mkdir(exist_ok=True)
        with open(run / "logs" / f"{model}-s0.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(hist[0]))
            w.writeheader()
            w.writerows(hist)
        (run / "predictions").mkdir(exist_ok=True)
        with open(run / "predictions" / f"{model}-s0.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "patient_id"] + [f"{a}_{b}" for b in FINDINGS for a in ("true", "prob", "pred")])
            for i, r in enumerate(test):
                cells = [r["image_id"], r["patient_id"]]
                for j, _ in enumerate(FINDINGS):
                    cells += [int(yt[i, j]), f"{pt[i, j]:.6f}", int(pt[i, j] >= thr[j])]
                w.writerow(cells)
    if cobb:
        true = rng.uniform(0, 50, (len(test), 3))
        pred = true + rng.normal(1.0, 4.0, true.shape)
        with open(run / "predictions" / f"{COBB}-s0-cobb.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image_id", "patient_id", "true_pt", "true_mt", "true_tl", "pred_pt", "pred_mt", "pred_tl"])
            for i, r in enumerate(test):
                w.writerow([r["image_id"], r["patient_id"], *np.round(true[i], 2), *np.round(pred[i], 2)])
        rows.append(make_row(run_id="fake-run", model=COBB, task="cobb", data=spec, seed=0, status="ok",
                             n_test=counts["test"], smape=21.5, smape_lo=15.0, smape_hi=28.0, mae_pt=3.1,
                             mae_mt=4.2, mae_tl=3.9))
    append_rows(run / "leaderboard.csv", rows)
    return run


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("fig"))


@pytest.fixture(scope="module")
def report(fake_run, tmp_path_factory) -> Path:
    from spinebench import figures

    return figures.build_report(run_dir=fake_run, out=tmp_path_factory.mktemp("rep") / "report", static=False)


def test_every_output_file_exists(report):
    expected = ["report.html", "report.md"]
    for stem in ("table5_detection_api", "table6_transfer_learning"):
        expected += [f"tables/{stem}.{ext}" for ext in ("csv", "md", "tex")]
    expected += ["tables/leaderboard.csv", "tables/leaderboard.md", "figures/plotly.min.js"]
    expected += [f"figures/{n}.html" for n in ("fig8_detection_api", "fig9_transfer_learning", "roc_curves",
                                              "confusion_matrices", "training_curves", "detection_map",
                                              "cobb_scatter", "cobb_bland_altman", "test_images")]
    for rel in expected:
        p = report / rel
        assert p.is_file() and p.stat().st_size > 100, rel


def test_tables_carry_paper_values_and_ours(report):
    csv_rows = list(csv.DictReader(open(report / "tables/table6_transfer_learning.csv")))
    dense = next(r for r in csv_rows if r["model"] == "cls_densenet121")
    assert float(dense["paper_accuracy"]) == pytest.approx(0.935)
    assert float(dense["paper_sensitivity"]) == pytest.approx(0.97)
    lb = {r["Model"]: r for r in csv.DictReader(open(report / "tables/leaderboard.csv"))}
    assert lb["densenet121"]["Sensitivity (paper)"] == "0.97" and lb["cobb_vertebra_resnet34"]["SMAPE (%)"]
    ours = float(dense["ours_sensitivity"])
    assert float(dense["ours_sensitivity_lo"]) <= ours <= float(dense["ours_sensitivity_hi"])
    md = (report / "tables/table6_transfer_learning.md").read_text()
    assert "| DenseNet | densenet121 |" in md and "0.935" in md and f"{ours:.2f} [" in md
    tex = (report / "tables/table6_transfer_learning.tex").read_text()
    assert r"\begin{tabular}" in tex and "0.935" in tex and "densenet121" in tex and r"\toprule" in tex
    t5 = (report / "tables/table5_detection_api.md").read_text()
    assert "faster\\_rcnn" not in t5 and "faster_rcnn_inception_v2_coco" in t5 and "2.274" in t5
    assert "faster\\_rcnn\\_inception\\_v2\\_coco" in (report / "tables/table5_detection_api.tex").read_text()


def test_report_states_data_and_weights(report):
    md = (report / "report.md").read_text()
    assert "Data: REAL. folder=" in md and "is real" in md
    assert "Trained from random initialisation" in md and "squeezenet1_1" in md
    assert "Profile 'quick'" in md and "Caveats" in md
    html = (report / "report.html").read_text()
    assert html.count("Plotly.newPlot") >= 9 and html.count("<script type='text/javascript'>") == 1
    assert 'id="spinebench-fig9_transfer_learning"' in html
    # findings per split come from the loaded records: 64 images, every 4th normal
    assert "| test |" in md and "Findings per split" in md


def test_figure_contents(fake_run):
    from spinebench import figures
    from spinebench.evaluation.results import read_rows

    rows = read_rows(fake_run / "leaderboard.csv")
    fig = figures.comparison_figure(rows, ["cls_densenet121", "cls_resnet50"], title="t")
    paper = [t for t in fig.data if t.name == "paper"]
    assert paper[0].y == (0.97, 0.91)  # sensitivity panel, paper's values
    ours = [t for t in fig.data if t.name == "ours (95% CI)"][0]
    assert all(0 <= v <= 1 for v in ours.y) and ours.error_y.array is not None
    lb = figures.leaderboard_table(rows)
    cell = lb.loc[lb["Model"] == "densenet121", "Sensitivity"].item()
    assert cell.count("[") == 1 and cell.count(",") == 1  # "0.91 [0.85, 0.96]"
    assert lb.loc[lb["Model"] == "densenet121", "Sensitivity (paper)"].item() == "0.97"
    run = figures.load_run(fake_run)
    roc = figures.roc_figure(run.predictions)
    assert {t.name for t in roc.data if t.name} == {"frcnn_inception_v2", "frcnn_inception_resnet_v2", "resnet50",
                                                    "densenet121", "squeezenet1_1", "inception_v3"}
    cm = figures.confusion_figure(run.predictions, run.any_thresholds)
    n_test = len(run.predictions["cls_resnet50"])
    assert all(int(np.sum(t.text)) == n_test for t in cm.data)  # every matrix counts every test image once


def test_build_is_deterministic(fake_run, report, tmp_path):
    from spinebench import figures

    again = figures.build_report(run_dir=fake_run, out=tmp_path / "again", static=False)
    files = sorted(p for p in report.rglob("*") if p.is_file())
    assert {p.relative_to(report) for p in files} == {p.relative_to(again) for p in again.rglob("*") if p.is_file()}
    for p in files:
        q = again / p.relative_to(report)
        assert hashlib.sha256(p.read_bytes()).digest() == hashlib.sha256(q.read_bytes()).digest(), p.name


FIGURES = ("fig8_detection_api", "fig9_transfer_learning", "roc_curves", "confusion_matrices", "training_curves",
           "detection_map", "cobb_scatter", "cobb_bland_altman", "test_images")


def test_static_png_and_svg_without_a_browser(fake_run, tmp_path, monkeypatch):
    """A fresh machine: no Chrome/Chromium anywhere on PATH, no BROWSER_PATH, and kaleido unimportable. Every
    figure still gets a PNG that decodes and shows something, and an SVG; the same figure again gives the same
    pixels and byte-identical SVG."""
    import shutil
    import sys

    from PIL import Image

    from spinebench import figures

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setitem(sys.modules, "kaleido", None)  # `import kaleido` raises ImportError
    assert not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))
    assert figures.static_export_error() is None
    out = figures.build_report(run_dir=fake_run, out=tmp_path / "a", static=True)
    for name in FIGURES:
        png, svg = out / "figures" / f"{name}.png", out / "figures" / f"{name}.svg"
        im = Image.open(png)
        im.load()
        a = np.asarray(im.convert("RGB"))
        assert min(a.shape[:2]) >= 400 and a.std() > 10, name  # not blank
        assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20, name  # text, lines, colours: not a flat fill
        assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text(), name
    fig9 = np.asarray(Image.open(out / "figures/fig9_transfer_learning.png").convert("RGB"))
    assert fig9.shape[0] == 1000 and fig9.shape[1] > 2000  # scale 2 of the 500 px tall layout
    # grey paper bars and blue bars of ours are both drawn
    assert (np.abs(fig9 - np.array([166, 166, 166])).sum(2) < 10).sum() > 10_000
    assert (np.abs(fig9 - np.array([31, 119, 180])).sum(2) < 10).sum() > 10_000
    md = (out / "report.md").read_text()
    assert "![Figure 9 (paper) vs ours" in md and "(figures/fig9_transfer_learning.png)" in md
    assert "Static PNG/SVG export failed" not in md
    run = figures.load_run(fake_run)
    again = figures.write_figures({"fig9_transfer_learning": figures.comparison_figure(
        run.rows, SIX[2:], title="Figure 9: transfer-learning models, paper vs ours")}, tmp_path / "b")
    assert np.array_equal(np.asarray(Image.open(again["fig9_transfer_learning"]["png"]).convert("RGB")), fig9)
    assert (out / "figures/fig9_transfer_learning.svg").read_bytes() == again["fig9_transfer_learning"]["svg"] \
        .read_bytes()


def test_static_export_failure_keeps_html(fake_run, tmp_path, monkeypatch, caplog):
    from spinebench import figures
    from spinebench.figures import static

    real = static.write_static

    def broken_for_roc(fig, paths, **kw):
        if "roc_curves" in str(paths["png"]):
            raise RuntimeError("cannot draw")
        return real(fig, paths, **kw)

    monkeypatch.setattr(static, "write_static", broken_for_roc)
    out = figures.build_report(run_dir=fake_run, out=tmp_path / "r", n_images=0)
    assert (out / "figures/roc_curves.html").is_file() and not list((out / "figures").glob("roc_curves.*g"))
    assert (out / "figures/fig8_detection_api.png").is_file()
    md = (out / "report.md").read_text()
    assert "Static PNG/SVG export failed here for some figures" in md
    assert sum("static PNG/SVG of figure roc_curves failed" in r.message for r in caplog.records) == 1
    assert "[interactive figure](figures/roc_curves.html)" in md
    assert "(figures/fig8_detection_api.png)" in md


def test_results_csv_mode(fake_run, tmp_path, capsys):
    rc = main(["figures", "--results", str(fake_run / "leaderboard.csv"), "--out", str(tmp_path / "r"),
               "--no-static"])
    assert rc == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "need the run folder (--run)" in md
    assert (tmp_path / "r" / "figures" / "fig8_detection_api.html").is_file()
    assert not (tmp_path / "r" / "figures" / "roc_curves.html").exists()


def test_bad_inputs_are_one_line(tmp_path, capsys):
    assert main(["figures", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spinebench: error:") and "run folder not found" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert main(["figures", "--run", str(tmp_path / "empty")]) == 2
    assert "holds no results" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["figures", "--results", str(bad)]) == 2
    assert "not a spinebench results CSV" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["figures", "--run", "x", "--results", "y"])
    assert e.value.code == 2
