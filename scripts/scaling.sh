#!/usr/bin/env bash
# Data-parallel scaling of one config on 1, 2, 4, 8 GPUs of this host, and
# the loss of the widest run against one GPU at the same global batch.
#
#   scripts/scaling.sh --data DIR [--config configs/hydra-115m.ini]
#                      [--gpus "1 2 4 8"] [--steps 60] [--parity-steps 300]
#                      [--out runs/scaling] [--build build]
#
# Throughput: for each GPU count N, `hydra-train CONFIG --gpus N` at the
# config's per-GPU batch for --steps steps; the median step time and tokens/s
# (all ranks) of the second half of the steps, and the scaling efficiency
# tokens/s(N) / (N x tokens/s(1)).
# Parity: the widest N for --parity-steps steps against one GPU with
# grad_accum N (the same batches); the largest relative loss difference
# over the logged steps. 0 --parity-steps skips it.
# Every run's warmup and decay are scaled to its steps (a tenth and a fifth).
# Writes OUT/scaling.md (the tables and the commands) and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
cfg=configs/hydra-115m.ini data= gpus="1 2 4 8" steps=60 pstep=300 out=runs/scaling build=build
while [ $# -gt 0 ]; do
  case $1 in
    --config) cfg=$2 ;;
    --data) data=$2 ;;
    --gpus) gpus=$2 ;;
    --steps) steps=$2 ;;
    --parity-steps) pstep=$2 ;;
    --out) out=$2 ;;
    --build) build=$2 ;;
    *) echo "scaling.sh: unknown option '$1' (see the top of this script)" >&2; exit 2 ;;
  esac
  shift 2
done
if [ -z "$data" ]; then echo "scaling.sh: --data DIR (token shards, hydra-data encode) is required" >&2; exit 2; fi
have=$("$build/hydra-info" | awk '/GPUs/ {print $3}')
for n in $gpus; do
  if [ "$n" -gt 1 ] && [ "$n" -gt "${have:-0}" ]; then
    echo "scaling.sh: $n GPUs asked for, this host has ${have:-0}" >&2
    exit 2
  fi
done
mkdir -p "$out"
common=(--set data.path="$data" --set train.eval_every=0 --set train.sample_every=0
        --set train.checkpoint_every=0 --set train.log_every=1)

# median of the values on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# field KEY of the step lines of a metrics.jsonl from step FROM on
field() { grep '"loss"' "$1" | awk -v from="$3" -F'[:,]' '{ for (i = 1; i < NF; i++) { if ($i == "{\"step\"") s = $(i + 1); if ($i == "\"'"$2"'\"") v = $(i + 1) } if (s + 0 >= from) print v }'; }

run() {  # run NAME GPUS STEPS [ARGS...]
  local name=$1 n=$2 s=$3
  shift 3
  local extra=()
  [ "$n" -gt 1 ] && extra=(--gpus "$n")
  # The config's learning-rate schedule is for its full run: scaled to these steps
  # (warmup a tenth, decay a fifth), the same for every run of a comparison.
  local sched=(--set optim.warmup_steps=$((s / 10)) --set optim.decay_steps=$((s / 5)))
  echo "$build/hydra-train $cfg ${common[*]} --set train.steps=$s ${sched[*]} ${extra[*]} $* --out $out/$name" >>"$out/commands.txt"
  "$build/hydra-train" "$cfg" "${common[@]}" --set train.steps="$s" "${sched[@]}" "${extra[@]}" "$@" \
    --out "$out/$name" >"$out/$name.log" 2>&1 || { echo "run $name failed: see $out/$name.log" >&2; tail -5 "$out/$name.log" >&2; exit 1; }
}

: >"$out/commands.txt"
{
  echo "# Data-parallel scaling of $cfg"
  echo
  "$build/hydra-info" | sed -n '2p;/GPUs/,$p' | sed 's/^/    /'
  echo
  echo "| GPUs | ms/step (median) | tokens/s (all ranks) | scaling efficiency |"
  echo "|---|---|---|---|"
} >"$out/scaling.md"
base=
for n in $gpus; do
  run "g$n" "$n" "$steps"
  from=$((steps / 2 + 1))
  ms=$(field "$out/g$n/metrics.jsonl" ms "$from" | median)
  tps=$(field "$out/g$n/metrics.jsonl" tok_per_s "$from" | median)
  [ -z "$base" ] && [ "$n" = 1 ] && base=$tps
  eff=$(awk -v t="$tps" -v b="${base:-0}" -v n="$n" 'BEGIN { if (b > 0) printf "%.3f", t / (n * b); else print "-" }')
  printf '| %s | %.1f | %.0f | %s |\n' "$n" "$ms" "$tps" "$eff" >>"$out/scaling.md"
done
wide=${gpus##* }
if [ "$pstep" -gt 0 ] && [ "$wide" -gt 1 ]; then
  run "parity$wide" "$wide" "$pstep"
  run "parity1" 1 "$pstep" --set train.grad_accum="$wide"
  paste <(field "$out/parity$wide/metrics.jsonl" loss 1) <(field "$out/parity1/metrics.jsonl" loss 1) |
    awk -v w="$wide" -v s="$pstep" '{ d = ($1 - $2) / $2; if (d < 0) d = -d; if (d > m) { m = d; at = NR } }
      NR % 50 == 0 { rows = rows sprintf("| %d | %.4f | %.4f |\n", NR, $1, $2) }
      END { printf "\n%d GPUs against 1 GPU with grad_accum %d, %d steps (the same batches):\n\n", w, w, s
            printf "| step | loss, %d GPUs | loss, 1 GPU |\n|---|---|---|\n%s", w, rows
            printf "\nlargest relative loss difference: %.2e (step %d)\n", m, at }' >>"$out/scaling.md"
fi
{ echo; echo "Commands:"; echo; sed 's/^/    /' "$out/commands.txt"; } >>"$out/scaling.md"
cat "$out/scaling.md"
