#!/usr/bin/env bash
# The main job on a sensible default: install dependencies, build, then show
# what this build can do and run the model on the CPU (a forward and
# backward of a small HydraLM and of its dense twin, timed).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/hydra-info
./build/hydra-bench cpu --d-model 128 --layers 4 --batch 4 --seq 256 --steps 3
