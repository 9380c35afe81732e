#!/usr/bin/env bash
# The main job on a sensible default: install dependencies, build, and train
# the byte-level HydraLM of configs/shakespeare-char.ini (on the CPU when
# there is no GPU). Text: $HYDRA_TEXT, else data/tinyshakespeare.txt; with no
# text at all it trains the synthetic MQAR config instead, which needs no files.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/hydra-info
text="${HYDRA_TEXT:-}"
for candidate in data/tinyshakespeare.txt ../shared/data/tinyshakespeare.txt; do
  [ -z "$text" ] && [ -f "$candidate" ] && text="$candidate"
done
if [ -n "$text" ]; then
  ./build/hydra-data encode "$text" --out data/shakespeare-char
  ./build/hydra-train configs/shakespeare-char.ini --set data.path=data/shakespeare-char "$@"
  ./build/hydra-generate "runs/shakespeare-char/$(cat runs/shakespeare-char/latest)" \
    --prompt "ROMEO:" --max-new 300 --temperature 0.8 --seed 1
else
  echo "no text found (set HYDRA_TEXT=file.txt or put TinyShakespeare at data/tinyshakespeare.txt);"
  echo "training the synthetic MQAR config instead"
  ./build/hydra-train configs/mqar.ini "$@"
fi
