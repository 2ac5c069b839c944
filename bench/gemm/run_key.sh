#!/usr/bin/env bash
# Key 2-thread measurements, candidates interleaved and repeated (shared-machine noise).
# usage: ./run_key.sh <tag> [rounds] [reps]   -> results/<tag>.csv ; assumes run_all.sh built the binaries
set -euo pipefail
cd "$(dirname "$0")"
TAG=${1:-key}; ROUNDS=${2:-2}; REPS=${3:-7}
B=$PWD/target/release/gemm-bench; BV4=$PWD/target/v4/release/gemm-bench
mkdir -p results; OUT=results/$TAG.csv; LOG=results/$TAG.log; : >"$OUT"; : >"$LOG"
T=2; export OMP_NUM_THREADS=$T OPENBLAS_NUM_THREADS=$T MATMUL_NUM_THREADS=$T RAYON_NUM_THREADS=$T
run() { local label=$1; shift; echo "== $label: $* load $(cat /proc/loadavg)" >>"$LOG"
  "$@" 2>>"$LOG" | sed "s/^RESULT,[^,]*,/RESULT,$label,/" | tee -a "$OUT"; }
for r in $(seq "$ROUNDS"); do
  run torch ${PYTHON:-python3} torch_bench.py $T $REPS
  run gemm-avx512 $BV4 gemm $T $REPS
  OPENBLAS_CORETYPE=SkylakeX run openblas-skx $B openblas $T $REPS
  BLIS_ARCH_TYPE=0 run blis-skx $B blis $T $REPS
  run dnnl $B dnnl $T $REPS
done
