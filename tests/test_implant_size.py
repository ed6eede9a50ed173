"""benchmarks/bench_implant_size.py: where a detector's ``Lum`` AP goes, per construct size.

``lum_box_hits`` is what the benchmark's reading rests on (a size quarter with no box at IoU 0.3 is out of reach;
a gap between IoU 0.3 and 0.5 is localisation), so it is checked on boxes with a known overlap.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_benchmark

from spinebench import LABEL_MAP

LUM, SCO = LABEL_MAP["Lum"], LABEL_MAP["sco"]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_implant_size")


def _dets(*boxes):
    return {"boxes": torch.tensor([b[:4] for b in boxes], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([b[4] for b in boxes], dtype=torch.int64)}


def test_lum_box_hits_counts_overlap_of_lum_boxes_only(bench):
    truth = [_dets((0, 0, 10, 10, LUM)), _dets((0, 0, 10, 10, LUM)), _dets((0, 0, 10, 10, LUM)),
             _dets((0, 0, 10, 10, SCO))]
    found = [_dets((0, 0, 10, 6, LUM)),           # IoU 0.6
             _dets((0, 0, 10, 4, LUM), (0, 0, 10, 10, SCO)),  # Lum IoU 0.4; the exact box is the wrong class
             _dets(),                               # nothing found
             _dets((0, 0, 10, 10, LUM))]            # no true Lum box: not a hit
    assert bench.lum_box_hits(found, truth, 0.5).tolist() == [True, False, False, False]
    assert bench.lum_box_hits(found, truth, 0.3).tolist() == [True, True, False, False]
    assert np.array_equal(bench.lum_box_hits(found, truth, 0.3), bench.lum_box_hits(found, truth, 0.35))
