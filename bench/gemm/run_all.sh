#!/usr/bin/env bash
# usage: ./run_all.sh <tag> [reps]   -> results/<tag>.csv (+ .log with library banners)
set -euo pipefail
cd "$(dirname "$0")"
TAG=${1:-run1}; REPS=${2:-7}
export CARGO_TARGET_DIR=$PWD/target
cargo build --release -q
cargo build --release -q --features x86-v4 --target-dir "$PWD/target/v4"
B=$PWD/target/release/gemm-bench; BV4=$PWD/target/v4/release/gemm-bench
mkdir -p results; OUT=results/$TAG.csv; LOG=results/$TAG.log; : >"$OUT"; : >"$LOG"
echo "# $(date -Is) load: $(cat /proc/loadavg)" >>"$LOG"
run() { # label cmd...
  local label=$1; shift
  echo "== $label: $*" >>"$LOG"
  "$@" 2>>"$LOG" | sed "s/^RESULT,[^,]*,/RESULT,$label,/" | tee -a "$OUT"
}
for T in 1 2; do
  export OMP_NUM_THREADS=$T OPENBLAS_NUM_THREADS=$T MATMUL_NUM_THREADS=$T RAYON_NUM_THREADS=$T
  run torch        ${PYTHON:-python3} torch_bench.py $T $REPS
  run gemm-avx2    $B gemm $T $REPS
  run gemm-avx512  $BV4 gemm $T $REPS
  run matrixmul    $B mm $T $REPS
  run openblas-def $B openblas $T $REPS
  OPENBLAS_CORETYPE=SkylakeX run openblas-skx $B openblas $T $REPS
  run blis-def     $B blis $T $REPS T:2048x768x3072
  BLIS_ARCH_TYPE=0 run blis-skx $B blis $T $REPS
  run dnnl         $B dnnl $T $REPS
  echo "# T=$T done $(date -Is) load: $(cat /proc/loadavg)" >>"$LOG"
done
