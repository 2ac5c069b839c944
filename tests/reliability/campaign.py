#!/usr/bin/env python3
"""Fault campaign for tbc and its trainer (issue 9): generates 550+ bad inputs and faults from a
seed, runs each against the real commands, and classifies what happened.

    python3 tests/reliability/campaign.py [--tbc target/release/tbc] [--seed 9] [--json out.json]

Outcomes per case:
  clean error        exit != 0 with a message, no panic
  panic/abort        "panicked", "internal error", "LLVM ERROR", "failed to initiate panic", or
                     death by a signal we did not send
  silent acceptance  exit 0 on an input that must be refused (non-finite or out-of-range values,
                     outputs over inputs)
  accepted valid     exit 0 on a structural mutation that happened to stay valid
  timeout            no answer within --timeout seconds
and, after every case, tbc temporaries (`.{name}.tmp{pid}`, `.{name}.old{pid}`) left anywhere
under the work directory (faults: after the resume that follows the kill).

Standard library only: safetensors, TFRecord (with masked CRC32C) and tf.train.Example bytes are
written by hand.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests/fixtures/tiny"
VOCAB = REPO / "tests/fixtures/hf/vocab.txt"
TEMP_RE = re.compile(r"^\..+\.(tmp|old)\d+$")
PANIC_MARKS = ("panicked", "internal error", "LLVM ERROR", "failed to initiate panic", "RUST_BACKTRACE")

# ----------------------------------------------------------------------------------------------
# Formats


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    n = struct.pack("<Q", len(payload))
    return n + struct.pack("<I", masked_crc(n)) + payload + struct.pack("<I", masked_crc(payload))


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field(num: int, wire: int, body: bytes) -> bytes:
    return varint(num << 3 | wire) + (varint(len(body)) + body if wire == 2 else body)


def example(features: dict) -> bytes:
    """A tf.train.Example; values are int lists or float lists."""
    entries = b""
    for name, values in sorted(features.items()):
        if all(isinstance(v, int) for v in values):
            lst = field(3, 2, field(1, 2, b"".join(varint(v) for v in values)))
        else:
            lst = field(2, 2, field(1, 2, b"".join(struct.pack("<f", v) for v in values)))
        entries += field(1, 2, field(1, 2, name.encode()) + field(2, 2, lst))
    return field(1, 2, entries)


def read_safetensors(path: Path):
    b = path.read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8 : 8 + n]), b[8 + n :]


def write_safetensors(path: Path, header: dict, data: bytes):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def subset_safetensors(src: Path, prefix: str, dst: Path):
    """The tensors `prefix.*` of `src`, renamed without the prefix."""
    header, data = read_safetensors(src)
    out, blob = {"__metadata__": {"format": "pt"}}, b""
    for name, info in sorted(header.items()):
        if name.startswith(prefix + "."):
            s, e = info["data_offsets"]
            out[name[len(prefix) + 1 :]] = dict(info, data_offsets=[len(blob), len(blob) + e - s])
            blob += data[s:e]
    write_safetensors(dst, out, blob)


# ----------------------------------------------------------------------------------------------
# Running


class Campaign:
    def __init__(self, tbc: Path, work: Path, seed: int, timeout: float):
        self.tbc, self.work, self.timeout = tbc, work, timeout
        self.rng = random.Random(seed)
        self.results = []  # dicts: class, case, outcome, cmd, stderr
        self.counter = 0

    def fresh(self, name: str) -> Path:
        self.counter += 1
        d = self.work / f"c{self.counter:04d}-{name}"
        d.mkdir()
        return d

    def run(self, cls, case, cmd, must_refuse, cwd=None, env=None):
        try:
            p = subprocess.run(cmd, cwd=cwd or self.work, capture_output=True, text=True,
                               timeout=self.timeout, env=env)
            rc, err = p.returncode, p.stdout[-20000:] + p.stderr[-4000:]
        except subprocess.TimeoutExpired:
            rc, err = None, "timeout"
        self.record(cls, case, cmd, rc, err, must_refuse)
        return rc, err

    def record(self, cls, case, cmd, rc, err, must_refuse, own_signal=False):
        if rc is None:
            outcome = "timeout"
        elif any(m in err for m in PANIC_MARKS) or (rc < 0 and not own_signal) or rc in (101, 134, 139):
            outcome = "panic/abort"
        elif rc == 0:
            outcome = "silent acceptance" if must_refuse else "accepted valid"
        else:
            outcome = "clean error"
        temps = [str(p) for p in self.work.rglob("*") if TEMP_RE.match(p.name)]
        for t in temps:  # count once, then clear so the next case starts clean
            shutil.rmtree(t, ignore_errors=True) if os.path.isdir(t) else os.remove(t)
        self.results.append({"class": cls, "case": case, "outcome": outcome, "temporaries": temps,
                             "cmd": " ".join(map(str, cmd)), "stderr": err.strip()[-600:]})

    # -- setup ---------------------------------------------------------------------------------

    def setup(self):
        w = self.work
        self.trainer = w / "trainer"
        env = dict(os.environ, TBC_RUNTIME_LIB=str(self.tbc.parent / "libruntime.a"))
        subprocess.run([self.tbc, "compile", "--target", "cpu", "--phases",
                        "ft,eval_teacher,gd,td1,td2,eval", "--preset", "mindspore",
                        "--teacher-config", TINY / "teacher.json", "--student-config",
                        TINY / "student.json", "--batch", "4", "--seq-len", "16", "-o",
                        self.trainer], check=True, env=env, capture_output=True)
        subset_safetensors(TINY / "weights.safetensors", "teacher", w / "teacher.safetensors")
        subset_safetensors(TINY / "weights.safetensors", "student", w / "student.safetensors")
        self.rows = []
        for i in range(24):
            n = 4 + self.rng.randrange(10)
            ids = [2] + [self.rng.randrange(5, 100) for _ in range(n)] + [3]
            ids += [0] * (16 - len(ids))
            mask = [1 if x else 0 for x in ids]
            self.rows.append({"input_ids": ids, "input_mask": mask, "segment_ids": [0] * 16,
                              "label_ids": [i % 3]})
        self.write_data(w / "train.tfrecord", self.rows)
        self.mnli = w / "mnli.tsv"
        head = "index\tpromptID\tpairID\tgenre\ta\tb\tc\td\tsentence1\tsentence2\tgold_label\n"
        lines = [f"{i}\t1\t1\tg\tx\tx\tx\tx\tthe good movie\ta bad one\t{lab}\n"
                 for i, lab in enumerate(["entailment", "neutral", "contradiction"] * 4)]
        self.mnli.write_text(head + "".join(lines))
        rc, err = self.td1(w / "train.tfrecord", w / "baseline")
        if rc != 0:
            sys.exit(f"the valid baseline run failed, nothing to mutate:\n{err}")
        self.results.clear()

    def write_data(self, path: Path, rows):
        path.write_bytes(b"".join(frame(example(r)) for r in rows))

    def td1(self, data, out, teacher=None, student=None, extra=(), cls="baseline", case="",
            must_refuse=False):
        w = self.work
        cmd = [self.trainer, "task-distill", "--td-phase", "1",
               "--load-teacher-ckpt-path", teacher or w / "teacher.safetensors",
               "--load-gd-ckpt-path", student or w / "student.safetensors",
               "--train-data-dir", data, "--td-phase1-epoch-size", "1",
               "--enable-data-sink", "false", "--output-dir", out, *extra]
        return self.run(cls, case, cmd, must_refuse)

    # -- classes -------------------------------------------------------------------------------

    def mutate_bytes(self, b: bytes) -> tuple:
        r = self.rng
        kind = r.choice(["truncate", "flip", "random", "insert"])
        b = bytearray(b)
        if kind == "truncate":
            b = b[: r.randrange(len(b))]
        elif kind == "flip":
            for _ in range(1 + r.randrange(4)):
                b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        elif kind == "random":
            b = bytearray(r.randbytes(r.randrange(1, 600)))
        else:
            i = r.randrange(len(b))
            b[i:i] = r.choice([b"\xff" * 8, struct.pack("<Q", 1 << 62), b"{", b'"x"'])
        return kind, bytes(b)

    def safetensors_class(self):
        cls, w = "safetensors weights", self.work
        src = w / "teacher.safetensors"
        header, data = read_safetensors(src)
        names = [n for n in header if n != "__metadata__"]
        for i in range(40):  # structural mutations anywhere in the file
            d = self.fresh("st")
            kind, b = self.mutate_bytes(src.read_bytes())
            (d / "t.safetensors").write_bytes(b)
            self.td1(w / "train.tfrecord", d / "o", teacher=d / "t.safetensors", cls=cls,
                     case=f"teacher bytes: {kind}")
        for i in range(20):  # header edits: shapes, dtypes, offsets, names
            d = self.fresh("sth")
            h = json.loads(json.dumps(header))
            n = self.rng.choice(names)
            edit = self.rng.choice(["shape", "dtype", "offsets", "rename", "drop"])
            if edit == "shape":
                h[n]["shape"] = self.rng.choice([[4294967296, 4294967296], [0], [3, 3, 3], []])
            elif edit == "dtype":
                h[n]["dtype"] = self.rng.choice(["I64", "Q8", "BOOL", ""])
            elif edit == "offsets":
                h[n]["data_offsets"] = self.rng.choice([[0, 1 << 40], [10, 5], [-1, 4]])
            elif edit == "rename":
                h["x" + n] = h.pop(n)
            else:
                h.pop(n)
            write_safetensors(d / "t.safetensors", h, data)
            self.td1(w / "train.tfrecord", d / "o", teacher=d / "t.safetensors", cls=cls,
                     case=f"teacher header: {edit} {n}", must_refuse=edit != "rename")
        # td1 reads the teacher's encoder and embeddings (not its pooler or classifier).
        read = [x for x in names if header[x]["dtype"] == "F32" and not re.match(r"(classifier|bert\.pooler)\.", x)]
        for i in range(20):  # non-finite values in what td1 reads: must be refused
            d = self.fresh("stnan")
            n = self.rng.choice(read)
            s, e = header[n]["data_offsets"]
            k = s + 4 * self.rng.randrange((e - s) // 4)
            v = self.rng.choice([float("nan"), float("inf"), float("-inf")])
            b = bytearray(data)
            b[k : k + 4] = struct.pack("<f", v)
            write_safetensors(d / "t.safetensors", header, bytes(b))
            self.td1(w / "train.tfrecord", d / "o", teacher=d / "t.safetensors", cls=cls,
                     case=f"teacher {n} holds {v}", must_refuse=True)

    def checkpoint_class(self):
        cls, w = "checkpoints", self.work
        header, data = read_safetensors(w / "student.safetensors")
        # The mindspore preset starts each phase with a fresh fit_dense (the seed never saves
        # it), so a checkpoint's fit_dense is not read.
        names = [n for n in header if n != "__metadata__" and not n.startswith("fit_dense.")]
        for i in range(20):
            d = self.fresh("cknan")
            n = self.rng.choice(names)
            s, e = header[n]["data_offsets"]
            b = bytearray(data)
            k = s + 4 * self.rng.randrange((e - s) // 4)
            b[k : k + 4] = struct.pack("<f", self.rng.choice([float("nan"), float("inf")]))
            write_safetensors(d / "s.safetensors", header, bytes(b))
            if i % 2:
                cmd = [self.trainer, "export-hf", "--ckpt", d / "s.safetensors", "-o", d / "hf"]
                self.run(cls, f"export of a checkpoint with non-finite {n}", cmd, True)
            else:
                self.td1(w / "train.tfrecord", d / "o", student=d / "s.safetensors", cls=cls,
                         case=f"student checkpoint with non-finite {n}", must_refuse=True)
        # Resume from a checkpoint that lacks a trained tensor.
        base = self.fresh("ckbase")
        self.td1(w / "train.tfrecord", base / "o", extra=["--save-ckpt-step", "1"])
        self.results.pop()
        ckdir = base / "o/tinybert_td_phase1_save_ckpt"
        newest = sorted(ckdir.glob("tiny_bert_*_1.safetensors"))[-1]
        h, blob = read_safetensors(newest)
        trained = [n for n in h if n != "__metadata__"]
        for i in range(20):
            d = self.fresh("ckmiss")
            shutil.copytree(base / "o", d / "o")
            n = self.rng.choice(trained)
            h2 = {k: v for k, v in h.items() if k != n}
            write_safetensors(d / "o/tinybert_td_phase1_save_ckpt" / newest.name, h2, blob)
            self.td1(w / "train.tfrecord", d / "o", extra=["--resume", "--save-ckpt-step", "1"],
                     cls=cls, case=f"resume checkpoint lacks {n}", must_refuse=True)

    def tfrecord_class(self):
        cls, w = "TFRecord data", self.work
        good = (w / "train.tfrecord").read_bytes()
        for i in range(40):
            d = self.fresh("tf")
            kind, b = self.mutate_bytes(good)
            (d / "x.tfrecord").write_bytes(b)
            self.td1(d / "x.tfrecord", d / "o", cls=cls, case=f"bytes: {kind}")
        bad_values = [
            ("input_ids", lambda r: r.choice([100, 5000, 1 << 40]), "id >= vocab_size"),
            ("input_ids", lambda r: -r.randrange(1, 1000), "negative id"),
            ("segment_ids", lambda r: r.choice([2, 7]), "segment id >= type_vocab_size"),
            ("input_mask", lambda r: r.choice([2, -1]), "mask not 0/1"),
            ("label_ids", lambda r: r.choice([3, 99, -1]), "label >= num_labels"),
        ]
        for i in range(50):
            d = self.fresh("tfval")
            col, gen, what = bad_values[i % len(bad_values)]
            rows = json.loads(json.dumps(self.rows))
            r = self.rng.randrange(len(rows))
            pos = self.rng.randrange(len(rows[r][col]))
            rows[r][col][pos] = gen(self.rng)
            self.write_data(d / "x.tfrecord", rows)
            if col == "label_ids":
                cmd = [self.trainer, "finetune", "--load-teacher-ckpt-path", w / "teacher.safetensors",
                       "--train-data-dir", d / "x.tfrecord", "--epoch-size", "1", "--output-dir", d / "o"]
                self.run(cls, f"{what} in record {r}", cmd, True)
            else:
                self.td1(d / "x.tfrecord", d / "o", cls=cls, case=f"{what} in record {r}",
                         must_refuse=True)
        for i in range(10):  # float labels where ints are expected, and non-finite floats
            d = self.fresh("tfkind")
            rows = json.loads(json.dumps(self.rows))
            rows[self.rng.randrange(len(rows))]["label_ids"] = [self.rng.choice([float("nan"), float("inf"), 0.5])]
            self.write_data(d / "x.tfrecord", rows)
            cmd = [self.trainer, "finetune", "--load-teacher-ckpt-path", w / "teacher.safetensors",
                   "--train-data-dir", d / "x.tfrecord", "--epoch-size", "1", "--output-dir", d / "o"]
            self.run(cls, "float label in a class column", cmd, True)

    def schema_config_class(self):
        cls, w = "schema.json / config.json", self.work
        schema = {"datasetType": "TF", "numRows": 24, "columns": {
            c: {"type": "int64", "rank": 1, "shape": [16 if c != "label_ids" else 1]}
            for c in ["input_ids", "input_mask", "segment_ids", "label_ids"]}}
        for i in range(40):
            d = self.fresh("schema")
            s = json.loads(json.dumps(schema))
            edit = self.rng.choice(["shape", "rank", "type", "bytes", "dataset", "rows"])
            col = self.rng.choice(["input_ids", "input_mask", "segment_ids"])  # what td1 reads
            if edit == "shape":
                s["columns"][col]["shape"] = self.rng.choice([[4294967296, 4294967296], [0], [17], [1 << 62]])
                s["columns"][col]["rank"] = len(s["columns"][col]["shape"])
            elif edit == "rank":
                s["columns"][col]["rank"] = 3
            elif edit == "type":
                s["columns"][col]["type"] = self.rng.choice(["float32", "string", 5])
            elif edit == "dataset":
                s["datasetType"] = "MindRecord"
            elif edit == "rows":
                s["numRows"] = self.rng.choice([-1, "x", 1 << 70])
            text = json.dumps(s).encode()
            if edit == "bytes":
                _, text = self.mutate_bytes(text)
            (d / "schema.json").write_bytes(text)
            self.td1(w / "train.tfrecord", d / "o", extra=["--schema-dir", d / "schema.json"],
                     cls=cls, case=f"schema: {edit} {col}", must_refuse=edit != "bytes")
        config = json.loads((TINY / "student.json").read_text())
        for i in range(40):
            d = self.fresh("config")
            c = dict(config)
            edit = self.rng.choice(["size", "heads", "eps", "dropout", "type", "bytes", "layers"])
            if edit == "size":
                c[self.rng.choice(["vocab_size", "hidden_size", "intermediate_size"])] = self.rng.choice([0, -4, 1 << 62, 4294967296])
            elif edit == "heads":
                c["num_attention_heads"] = 5
            elif edit == "eps":
                c["layer_norm_eps"] = self.rng.choice([-1, 0])
            elif edit == "dropout":
                c["hidden_dropout_prob"] = self.rng.choice([1.5, -0.1])
            elif edit == "type":
                c["model_type"] = "roberta"
            elif edit == "layers":
                c["num_hidden_layers"] = self.rng.choice([0, 1 << 40])
            text = json.dumps(c).encode()
            if edit == "bytes":
                _, text = self.mutate_bytes(text)
            (d / "student.json").write_bytes(text)
            cmd = [self.tbc, "compile", "--phases", "td1", "--teacher-config", TINY / "teacher.json",
                   "--student-config", d / "student.json", "--batch", "4", "--seq-len", "16",
                   "--compile-to", "plan", "-o", d / "plan.txt"]
            self.run(cls, f"config: {edit}", cmd, must_refuse=edit != "bytes")

    def ir_class(self):
        cls = "IR text"
        d0 = self.fresh("irsrc")
        g = subprocess.run([self.tbc, "graph", "--phase", "eval", "--teacher-config", TINY / "teacher.json",
                            "--student-config", TINY / "student.json", "--batch", "2", "--seq-len", "8"],
                           capture_output=True, check=True).stdout
        for i in range(60):
            d = self.fresh("ir")
            if i % 3 == 0:
                text = g.replace(b"f32[2,8,", self.rng.choice([b"f32[4294967296,4294967296,", b"f32[-1,", b"f99[2,8,"]), 1)
                must = True
            else:
                _, text = self.mutate_bytes(g)
                must = False
            (d / "g.ir").write_bytes(text)
            self.run(cls, "IR text mutation", [self.tbc, "verify", d / "g.ir"], must)

    def tsv_class(self):
        cls = "TSV (tbc data glue)"
        good = self.mnli.read_bytes()
        for i in range(40):
            d = self.fresh("tsv")
            edit = self.rng.choice(["bytes", "label", "columns", "empty", "same"])
            must = edit in ("label", "empty", "same", "columns")
            if edit == "bytes":
                _, b = self.mutate_bytes(good)
            elif edit == "label":
                b = good.replace(b"neutral", self.rng.choice([b"nan", b"maybe", b""]), 1)
            elif edit == "columns":
                b = good.replace(b"\tthe good movie", b"", 1)
            elif edit == "empty":
                b = b""
            else:
                b = good
            (d / "in.tsv").write_bytes(b)
            out = d / ("in.tsv" if edit == "same" else "out.tfrecord")
            cmd = [self.tbc, "data", "glue", "--task", "MNLI", "--vocab", VOCAB, "--max-seq-length", "16",
                   "--input", d / "in.tsv", "--output", out]
            self.run(cls, f"tsv: {edit}", cmd, must)
            if edit == "same" and (d / "in.tsv").read_bytes() != good:
                self.results[-1]["outcome"] = "silent acceptance"

    def flags_class(self):
        cls, w = "numeric flags", self.work
        values = ["nan", "inf", "-inf", "-1", "0", "1e308", "4611686018427387904", "18446744073709551616", "abc", ""]
        trainer_flags = ["--learning-rate", "--loss-scale-value", "--data-sink-steps", "--save-ckpt-step",
                         "--max-ckpt-num", "--td-phase1-epoch-size", "--overflow-patience", "--seed"]
        counts = {"--data-sink-steps", "--save-ckpt-step", "--max-ckpt-num", "--td-phase1-epoch-size"}

        def valid(flag, v):
            if flag in ("--seed", "--overflow-patience"):
                return v in ("0", "4611686018427387904")
            if flag in counts:
                return v == "4611686018427387904"
            if flag == "--loss-scale-value":  # (0, 3.4e38]
                return v in ("4611686018427387904", "18446744073709551616")
            return False  # the learning rate: none of `values` is in (0, 1]

        for flag in trainer_flags:
            for v in self.rng.sample(values, 8):
                if flag == "--td-phase1-epoch-size" and v == "4611686018427387904":
                    continue  # valid, and would train for ever
                d = self.fresh("flag")
                must = not valid(flag, v)
                if flag == "--td-phase1-epoch-size":
                    # replaces the default one: build the command by hand
                    cmd = [self.trainer, "task-distill", "--td-phase", "1", "--load-teacher-ckpt-path",
                           w / "teacher.safetensors", "--load-gd-ckpt-path", w / "student.safetensors",
                           "--train-data-dir", w / "train.tfrecord", f"{flag}={v}", "--output-dir", d / "o"]
                    self.run(cls, f"{flag}={v}", cmd, must)
                else:
                    self.td1(w / "train.tfrecord", d / "o", extra=[f"{flag}={v}"], cls=cls,
                             case=f"{flag}={v}", must_refuse=must)
        for flag in ["--batch", "--seq-len"]:
            for v in ["0", "-1", "4611686018427387904", "18446744073709551616", "nan", "100000"]:
                d = self.fresh("cflag")
                cmd = [self.tbc, "compile", "--phases", "td1", "--teacher-config", TINY / "teacher.json",
                       "--student-config", TINY / "student.json", f"{flag}={v}", "--compile-to", "plan",
                       "-o", d / "plan.txt"]
                self.run(cls, f"compile {flag}={v}", cmd, True)
        for v in ["nosuchcpu", "", "x86-64-v9"]:
            d = self.fresh("cpu")
            cmd = [self.tbc, "compile", "--phases", "eval", "--teacher-config", TINY / "teacher.json",
                   "--student-config", TINY / "student.json", "--batch", "4", "--seq-len", "16",
                   f"--cpu={v}", "-o", d / "t"]
            self.run(cls, f"compile --cpu={v}", cmd, True)
        for step_flag in ["--lr", "--loss-scale", "--decay-steps", "--warmup-steps"]:
            for v in ["nan", "-1", "0", "inf"]:
                d = self.fresh("sflag")
                must = not (step_flag == "--decay-steps" and v == "inf") and not (step_flag == "--warmup-steps" and v == "0")
                cmd = [self.trainer, "step", "--phase", "td1", "--weights", TINY / "weights.safetensors",
                       "--batch", TINY / "batch.safetensors", "--out", d / "o.safetensors", f"{step_flag}={v}"]
                self.run(cls, f"step {step_flag}={v}", cmd, must)

    def files_class(self):
        cls, w = "file handling", self.work
        for i in range(20):  # exports onto inputs
            d = self.fresh("exp")
            teacher_dir = d / "teacher"
            teacher_dir.mkdir()
            shutil.copy(w / "teacher.safetensors", teacher_dir / "model.safetensors")
            shutil.copy(TINY / "teacher.json", teacher_dir / "config.json")
            target = self.rng.choice(["same", "symlink", "parent", "ckpt"])
            if target == "same":
                out = teacher_dir
            elif target == "symlink":
                (d / "link").symlink_to(teacher_dir)
                out = d / "link"
            elif target == "parent":
                out = d
            if target == "ckpt":
                cmd = [self.trainer, "export-hf", "--ckpt", w / "student.safetensors", "-o", w / "student.safetensors"]
                self.run(cls, "export-hf -o the checkpoint", cmd, True)
                continue
            cmd = [self.trainer, "finetune", "--load-teacher-ckpt-path", teacher_dir, "--train-data-dir",
                   w / "train.tfrecord", "--epoch-size", "1", "--output-dir", d / "o", "--export-hf", out]
            self.run(cls, f"--export-hf onto the teacher ({target})", cmd, True)
            if not (teacher_dir / "model.safetensors").exists():
                self.results[-1]["outcome"] = "silent acceptance"
        for i in range(20):  # data output onto its input
            d = self.fresh("dat")
            shutil.copy(self.mnli, d / "in.tsv")
            which = self.rng.choice(["output", "schema"])
            cmd = [self.tbc, "data", "glue", "--task", "MNLI", "--vocab", VOCAB, "--max-seq-length", "16",
                   "--input", d / "in.tsv", "--output", d / "x.tfrecord"]
            cmd += ["--schema-out", d / "in.tsv"] if which == "schema" else []
            if which == "output":
                cmd[cmd.index(d / "x.tfrecord")] = d / "in.tsv"
            self.run(cls, f"tbc data glue --{which} = --input", cmd, True)
            if (d / "in.tsv").read_bytes() != self.mnli.read_bytes():
                self.results[-1]["outcome"] = "silent acceptance"
        for i in range(20):  # data directories: "db" in a data file name, MindRecord index files
            d = self.fresh("db")
            data = d / "data"
            data.mkdir()
            name = self.rng.choice(["imdb_train.tfrecord", "db.tfrecord", "train.tfrecord_db"])
            shutil.copy(w / "train.tfrecord", data / name)
            (data / "train.mindrecord.db").write_bytes(b"index, not data")
            rc, err = self.td1(data, d / "o", cls=cls, case=f"data file {name} beside a .db index")
            if rc == 0 and name not in err:
                self.results[-1]["outcome"] = "silent acceptance"  # read without saying so

    def faults_class(self):
        cls, w = "faults (SIGKILL/SIGINT)", self.work
        rows = self.rows * 8  # 48 steps per epoch
        self.write_data(w / "long.tfrecord", rows)
        for i in range(30):
            d = self.fresh("kill")
            cmd = [self.trainer, "task-distill", "--td-phase", "1", "--load-teacher-ckpt-path",
                   w / "teacher.safetensors", "--load-gd-ckpt-path", w / "student.safetensors",
                   "--train-data-dir", w / "long.tfrecord", "--td-phase1-epoch-size", "4",
                   "--enable-data-sink", "false", "--save-ckpt-step", "1", "--output-dir", d / "o"]
            sig = signal.SIGINT if i % 3 == 0 else signal.SIGKILL
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(self.rng.uniform(0.2, 1.5))
            p.send_signal(sig)
            _, err = p.communicate()
            if any(m in err for m in PANIC_MARKS):
                self.record(cls, f"{sig.name}", cmd, p.returncode, err, False)
                continue
            # Resume to the end: must succeed and leave no temporaries.
            rc, err = self.run(cls, f"{sig.name} at a random time, then --resume", cmd + ["--resume"], False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tbc", type=Path, default=REPO / "target/release/tbc")
    ap.add_argument("--work", type=Path)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="tbc-campaign-"))
    work.mkdir(parents=True, exist_ok=True)
    c = Campaign(a.tbc.resolve(), work.resolve(), a.seed, a.timeout)
    c.setup()
    for step in [c.safetensors_class, c.checkpoint_class, c.tfrecord_class, c.schema_config_class,
                 c.ir_class, c.tsv_class, c.flags_class, c.files_class, c.faults_class]:
        step()
        print(f"{step.__name__}: {len(c.results)} cases so far", file=sys.stderr)
    outcomes = ["clean error", "panic/abort", "silent acceptance", "accepted valid", "timeout"]
    classes = list(dict.fromkeys(r["class"] for r in c.results))
    print("| class | inputs | clean errors | panics | silent acceptances | accepted valid | timeouts | leftover temporaries |")
    print("|---|---|---|---|---|---|---|---|")
    total = [0] * 7
    for cls in classes:
        rs = [r for r in c.results if r["class"] == cls]
        row = [len(rs)] + [sum(r["outcome"] == o for r in rs) for o in outcomes] + [sum(bool(r["temporaries"]) for r in rs)]
        total = [t + x for t, x in zip(total, row)]
        print(f"| {cls} | " + " | ".join(map(str, row)) + " |")
    print("| **all** | " + " | ".join(f"**{x}**" for x in total) + " |")
    bad = [r for r in c.results if r["outcome"] in ("panic/abort", "silent acceptance", "timeout") or r["temporaries"]]
    for r in bad[:40]:
        print(f"\n- {r['class']}: {r['case']} → {r['outcome']} {r['temporaries'] or ''}\n  {r['cmd']}\n  {r['stderr'][-300:]}")
    if a.json:
        a.json.write_text(json.dumps(c.results, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
