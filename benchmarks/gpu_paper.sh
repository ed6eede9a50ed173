#!/usr/bin/env bash
# The paper's protocol on one GPU, timed and sampled (see benchmarks/gpu_paper.py):
#   bash benchmarks/gpu_paper.sh [--out DIR] [--aasce PATH] [--budget 570] [--time-budget 400]  # GPU machine
#   bash benchmarks/gpu_paper.sh --dry-run --out DIR                          # CPU, tiny settings, two lanes
#   bash benchmarks/gpu_paper.sh --pack-aasce .gpu/aasce2019                  # a 1024 px AASCE copy to carry
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/gpu_paper.py" "$@"
