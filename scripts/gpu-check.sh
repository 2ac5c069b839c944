#!/usr/bin/env bash
# The one prepared GPU check (GPU_NOTES §5): run on a machine with an NVIDIA GPU, its driver and
# Python 3 (no Rust) on the folder made by scripts/gpu-check-prepare.sh. Writes one report.
#   1. every phase × preset × precision: the GPU trainer's `step` twice (the same bits), against
#      the interpreter (fp32 within 1e-4 per tensor) and, for fp16/bf16, against the float64
#      PyTorch fixtures within twice autocast's own error (the rule of mixed_precision.rs);
#   2. a td1 step with a dropout student against the CPU trainer's (the same dropout masks);
#   3. tiny general-distill → task-distill 1 → 2 → eval on the GPU, and td1 killed with SIGKILL
#      and resumed, whose last checkpoint must equal the uninterrupted run's bit for bit;
#   4. CUDA graphs: fp32 steps replayed from a graph equal the steps launched one by one
#      (TBC_CUDA_GRAPHS=0), bit for bit;
#   5. across targets: td1 with a data sink of 4 steps on the GPU against the CPU trainer, and
#      a run killed on one target resumed on the other, against the uninterrupted GPU run;
#   6. data parallel on NCCL with one GPU (torchrun's environment, no MPI): td1 with
#      --distribute true equals the plain GPU run bit for bit (the mean over one rank).
# cuBLASLt is found in the pip wheels by the trainer itself (TBC_CUDA_LIBS adds folders).
# Usage: gpu-check.sh BUNDLE [REPORT]      exit status: the number of failed checks (0: all pass)
set -uo pipefail
B=$(cd "${1:?usage: gpu-check.sh BUNDLE [REPORT]}" && pwd)
REPORT=${2:-$B/report.txt}
W=$(mktemp -d)
PY=${PYTHON:-python3}
CHECK="$PY $B/gpu_check.py"
E=$B/expected
passed=0
failed=0
: > "$REPORT"
log() { echo "$*" | tee -a "$REPORT"; }
check() { # name command...
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1)); log "PASS $name: $out"
  else
    failed=$((failed + 1)); log "FAIL $name: $(echo "$out" | tail -3 | tr '\n' ' ')"
  fi
}
step_flags() { # preset phase
  local scale=1
  [[ $1 == mindspore && $2 != eval && $2 != eval_teacher ]] && scale=256
  echo --lr 1e-3 --step 0 --loss-scale $scale --warmup-steps 0 --seed 0
}
log "gpu-check $(date -u +%FT%TZ) on $(hostname); bundle target $(cat "$B/TARGET")"
log "$(nvidia-smi -L 2>&1 | head -4)"
start=$SECONDS

# 1. steps
for tr in "$B"/trainers/{mindspore,paper}_{fp32,fp16,bf16}; do
  [[ -x $tr ]] || continue
  name=$(basename "$tr"); preset=${name%_*}; p=${name#*_}
  for phase in gd td1 td2 ft eval eval_teacher; do
    a=$W/${name}_${phase}_a.safetensors b=$W/${name}_${phase}_b.safetensors
    run() { "$tr" step --phase $phase --weights "$E"/weights.safetensors --batch "$E"/batch.safetensors \
      $(step_flags $preset $phase) --repeat 3 --out "$1"; }
    if ! out=$(run "$a" 2>&1); then
      failed=$((failed + 1)); log "FAIL $name $phase step: $(echo "$out" | tail -2 | tr '\n' ' ')"; continue
    fi
    log "     $name $phase: $(echo "$out" | grep 'compute time' | head -1)"
    run "$b" > /dev/null 2>&1
    check "$name $phase two runs" $CHECK same "$a" "$b"
    if [[ $p == fp32 ]]; then
      TBC_CUDA_GRAPHS=0 run "$b" > /dev/null 2>&1
      check "$name $phase graph replay equals one-by-one launches" $CHECK same "$a" "$b"
    fi
    if [[ $p == fp32 ]]; then
      check "$name $phase vs interpreter" $CHECK close "$a" "$E/interp_${name}_${phase}.safetensors" 1e-4
    else
      unit=0.00048828125; [[ $p == bf16 ]] && unit=0.00390625
      check "$name $phase vs float64 (2x autocast)" $CHECK amp "$a" "$E/expected_${preset}_${phase}.safetensors" \
        "$E/amp_errors.safetensors" "$p/$preset/$phase" $unit
      log "     $name $phase vs the interpreter's mixed step: $($CHECK close "$a" "$E/interp_${name}_${phase}.safetensors" 1e30)"
    fi
  done
done

# 2. dropout masks
d=$W/dropout.safetensors
if "$B"/trainers/dropout_td1 step --phase td1 --weights "$E"/weights.safetensors --batch "$E"/batch.safetensors \
    $(step_flags mindspore td1 | sed 's/--seed 0/--seed 5/') --out "$d" > /dev/null 2>"$W/dropout.err"; then
  check "dropout td1 vs the CPU trainer" $CHECK close "$d" "$E"/cpu_dropout_td1.safetensors 1e-4
else
  failed=$((failed + 1)); log "FAIL dropout td1 step: $(tail -2 "$W/dropout.err")"
fi

# 3. end to end on the mindspore fp32 trainer
tr=$B/trainers/mindspore_fp32
D=$B/data
cd "$W" || exit 1
e2e() { # name args...
  local name=$1; shift
  if out=$("$tr" "$@" 2>&1); then passed=$((passed + 1)); log "PASS e2e $name"; else
    failed=$((failed + 1)); log "FAIL e2e $name: $(echo "$out" | tail -3 | tr '\n' ' ')"; fi
}
e2e general-distill general-distill --load-teacher-ckpt-path "$D"/teacher.safetensors --data-dir "$D"/train.tfrecord \
  --epoch-size 1 --save-ckpt-step 5 --output-dir gd
gd_ckpt=$($CHECK last-ckpt gd)
e2e task-distill-1 task-distill --td-phase 1 --load-teacher-ckpt-path "$D"/teacher.safetensors \
  --load-gd-ckpt-path "${gd_ckpt:-missing}" --train-data-dir "$D"/train.tfrecord --td-phase1-epoch-size 1 \
  --save-ckpt-step 5 --output-dir td1
td1_ckpt=$($CHECK last-ckpt td1)
e2e task-distill-2 task-distill --td-phase 2 --load-teacher-ckpt-path "$D"/teacher.safetensors \
  --load-td1-ckpt-path "${td1_ckpt:-missing}" --train-data-dir "$D"/train.tfrecord --eval-data-dir "$D"/dev.tfrecord \
  --task-name MNLI --td-phase2-epoch-size 1 --output-dir td2
e2e eval eval --eval-data-dir "$D"/dev.tfrecord --load-td1-ckpt-path "${td1_ckpt:-missing}" --task-name MNLI
td1_args=(task-distill --td-phase 1 --load-teacher-ckpt-path "$D"/teacher.safetensors
  --load-gd-ckpt-path "$D"/student.safetensors --train-data-dir "$D"/train.tfrecord --td-phase1-epoch-size 3
  --enable-data-sink false --save-ckpt-step 1 --max-ckpt-num 2 --do-shuffle true)
killed_run() { # trainer dir: starts td1, kills it with SIGKILL after 8 metrics lines
  "$1" "${td1_args[@]}" --output-dir "$2" > /dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 1 3000); do
    n=$(wc -l < "$2"/metrics.jsonl 2>/dev/null || echo 0)
    [[ $n -ge 8 ]] && break
    sleep 0.01
  done
  kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  log "     td1 on $(basename "$1") killed after $(wc -l < "$2"/metrics.jsonl 2>/dev/null || echo 0) of $(wc -l < full/metrics.jsonl) metrics lines"
}
e2e td1-full "${td1_args[@]}" --output-dir full
killed_run "$tr" part
e2e td1-resume "${td1_args[@]}" --output-dir part --resume
check "td1 SIGKILL + --resume equals the uninterrupted run" $CHECK same "$($CHECK last-ckpt full)" "$($CHECK last-ckpt part)"

# 5. across targets (the CPU trainer of the same configs; checkpoints are the same files)
cpu=$B/trainers/cpu_mindspore_fp32
if [[ -x $cpu ]]; then
  sink=(task-distill --td-phase 1 --load-teacher-ckpt-path "$D"/teacher.safetensors
    --load-gd-ckpt-path "$D"/student.safetensors --train-data-dir "$D"/train.tfrecord --td-phase1-epoch-size 3
    --enable-data-sink true --data-sink-steps 4 --save-ckpt-step 1 --do-shuffle true)
  e2e td1-sink-gpu "${sink[@]}" --output-dir sink_gpu
  if "$cpu" "${sink[@]}" --output-dir sink_cpu > /dev/null 2>&1; then
    check "td1 with a data sink of 4: GPU vs CPU trainer (1e-3)" $CHECK close \
      "$($CHECK last-ckpt sink_gpu)" "$($CHECK last-ckpt sink_cpu)" 1e-3
  else
    failed=$((failed + 1)); log "FAIL td1 sink on the CPU trainer"
  fi
  killed_run "$cpu" cpu_then_gpu
  e2e td1-resume-cpu-on-gpu "${td1_args[@]}" --output-dir cpu_then_gpu --resume
  check "td1 killed on the CPU, resumed on the GPU vs the GPU run (1e-3)" $CHECK close \
    "$($CHECK last-ckpt cpu_then_gpu)" "$($CHECK last-ckpt full)" 1e-3
  killed_run "$tr" gpu_then_cpu
  if "$cpu" "${td1_args[@]}" --output-dir gpu_then_cpu --resume > /dev/null 2>&1; then
    check "td1 killed on the GPU, resumed on the CPU vs the GPU run (1e-3)" $CHECK close \
      "$($CHECK last-ckpt gpu_then_cpu)" "$($CHECK last-ckpt full)" 1e-3
  else
    failed=$((failed + 1)); log "FAIL td1 resumed on the CPU trainer"
  fi
fi

# 6. NCCL, world size 1 (GPU bundles only: CPU trainers distribute over MPI)
if [[ $(cat "$B/TARGET") == gpu ]]; then
  if out=$(RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 \
      "$tr" "${td1_args[@]}" --output-dir nccl1 --distribute true 2>&1); then
    check "td1 --distribute true on NCCL (1 GPU) equals the plain run" $CHECK same \
      "$($CHECK last-ckpt nccl1)" "$($CHECK last-ckpt full)"
  else
    failed=$((failed + 1)); log "FAIL td1 on NCCL: $(echo "$out" | tail -3 | tr '\n' ' ')"
  fi
fi

log "gpu-check: $passed passed, $failed failed in $((SECONDS - start)) s; report $REPORT"
rm -rf "$W"
exit $failed
