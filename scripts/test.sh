#!/usr/bin/env bash
# Builds and runs the CPU test suite (CTest label "cpu"). GPU tests are
# labelled "gpu": run them with `ctest --test-dir build -L gpu` on a GPU host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build -L cpu --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
