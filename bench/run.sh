#!/usr/bin/env bash
# `make bench`: one td1 training step at the real shapes (BERT-base teacher, paper student
# 4L/312, batch 32, seq 64, 2 threads), compiled trainer vs PyTorch eager vs torch.compile, in
# one run on this machine, in f32 and in bf16 mixed precision (tbc `--precision bf16` vs PyTorch
# `torch.autocast("cpu", dtype=torch.bfloat16)`). Prints a table with medians and ratios and the
# host GEMM rates (f32, and both bf16 kernels), and writes them to out/bench/results.md. Loop
# kernels are compiled for this CPU (`--cpu native`, as PyTorch dispatches to this CPU's kernels;
# CPU=x86-64-v3 for the portable default). Installs PyTorch into .venv when missing (PyPI, a few
# GB). PRECISIONS=fp32 (or bf16) runs one half.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/bench
REPS=${REPS:-5}
THREADS=${THREADS:-2}
PRECISIONS=${PRECISIONS:-fp32,bf16}
mkdir -p "$OUT"
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c "import torch, safetensors, numpy" 2>/dev/null; then
  echo "bench: installing PyTorch into .venv (pip install torch safetensors numpy)"
  python3 -m venv .venv
  .venv/bin/pip install -q -r tests/reference/requirements.txt
fi
PY=.venv/bin/python
echo "bench: machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), load $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -f $OUT/weights.safetensors ]] || $PY bench/make_inputs.py "$OUT"

calc() { $PY -c "print(round($1, 3))"; }
rows=()
for p in ${PRECISIONS//,/ }; do
  case $p in
    fp32) autocast=none ;;
    bf16) autocast=bf16 ;;
    *) echo "bench: unknown precision $p (fp32 or bf16)" >&2; exit 2 ;;
  esac
  start=$(date +%s.%N)
  target/release/tbc compile --target cpu --cpu "${CPU:-native}" --precision "$p" --phases gd,td1,td2,eval \
    --preset paper --batch 32 --seq-len 64 -o "$OUT/trainer-$p"
  compile_s=$(calc "$(date +%s.%N) - $start")
  size_mb=$(calc "$(stat -c %s "$OUT/trainer-$p") / 1e6")

  echo "bench: compiled trainer ($p), td1 step x $REPS"
  RAYON_NUM_THREADS=$THREADS /usr/bin/time -f "%M" -o "$OUT/trainer-$p.rss" "$OUT/trainer-$p" step --phase td1 \
    --weights "$OUT/weights.safetensors" --batch "$OUT/batch.safetensors" --out "$OUT/td1_out-$p.safetensors" \
    --lr 5e-5 --repeat $((REPS + 1)) 2> "$OUT/trainer-$p.log"
  grep -h 'bf16 GEMMs' "$OUT/trainer-$p.log" || true
  tbc_s=$(calc "$(grep -oP 'compute time: median \K[0-9.]+' "$OUT/trainer-$p.log")")
  tbc_rss=$(cat "$OUT/trainer-$p.rss")

  echo "bench: PyTorch eager and torch.compile (cold compile), autocast $autocast, td1 step x $REPS"
  $PY bench/pytorch_step.py --modes eager,compile --autocast "$autocast" --threads "$THREADS" --warmup 1 \
    --reps "$REPS" > "$OUT/pytorch-$p.jsonl"
  field() { $PY -c "import json; d=[json.loads(l) for l in open('$OUT/pytorch-$p.jsonl') if l.strip()]; m=[x for x in d if x['mode']=='$1'][0]; print(round(m['$2'], 3))"; }
  eager_s=$(field eager median_s); comp_s=$(field compile median_s); comp_c=$(field compile compile_s)
  eager_rss=$(field eager peak_rss_mib); comp_rss=$(field compile peak_rss_mib)
  torch_label=$([[ $p == bf16 ]] && echo "autocast bf16" || echo "f32")
  rows+=("| tbc compiled trainer, $p (compile ${compile_s} s, ${size_mb} MB) | $tbc_s | 1.00 | $((tbc_rss / 1024)) MiB |")
  rows+=("| PyTorch eager, $torch_label | $eager_s | $(calc "$eager_s / $tbc_s") | ${eager_rss} MiB |")
  rows+=("| torch.compile, $torch_label (compile ${comp_c} s) | $comp_s | $(calc "$comp_s / $tbc_s") | ${comp_rss} MiB |")
done

echo "bench: host GEMM rates (f32, bf16 widen, bf16 vdpbf16ps)"
cargo build -q --release -p runtime --example bf16_gemm_rate
RAYON_NUM_THREADS=$THREADS target/release/examples/bf16_gemm_rate > "$OUT/gemm_rates.md"

{
  echo "| td1 step, $THREADS threads | median s/step | tbc speed-up | peak RSS |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  cat "$OUT/gemm_rates.md"
} | tee "$OUT/results.md"
