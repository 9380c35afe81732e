#!/usr/bin/env bash
# 200 training steps of configs/shakespeare-char.ini on the GPU follow the
# CPU run of the same seed: the training losses at steps 50, 100 and 200
# agree within 2%. Skips (77) without a GPU or without TinyShakespeare.
# Usage: gpu_shakespeare_parity.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
gpus=$("$build/hydra-info" | awk '/GPUs/ {print $3}')
if [ "${gpus:-0}" = 0 ]; then echo "SKIP: no GPU"; exit 77; fi
text=${HYDRA_TEXT:-}
for t in "$text" "$src/data/tinyshakespeare.txt" "$src/../shared/data/tinyshakespeare.txt"; do
  if [ -n "$t" ] && [ -f "$t" ]; then text=$t; break; fi
  text=
done
if [ -z "$text" ]; then echo "SKIP: no tinyshakespeare.txt (set HYDRA_TEXT)"; exit 77; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/hydra-data" encode "$text" --out "$work/data" >/dev/null
common=(--set train.steps=200 --set train.eval_every=0 --set train.sample_every=0
        --set train.checkpoint_every=0 --set train.log_every=50 --set data.path="$work/data")
for dev in cpu cuda; do
  "$build/hydra-train" "$src/configs/shakespeare-char.ini" "${common[@]}" \
    --set train.device=$dev --out "$work/$dev" > "$work/$dev.log"
  grep -E "^device|tok/s" "$work/$dev.log" | head -2
done
loss_at() {  # loss_at DEVICE STEP
  grep "\"step\":$2," "$work/$1/metrics.jsonl" | grep '"loss"' | head -1 |
    sed 's/.*"loss":\([^,}]*\).*/\1/'
}
fail=0
for s in 50 100 200; do
  a=$(loss_at cpu $s) b=$(loss_at cuda $s)
  r=$(awk -v a="$a" -v b="$b" 'BEGIN { d = (b - a) / a; if (d < 0) d = -d; printf "%.4f", d }')
  ok=$(awk -v r="$r" 'BEGIN { print (r <= 0.02) ? "ok" : "FAIL" }')
  echo "step $s: loss cpu $a gpu $b relative difference $r $ok"
  [ "$ok" = ok ] || fail=1
done
exit $fail
