"""benchmarks/bench_false_alarms.py: which films without a finding the models rank highest for it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def fa():
    return load_benchmark("bench_false_alarms")


def test_rank_is_the_share_of_negatives_scored_below(fa):
    y = np.array([0, 1, 0, 0, 0, 1])
    p = np.array([0.9, 0.99, 0.1, 0.5, 0.5, 0.2])
    # the four films without the finding: 0.9 beats the 3 others, the two 0.5s one and a half, 0.1 none
    np.testing.assert_allclose(fa.ranks_among_negatives(y, p), [1.0, 0.0, 0.5, 0.5])
    assert len(fa.ranks_among_negatives(np.ones(3), np.zeros(3))) == 0


def test_films_are_ordered_by_their_mean_rank_over_the_models(fa):
    y = np.array([0, 0, 0, 1])
    scores = {"a": np.array([0.9, 0.2, 0.1, 0.95]),   # film 0 is a's worst false alarm
              "b": np.array([0.3, 0.8, 0.1, 0.7])}    # film 1 is b's
    ranked = fa.false_alarms(y, scores)
    assert [i for i, _, _ in ranked] == [0, 1, 2]     # 0 and 1 tie at 0.75: the lower index first; 3 has it
    assert ranked[0][1] == pytest.approx(0.75) and ranked[2][1] == pytest.approx(0.0)
    assert ranked[1][2] == {"a": 0.5, "b": 1.0}


def test_it_ranks_every_film_without_the_finding_and_a_wrong_folder_is_one_error(fa, tiny_data, tmp_path, capsys):
    import csv

    from test_predict import make_demo_weights

    weights = make_demo_weights(tmp_path.parent / "demo_weights")
    out = tmp_path / "fa.csv"
    assert fa.main(["--weights", str(weights), "--models", "cls_squeezenet1_1", "--data", tiny_data,
                    "--out", str(out), "--top", "3"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 15 and {r["model"] for r in rows} == {"cls_squeezenet1_1"}  # the 15 tiny films without
    means = [float(r["rank_mean"]) for r in rows]
    assert means == sorted(means, reverse=True) and 0.0 <= min(means) and max(means) == 1.0
    capsys.readouterr()
    missing = tmp_path / "missing.csv"
    assert fa.main(["--weights", str(weights), "--models", "cls_squeezenet1_1", "--data",
                    f"synth={tmp_path / 'nowhere'}", "--out", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err
    assert not missing.exists()
