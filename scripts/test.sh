#!/usr/bin/env bash
# Builds and runs the CPU test suite (CTest label "cpu"), then the smoke run
# of hydra-eval --claims (label "claims") on its own: its timing claims want
# a machine that is not also running the other tests. GPU tests are labelled
# "gpu": run them with `ctest --test-dir build -L gpu` on a GPU host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build -L cpu --output-on-failure -j "$(nproc 2>/dev/null || echo 2)"
ctest --test-dir build -L claims --output-on-failure -V
