"""Data-source specs, patient-level splits, split files, manifests, ``data inspect`` and the ``data`` CLI."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from spinebench.data import sources
from spinebench.data.inspect import finding_of, summarize
from spinebench.data.records import make_record, read_manifest, write_manifest
from spinebench.data.sources import load_records, parse_spec
from spinebench.data.splits import (
    SPLITS, apply_split_file, assign_splits, check_splits, split_counts, write_split_file,
)
from spinebench.errors import SpecError, SplitError

REPO = Path(__file__).resolve().parent.parent
MINI = REPO / "tests" / "fixtures" / "folder_mini"
VINDR = REPO / "tests" / "fixtures" / "vindr_mini"


# ------------------------------------------------------------------------------------------------ specs

def test_parse_spec_plain_and_path_with_colon():
    assert parse_spec("folder=/data/x") == ([], "folder", "/data/x")
    assert parse_spec("  vindr=/a:b/c ") == ([], "vindr", "/a:b/c")  # a colon inside the path is not a wrapper
    assert parse_spec("manifest=C:/m.csv") == ([], "manifest", "C:/m.csv")


@pytest.mark.parametrize("spec, message", [
    ("", "empty data spec"),
    ("   ", "empty data spec"),
    ("nosuch=/x", "unknown data source 'nosuch'"),
    ("folder=", "names no path after '='"),
    ("hybridx:folder=/x", "unknown data source 'hybridx:folder'"),
])
def test_parse_spec_refusals(spec, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(spec)


def test_wrapper_prefixes_are_parsed_and_applied(monkeypatch):
    def tag(records):
        for r in records:
            r["origin_split"] = r["origin_split"] + "+tagged"
        return records

    monkeypatch.setitem(sources._WRAPPERS, "tagw", tag)
    monkeypatch.setitem(sources._WRAPPERS, "tagv", tag)
    assert parse_spec("tagw:folder=/x") == (["tagw"], "folder", "/x")
    assert parse_spec("tagv:tagw:folder=/x") == (["tagv", "tagw"], "folder", "/x")
    recs = load_records(f"tagv:tagw:folder={MINI}")
    assert {r["origin_split"] for r in recs} == {"+tagged+tagged"}
    assert "tagw:" in sources.source_names()


def test_load_records_concatenates_and_refuses_duplicates():
    recs = load_records([f"folder={MINI}", f"coco={MINI / 'coco.json'}", f"vindr={VINDR}"])
    assert Counter(r["source"] for r in recs) == {"folder": 3, "coco": 3, "vindr": 4}
    with pytest.raises(SpecError, match="appears twice"):
        load_records([f"folder={MINI}", f"folder={MINI / 'labels.csv'}"])


# ------------------------------------------------------------------------------------------------ splits

def _population(n_patients: int = 200) -> list[dict]:
    """Patients with 1-3 images each: 20% implant, 30% scoliosis, 10% both, 40% normal, two sources."""
    recs = []
    for p in range(n_patients):
        kind = p % 10
        implant, scoliosis = int(kind in (0, 1, 8)), int(kind in (2, 3, 4, 8))
        source = "folder" if p % 2 else "coco"
        for k in range(1 + p % 3):
            recs.append(make_record(image_id=f"{source}/p{p}_{k}", patient_id=f"{source}/p{p}", source=source,
                                    implant=implant, scoliosis=scoliosis))
    return recs


def _split_of_patients(recs: list[dict]) -> dict[str, str]:
    out: dict[str, set] = defaultdict(set)
    for r in recs:
        out[r["patient_id"]].add(r["split"])
    assert all(len(s) == 1 for s in out.values()), "a patient crosses splits"
    return {p: next(iter(s)) for p, s in out.items()}


def test_splits_are_deterministic_and_order_independent():
    a = {r["image_id"]: r["split"] for r in assign_splits(_population(), seed=3)}
    b = {r["image_id"]: r["split"] for r in assign_splits(list(reversed(_population())), seed=3)}
    c = {r["image_id"]: r["split"] for r in assign_splits(_population(), seed=4)}
    assert a == b
    assert a != c


def test_splits_are_70_15_15_by_patient_and_stratified():
    recs = assign_splits(_population(), seed=0)
    by_patient = _split_of_patients(recs)
    counts = Counter(by_patient.values())
    assert counts == {"train": 140, "val": 30, "test": 30}
    # every stratum (findings x source) is cut the same way
    strata: dict[tuple, Counter] = defaultdict(Counter)
    for r in recs:
        if r["image_id"].endswith("_0"):
            strata[(r["implant"], r["scoliosis"], r["source"])][r["split"]] += 1
    for key, c in strata.items():
        n = sum(c.values())
        assert abs(c["train"] - 0.7 * n) <= 1 and abs(c["val"] - 0.15 * n) <= 1, (key, c)
        assert c["test"] >= 1
    assert split_counts(recs)["train"] == sum(r["split"] == "train" for r in recs)


def test_check_splits_refuses_a_crossing_patient_and_bad_split():
    recs = assign_splits(_population(20), seed=0)
    pid = next(r["patient_id"] for r in recs if sum(x["patient_id"] == r["patient_id"] for x in recs) > 1)
    mine = [r for r in recs if r["patient_id"] == pid]
    mine[0]["split"] = "test" if mine[1]["split"] != "test" else "train"
    with pytest.raises(SplitError, match="crosses splits"):
        check_splits(recs)
    recs[0]["split"] = "holdout"
    with pytest.raises(SplitError, match="no valid split"):
        check_splits(recs)


def test_official_mode_keeps_the_distributed_test_split():
    recs = _population()
    for r in recs:
        r["origin_split"] = "test" if int(r["patient_id"].split("/p")[1]) % 5 == 0 else "training"
    assign_splits(recs, seed=0, mode="official")
    for r in recs:
        assert (r["split"] == "test") == (r["origin_split"] == "test")
    non_test = Counter(s for p, s in _split_of_patients(recs).items() if s != "test")
    assert abs(non_test["train"] / (non_test["train"] + non_test["val"]) - 0.7 / 0.85) < 0.05


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "random"}, "unknown split mode"),
    ({"fractions": (0.5, 0.5)}, "three non-negative"),
    ({"fractions": (0.8, 0.3, -0.1)}, "three non-negative"),
    ({"fractions": (0.7, 0.2, 0.2)}, "summing to 1"),
])
def test_bad_split_arguments(kwargs, message):
    with pytest.raises(SplitError, match=message):
        assign_splits(_population(10), **kwargs)


def test_split_file_round_trip(tmp_path):
    recs = assign_splits(_population(), seed=7)
    path = write_split_file(recs, tmp_path / "splits" / "split.csv")
    fresh = apply_split_file(_population(), path)
    assert [r["split"] for r in fresh] == [r["split"] for r in recs]
    extra = _population() + [make_record(image_id="new/x", patient_id="new/x", source="folder")]
    with pytest.raises(SplitError, match="1 images are not in split file"):
        apply_split_file(extra, path)
    with pytest.raises(SplitError, match="split file not found"):
        apply_split_file(_population(), tmp_path / "none.csv")


# ------------------------------------------------------------------------------------------------ manifest

def test_manifest_round_trip(tmp_path):
    recs = assign_splits(load_records([f"folder={MINI}", f"vindr={VINDR}"]), seed=0)
    landmarks = [[float(i), float(2 * i) + 0.25] for i in range(68)]
    recs.append(make_record(image_id="aasce/x", patient_id="aasce/1", source="aasce", path=str(MINI / "p03_scoliosis.png"),
                            split="test", origin_split="training", scoliosis=1, cobb_pt=41.1388, cobb_mt=14.63,
                            cobb_tl=0.0, width=32, height=48, boxes=[[1.5, 2.0, 30.0, 46.0, 2]],
                            landmarks=landmarks))
    path = write_manifest(recs, tmp_path / "out" / "manifest.csv")
    back = read_manifest(path)
    assert len(back) == len(recs)
    for a, b in zip(recs, back):
        for key, value in a.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(b[key]), key
            else:
                assert b[key] == value, (a["image_id"], key)
    assert not (tmp_path / "out" / "manifest.csv.tmp").exists()
    # the same through the manifest= spec
    assert [r["image_id"] for r in load_records(f"manifest={path}")] == [r["image_id"] for r in recs]


def test_manifest_relative_paths_and_refusals(tmp_path):
    (tmp_path / "img.png").write_bytes((MINI / "p03_scoliosis.png").read_bytes())
    write_manifest([make_record(image_id="folder/img", patient_id="folder/img", source="folder", path="img.png")],
                   tmp_path / "m.csv")
    (rec,) = read_manifest(tmp_path / "m.csv")
    assert rec["path"] == str((tmp_path / "img.png").resolve())
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SpecError, match="not a spinebench manifest"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(SpecError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")


# ------------------------------------------------------------------------------------------------ inspect

def test_summarize_counts():
    recs = assign_splits(_population(), seed=0)
    text = summarize(recs)
    lines = {tuple(line.split()[:2]): line.split()[2:] for line in text.splitlines()[2:] if line.strip()}
    # all/all row: images, patients, normal, implant, scoliosis, both
    n_images = len(recs)
    finding = Counter(finding_of(r) for r in recs)
    assert lines[("all", "all")] == [str(v) for v in (n_images, 200, finding["normal"], finding["implant"],
                                                      finding["scoliosis"], finding["both"])]
    train = [r for r in recs if r["split"] == "train"]
    assert lines[("all", "train")][:2] == [str(len(train)), "140"]
    assert ("coco", "test") in lines and ("folder", "val") in lines
    assert "Cobb" not in text  # no angles in these records
    assert summarize([]) == "no images"


def test_summarize_unassigned_and_cobb_bands():
    recs = [make_record(image_id=f"aasce/{i}", patient_id=f"aasce/{i // 2}", source="aasce", scoliosis=int(a >= 10),
                        cobb_pt=a, cobb_mt=0.0, cobb_tl=0.0) for i, a in enumerate([5.0, 12.0, 30.0, 45.0, 50.0])]
    text = summarize(recs)
    (row,) = [line.split() for line in text.splitlines() if line.startswith("aasce")]  # no split yet: "-"
    assert row == ["aasce", "-", "5", "3", "1", "0", "4", "0"]
    row = next(line for line in text.splitlines() if line.startswith("-") and line.split()[0] == "-")
    assert row.split() == ["-", "5", "1", "1", "1", "2"]  # none, mild, moderate, severe


# ------------------------------------------------------------------------------------------------ CLI

def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "spinebench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_manifest_and_inspect(tmp_path):
    out = tmp_path / "m.csv"
    res = _cli("data", "manifest", "folder=tests/fixtures/folder_mini", "--out", str(out), "--seed", "1")
    assert res.returncode == 0, res.stderr
    assert "wrote 3 images" in res.stdout
    recs = read_manifest(out)
    assert len(recs) == 3 and all(r["split"] in SPLITS for r in recs)
    assert sorted(r["implant"] for r in recs) == [0, 0, 1]
    res = _cli("-q", "data", "inspect", "folder=tests/fixtures/folder_mini", "--split-file", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split()[:4] == ["source", "split", "images", "patients"]


@pytest.mark.parametrize("args, message", [
    (["data", "manifest", "nosuch=/x", "--out", "OUT"], "unknown data source 'nosuch'"),
    (["data", "manifest", "folder=/no/such/folder", "--out", "OUT"], "folder=/no/such/folder: not found"),
    (["data", "manifest", "folder=tests/fixtures/folder_mini", "--out", "OUT", "--bogus"], "--bogus"),
    (["data", "inspect", "vindr=tests/fixtures/folder_mini"], "no annotations/ folder"),
    (["-q", "run-all", "--data", "folder=tests/fixtures/folder_mini", "--models", "cobb_vertebra_resnet34", "--out", "OUT",
      "--results", "OUT", "--weights", "OUT"], "needs vertebra landmarks"),
    (["run-all", "--data", "folder=tests/fixtures/folder_mini", "--epochs", "0", "--out", "OUT"], "--epochs must be"),
    (["run-all", "--data", "folder=tests/fixtures/folder_mini", "--image-size", "20", "--models", "cls_resnet50",
      "--out", "OUT"], "below cls_resnet50's minimum input of 32 x 32"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, args, message):
    res = _cli(*[str(tmp_path / "m.csv") if a == "OUT" else a for a in args])
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr
    assert not (tmp_path / "m.csv").exists()


def test_cli_version_is_the_package_version():
    import spinebench

    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"spinebench {spinebench.__version__}"
