#!/usr/bin/env bash
# Prepares the one GPU check (GPU_NOTES §5): builds here (Rust, 2 cores) everything that
# scripts/gpu-check.sh runs on a GPU machine that has a driver and Python but no Rust:
#   trainers/{mindspore,paper}_{fp32,fp16,bf16}  every phase of the tiny configs (batch 4, seq 16)
#   trainers/dropout_td1                          td1 with a dropout-0.1 student (mask check)
#   trainers/cpu_mindspore_fp32                   td1 for the CPU (cross-target checks)
#   expected/  the float64 PyTorch fixtures, autocast's errors, the interpreter's step outputs
#              (`tbc step`, same flags) and the CPU trainer's dropout step
#   data/      the end-to-end run's records and models
#   gpu-check.sh, gpu_check.py
# Usage: scripts/gpu-check-prepare.sh [--target gpu|cpu] OUT   (cpu: a dry run of the whole check
# on this machine with CPU trainers, fp32 only)
set -euo pipefail
cd "$(dirname "$0")/.."
target=gpu
if [[ ${1:-} == --target ]]; then target=$2; shift 2; fi
OUT=${1:?usage: scripts/gpu-check-prepare.sh [--target gpu|cpu] OUT}
# TBC_BIN_DIR: where tbc, libruntime.a and gpu_check_data are (default: a release build made here;
# the test of this script passes its debug build).
if [[ -z ${TBC_BIN_DIR:-} ]]; then
  cargo build --release -q -p cli -p runtime
  cargo build --release -q -p tbc-tests --bin gpu_check_data
  TBC_BIN_DIR=$PWD/target/release
fi
TBC=$TBC_BIN_DIR/tbc
export TBC_RUNTIME_LIB=$TBC_BIN_DIR/libruntime.a
T=tests/fixtures/tiny
PHASES=(gd td1 td2 ft eval eval_teacher)
if [[ $target == gpu ]]; then PRECISIONS=(fp32 fp16 bf16); else PRECISIONS=(fp32); fi
rm -rf "$OUT"
mkdir -p "$OUT"/trainers "$OUT"/expected "$OUT"/data
cp $T/weights.safetensors $T/batch.safetensors $T/amp_errors.safetensors "$OUT"/expected/
for preset in mindspore paper; do
  for phase in "${PHASES[@]}"; do cp $T/expected_${preset}_${phase}.safetensors "$OUT"/expected/; done
done
models=(--teacher-config $T/teacher.json --student-config $T/student.json)
# The step flags both `tbc step` (the interpreter) and `trainer step` get; the mindspore preset
# trains with a loss scale (unscaled before use), as the parity tests.
step_flags() { # preset phase
  local scale=1
  [[ $1 == mindspore && $2 != eval && $2 != eval_teacher ]] && scale=256
  echo --lr 1e-3 --step 0 --loss-scale $scale --warmup-steps 0
}
for preset in mindspore paper; do
  for p in "${PRECISIONS[@]}"; do
    tr="$OUT/trainers/${preset}_${p}"
    $TBC compile --target $target --precision $p --preset $preset --phases gd,td1,td2,ft,eval,eval_teacher \
      "${models[@]}" --batch 4 --seq-len 16 -o "$tr" 2>/dev/null
    strip "$tr"
    for phase in "${PHASES[@]}"; do
      $TBC step --phase $phase --precision $p --preset $preset "${models[@]}" \
        --weights $T/weights.safetensors --batch $T/batch.safetensors $(step_flags $preset $phase) \
        --out "$OUT/expected/interp_${preset}_${p}_${phase}.safetensors" 2>/dev/null
    done
  done
done
# Dropout: the same counter-based masks on every target, so the GPU's td1 step with a dropout
# student equals the CPU trainer's.
sed -e 's/"hidden_dropout_prob": 0.0/"hidden_dropout_prob": 0.1/' \
    -e 's/"attention_probs_dropout_prob": 0.0/"attention_probs_dropout_prob": 0.1/' \
    $T/student.json > "$OUT"/data/student_dropout.json
grep -q '"hidden_dropout_prob": 0.1' "$OUT"/data/student_dropout.json
drop=(--teacher-config $T/teacher.json --student-config "$OUT"/data/student_dropout.json --phases td1 --batch 4 --seq-len 16)
$TBC compile --target $target "${drop[@]}" -o "$OUT"/trainers/dropout_td1 2>/dev/null
strip "$OUT"/trainers/dropout_td1
$TBC compile --target cpu "${drop[@]}" -o "$OUT"/data/cpu_dropout_td1 2>/dev/null
"$OUT"/data/cpu_dropout_td1 step --phase td1 --weights $T/weights.safetensors --batch $T/batch.safetensors \
  $(step_flags mindspore td1) --seed 5 --out "$OUT"/expected/cpu_dropout_td1.safetensors 2>/dev/null
rm "$OUT"/data/cpu_dropout_td1
$TBC compile --target cpu --preset mindspore --phases td1 "${models[@]}" --batch 4 --seq-len 16 \
  -o "$OUT"/trainers/cpu_mindspore_fp32 2>/dev/null
strip "$OUT"/trainers/cpu_mindspore_fp32
"$TBC_BIN_DIR"/gpu_check_data "$OUT"/data
cp scripts/gpu-check.sh scripts/gpu_check.py "$OUT"/
echo "$target" > "$OUT"/TARGET
# One compressed file to carry to the GPU machine (the trainers compress about 4x).
tar -cJf "$OUT.tar.xz" -C "$(dirname "$OUT")" "$(basename "$OUT")"
du -sh "$OUT" "$OUT.tar.xz"
