#!/usr/bin/env bash
# Configures and builds into build/ (CUDA is switched on when nvcc is found;
# pass -DHYDRA_CUDA=OFF in CMAKE_ARGS for a CPU-only build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${CMAKE_ARGS:-} >/dev/null
cmake --build build -j "$jobs"
