#!/usr/bin/env bash
# The paper's protocol on one GPU, timed and sampled (see benchmarks/gpu_paper.py):
#   bash benchmarks/gpu_paper.sh [--out DIR] [--aasce PATH] [--budget 570]   # GPU machine
#   bash benchmarks/gpu_paper.sh --dry-run --out DIR                          # CPU, tiny settings
set -euo pipefail
exec "${PYTHON:-python}" "$(dirname "${BASH_SOURCE[0]}")/gpu_paper.py" "$@"
