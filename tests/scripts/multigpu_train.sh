#!/usr/bin/env bash
# Data-parallel training on two GPUs with hydra-train --gpus 2, on
# configs/shakespeare-char.ini. One part per CTest test:
#   parity  2 GPUs at global batch G (16 x 1 x 2) against 1 GPU with
#           grad_accum 2 (16 x 2 x 1): the same batches, so the training
#           losses at steps 10..50 agree within 2%; rank 0 alone writes
#           metrics.jsonl (one line per step). The 2-GPU run compares the
#           ranks after every step (HYDRA_CHECK_REPLICAS=1): the weights and
#           the optimizer state gathered from its owners (ZeRO-1) must be the
#           same bits on both. The same with train.overlap_reduce (each
#           block's reduce started during the backward pass).
#   resume  saved on 2 GPUs (state gathered from both), resumed on 1
#           (grad_accum 2), and the reverse (state split between the two):
#           the resumed steps follow the straight 2-GPU run (first loss
#           finite, every loss within 2%).
#   die     --die-at-step 5 makes rank 1 exit with status 3: the job ends
#           with status 1 within 60 s and says that rank 1 failed.
# Skips (77) with fewer than two GPUs, without NCCL, or without
# TinyShakespeare ($HYDRA_TEXT, data/ or ../shared/data/tinyshakespeare.txt).
# Usage: multigpu_train.sh parity|resume|die BUILD_DIR SOURCE_DIR
set -euo pipefail
part=$1 build=$2 src=$3
info=$("$build/hydra-info")
gpus=$(awk '/GPUs/ {print $3}' <<<"$info")
if [ "${gpus:-0}" -lt 2 ]; then echo "SKIP: ${gpus:-0} GPU(s), need 2"; exit 77; fi
if ! grep -q "NCCL *: yes" <<<"$info"; then echo "SKIP: built without NCCL"; exit 77; fi
text=${HYDRA_TEXT:-}
for t in "$text" "$src/data/tinyshakespeare.txt" "$src/../shared/data/tinyshakespeare.txt"; do
  if [ -n "$t" ] && [ -f "$t" ]; then text=$t; break; fi
  text=
done
if [ -z "$text" ]; then echo "SKIP: no tinyshakespeare.txt (set HYDRA_TEXT)"; exit 77; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/hydra-data" encode "$text" --out "$work/data" >/dev/null
cfg=$src/configs/shakespeare-char.ini
common=(--set train.eval_every=0 --set train.sample_every=0 --set train.log_every=10
        --set data.path="$work/data" --set train.keep_checkpoints=100)

loss_at() {  # loss_at RUN_DIR STEP: the last logged loss of that step
  grep "\"step\":$2," "$1/metrics.jsonl" | grep '"loss"' | tail -1 |
    sed 's/.*"loss":\([^,}]*\).*/\1/'
}
fail=0
compare() {  # compare LABEL_A DIR_A LABEL_B DIR_B STEP...: within 2% at each step
  local la=$1 da=$2 lb=$3 db=$4
  shift 4
  for s in "$@"; do
    local a b r ok
    a=$(loss_at "$da" "$s") b=$(loss_at "$db" "$s")
    r=$(awk -v a="$a" -v b="$b" 'BEGIN { if (a == "" || b == "" || a == "null" || b == "null") { print "nan"; exit }
                                         d = (b - a) / a; if (d < 0) d = -d; printf "%.5f", d }')
    ok=$(awk -v r="$r" 'BEGIN { print (r != "nan" && r <= 0.02) ? "ok" : "FAIL" }')
    echo "step $s: loss $la $a, $lb $b, relative difference $r $ok"
    [ "$ok" = ok ] || fail=1
  done
}
train() {  # train LOG_NAME ARGS...: hydra-train, output in $work/LOG_NAME.log; returns its status
  local name=$1
  shift
  local rc=0
  "$build/hydra-train" "$cfg" "${common[@]}" "$@" >"$work/$name.log" 2>&1 || rc=$?
  grep -E "^(launching|data parallel|device)" "$work/$name.log" | head -3 | sed "s/^/  [$name] /"
  if [ "$rc" != 0 ] && [ "$rc" != 130 ]; then
    echo "  [$name] exit status $rc; the end of its log:"
    tail -20 "$work/$name.log" | sed "s/^/  [$name] /"
  fi
  return "$rc"
}

case $part in
parity)
  HYDRA_CHECK_REPLICAS=1 train two --gpus 2 --set train.steps=50 --set train.checkpoint_every=0 \
    --out "$work/two"
  HYDRA_CHECK_REPLICAS=1 train overlap --gpus 2 --set train.steps=50 --set train.checkpoint_every=0 \
    --set train.overlap_reduce=true --out "$work/overlap"
  train one --set train.device=cuda --set train.grad_accum=2 --set train.steps=50 \
    --set train.checkpoint_every=0 --out "$work/one"
  grep -h "tok/s" "$work/two.log" | tail -1 | sed 's/^/  2 GPUs: /'
  grep -h "tok/s" "$work/one.log" | tail -1 | sed 's/^/  1 GPU:  /'
  compare "2 GPUs" "$work/two" "1 GPU x accum 2" "$work/one" 10 20 30 40 50
  compare "2 GPUs, overlap_reduce" "$work/overlap" "1 GPU x accum 2" "$work/one" 10 20 30 40 50
  lines=$(grep -c '"loss"' "$work/two/metrics.jsonl")
  echo "metrics.jsonl of the 2-GPU run: $lines step lines (expected 50: rank 0 alone writes)"
  [ "$lines" = 50 ] || fail=1
  ;;
resume)
  steps=(--set train.steps=20 --set train.checkpoint_every=10)
  train straight --gpus 2 "${steps[@]}" --out "$work/straight"
  # Saved on 2 GPUs at step 10, resumed on 1 GPU (grad_accum 2: the same global batch).
  rc=0
  train a1 --gpus 2 "${steps[@]}" --stop-at-step 10 --out "$work/a" || rc=$?
  [ "$rc" = 130 ] || { echo "2-GPU run stopped at step 10 with status $rc (expected 130)"; fail=1; }
  train a2 --set train.device=cuda --set train.grad_accum=2 "${steps[@]}" --resume latest \
    --out "$work/a" || fail=1
  compare straight "$work/straight" "2 GPUs -> 1 GPU" "$work/a" 11 12 15 20
  # The reverse: saved on 1 GPU (grad_accum 2), resumed on 2 GPUs.
  rc=0
  train b1 --set train.device=cuda --set train.grad_accum=2 "${steps[@]}" --stop-at-step 10 \
    --out "$work/b" || rc=$?
  [ "$rc" = 130 ] || { echo "1-GPU run stopped at step 10 with status $rc (expected 130)"; fail=1; }
  train b2 --gpus 2 "${steps[@]}" --resume latest --out "$work/b" || fail=1
  compare straight "$work/straight" "1 GPU -> 2 GPUs" "$work/b" 11 12 15 20
  ;;
die)
  t0=$(date +%s.%N)
  rc=0
  timeout 120 "$build/hydra-train" "$cfg" "${common[@]}" --gpus 2 --set train.steps=200 \
    --set train.checkpoint_every=0 --die-at-step 5 --out "$work/die" >"$work/die.log" 2>&1 || rc=$?
  dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  grep -E "hydra" "$work/die.log" | sed 's/^/  /'
  echo "exit status $rc after $dt s (expected 1 within 60 s)"
  [ "$rc" = 1 ] || fail=1
  awk -v t="$dt" 'BEGIN { exit !(t < 60) }' || fail=1
  grep -q "error: the 2-GPU job failed: rank 1 (pid [0-9]*) exited with status 3" "$work/die.log" || {
    echo "no message naming rank 1 and its status"
    fail=1
  }
  ;;
*)
  echo "unknown part '$part' (parity, resume or die)"
  exit 2
  ;;
esac
exit $fail
