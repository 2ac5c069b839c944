#!/usr/bin/env python3
"""Fault and fuzz campaign for tbc and the trainer it compiles (issue 9).

    python3 tests/reliability/campaign.py [--tbc target/release/tbc] [--work DIR] [--seed N]
                                          [--json OUT] [--timeout 20]

Compiles the tiny trainer once, makes valid inputs with tbc itself (`tbc data glue|pretrain`,
`tbc graph`, a short training run), checks that every baseline command succeeds, then derives
600+ bad inputs and faults from --seed in nine classes, runs each against the real commands and
classifies the outcome:

  clean error        exit != 0 with a message on stderr, no panic
  panic/abort        a panic message ("panicked", "internal error", "RUST_BACKTRACE", an allocation
                     failure, LLVM ERROR), exit 70/101/134/139, or death by a signal we did not send
  silent acceptance  exit 0 on an input that must be refused (NaN/Inf, out-of-range values, an
                     output over an input), or an input overwritten whatever the exit code
  accepted valid     exit 0 where the input may be valid (structural mutations whose validity is
                     unknown, valid controls, a successful --resume after a fault)
  timeout            no exit within --timeout seconds

After every case it counts leftover temporaries under the case's directories and the shared
inputs (names with ".tmp", "tmp-", ".partial", or a leading "." such as `.{name}.tmp{pid}`,
`.{name}.old{pid}` and `.tbc.lock`). Standard library only: safetensors, TFRecord (masked
CRC32C), tf.train.Example, JSON and TSV bytes are written by hand. Each child runs with a 6 GiB
address-space limit, so an unchecked huge allocation fails fast (and counts as an abort).
Exit status: 0 when no panic, silent acceptance, timeout or leftover was found, else 1; 2 when a
baseline fails.
"""

import argparse, copy, json, os, random, re, resource, shlex, shutil, signal, struct, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests/fixtures/tiny"
VOCAB = REPO / "tests/fixtures/hf/vocab.txt"
PANIC_MARKS = ("panicked", "failed to initiate panic", "RUST_BACKTRACE", "internal error", "LLVM ERROR",
               "memory allocation of", "has overflowed its stack")
PANIC_CODES = (70, 101, 134, 139)
OUTCOMES = ["clean error", "panic/abort", "silent acceptance", "accepted valid", "timeout"]
REFUSE, VALID, UNKNOWN = "refuse", "valid", "unknown"
NAN, INF = float("nan"), float("inf")
NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e308", str(2**62), str(2**64)]

# ---------------------------------------------------------------------------------- formats


def _crc_table():
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ (0x82F63B78 if n & 1 else 0)
        table.append(n)
    return table


CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    """One TFRecord: length, masked CRC of the length, payload, masked CRC of the payload."""
    n = struct.pack("<Q", len(payload))
    return n + struct.pack("<I", masked_crc(n)) + payload + struct.pack("<I", masked_crc(payload))


def split_records(blob: bytes) -> list:
    out, i = [], 0
    while i < len(blob):
        n = struct.unpack_from("<Q", blob, i)[0]
        out.append(blob[i + 12 : i + 12 + n])
        i += 16 + n
    return out


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1  # negative int64 values are ten-byte two's complement varints
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def read_varint(b: bytes, i: int):
    v = shift = 0
    while True:
        x = b[i]
        i += 1
        v |= (x & 0x7F) << shift
        shift += 7
        if x < 0x80:
            return v, i


def ld(num: int, body: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(num << 3 | 2) + varint(len(body)) + body


def pb_fields(b: bytes):
    i = 0
    while i < len(b):
        key, i = read_varint(b, i)
        wire = key & 7
        if wire == 0:
            v, i = read_varint(b, i)
        elif wire == 2:
            n, i = read_varint(b, i)
            v, i = b[i : i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            v, i = b[i : i + n], i + n
        else:
            raise ValueError(f"wire type {wire}")
        yield key >> 3, wire, v


def decode_example(b: bytes) -> dict:
    """tf.train.Example → {name: (kind, values)}, kind in bytes|float|int."""
    feats = {}
    for _, _, features in pb_fields(b):
        for _, _, entry in pb_fields(features):
            d = {n: v for n, _, v in pb_fields(entry)}
            (kind_num, _, lst), = list(pb_fields(d[2]))
            kind, vals = {1: "bytes", 2: "float", 3: "int"}[kind_num], []
            for _, wire, v in pb_fields(lst):
                if kind == "bytes":
                    vals.append(v)
                elif kind == "float":
                    vals += struct.unpack(f"<{len(v) // 4}f", v) if wire == 2 else [struct.unpack("<f", v)[0]]
                else:
                    raw = [v] if wire == 0 else []
                    j = 0
                    while wire == 2 and j < len(v):
                        x, j = read_varint(v, j)
                        raw.append(x)
                    vals += [x - (1 << 64) if x >= 1 << 63 else x for x in raw]
            feats[d[1].decode()] = (kind, list(vals))
    return feats


def encode_example(feats: dict) -> bytes:
    entries = b""
    for name in sorted(feats):
        kind, vals = feats[name]
        if kind == "int":
            value = ld(3, ld(1, b"".join(varint(v) for v in vals)))
        elif kind == "float":
            value = ld(2, ld(1, struct.pack(f"<{len(vals)}f", *vals)))
        else:
            value = ld(1, b"".join(ld(1, v) for v in vals))
        entries += ld(1, ld(1, name.encode()) + ld(2, value))
    return ld(1, entries)


def tfrecord(rows) -> bytes:
    return b"".join(frame(encode_example(r)) for r in rows)


def load_tensors(path):
    """A safetensors file → ({name: [dtype, shape, bytes]}, metadata)."""
    b = Path(path).read_bytes()
    n = struct.unpack_from("<Q", b)[0]
    header, data = json.loads(b[8 : 8 + n]), b[8 + n :]
    meta = header.pop("__metadata__", None)
    return {k: [v["dtype"], v["shape"], data[v["data_offsets"][0] : v["data_offsets"][1]]]
            for k, v in header.items()}, meta


def st_bytes(header: dict, data: bytes) -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def save_tensors(path, tensors: dict, meta=None, header_edit=None):
    header, blob = ({"__metadata__": meta} if meta is not None else {}), b""
    for k in sorted(tensors):
        dtype, shape, b = tensors[k]
        header[k] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(b)]}
        blob += b
    if header_edit:
        header_edit(header)
    Path(path).write_bytes(st_bytes(header, blob))


def poke_f32(b: bytes, index: int, value: float) -> bytes:
    return b[: 4 * index] + struct.pack("<f", value) + b[4 * index + 4 :]


def convert_f32(b: bytes, dtype: str) -> bytes:
    vals = struct.unpack(f"<{len(b) // 4}f", b)
    if dtype == "F16":
        return struct.pack(f"<{len(vals)}e", *vals)
    if dtype == "F64":
        return struct.pack(f"<{len(vals)}d", *vals)
    return b"".join(b[i + 2 : i + 4] for i in range(0, len(b), 4))  # BF16: the high half


def mutate_bytes(rng, b: bytes, avoid_end=0):
    """Truncate, flip bits, overwrite or insert: (what, bytes)."""
    kind, b = rng.choice(["truncate", "flip", "overwrite", "insert"]), bytearray(b)
    if kind == "truncate":
        b = b[: rng.randrange(max(1, len(b) - avoid_end))]
    elif kind == "flip":
        for _ in range(1 + rng.randrange(4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == "overwrite":
        i = rng.randrange(len(b))
        b[i : i + 8] = rng.randbytes(8)
    else:
        i = rng.randrange(len(b))
        b[i:i] = rng.choice([b"\xff" * 8, struct.pack("<Q", 1 << 62), b"{", b'"x"', b"\x00", b"9" * 30])
    return kind, bytes(b)


# ---------------------------------------------------------------------------------- running


def limit_child():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def classify(rc, err: str, expect: str, own_signal=False) -> str:
    if rc is None:
        return "timeout"
    if any(m in err for m in PANIC_MARKS) or rc in PANIC_CODES or (rc < 0 and not own_signal):
        return "panic/abort"
    if rc == 0:
        return "silent acceptance" if expect == REFUSE else "accepted valid"
    return "clean error"


def is_temporary(name: str) -> bool:
    return name.startswith(".") or ".tmp" in name or "tmp-" in name or ".partial" in name


def opts_argv(prog, sub, opts: dict) -> list:
    """argv from {flag: value}; None drops a flag, True is a bare flag; `--flag=value` so that
    values such as -1 stay values."""
    out = [str(prog)] + ([sub] if sub else [])
    for k, v in opts.items():
        if v is True:
            out.append(k)
        elif v is not None:
            out.append(f"{k}={v}")
    return out


class Campaign:
    def __init__(self, tbc: Path, work: Path, seed: int, timeout: float):
        self.tbc, self.work, self.timeout, self.seed = tbc, work, timeout, seed
        self.rng = random.Random(seed)
        self.env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "RUST_LOG")}
        self.env["TBC_RUNTIME_LIB"] = str(tbc.parent / "libruntime.a")
        self.results, self.n = [], 0
        self.b = work / "base"  # shared read-only inputs

    # -- processes and records ---------------------------------------------------------------

    def exec(self, argv, cwd, timeout=None):
        try:
            p = subprocess.run([str(a) for a in argv], cwd=cwd, env=self.env, capture_output=True,
                               timeout=timeout or self.timeout, preexec_fn=limit_child)
            return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        except subprocess.TimeoutExpired as e:
            return None, (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace")

    def case_dir(self) -> Path:
        self.n += 1
        d = self.work / "cases" / f"{self.n:04d}"
        d.mkdir(parents=True)
        return d

    def run(self, cls, what, argv, expect, d, check=None):
        """Runs one case in `d`; `check(rc, out, err)` may return (outcome or None, note)."""
        rc, out, err = self.exec(argv, d)
        outcome, note = classify(rc, err, expect), None
        if check:
            override, note = check(rc, out, err)
            outcome = override or outcome
        return self.record(cls, what, argv, expect, d, rc, err, outcome, note)

    def record(self, cls, what, argv, expect, d, rc, err, outcome, note=None, earlier_temps=()):
        temps = list(earlier_temps) + self.temporaries([d, self.b])
        damaged = self.base_changes()
        if damaged:
            outcome, note = "silent acceptance", f"shared input(s) replaced: {damaged}"
        lines = [l for l in err.splitlines() if l.strip()]
        if rc not in (0, None) and not lines:
            note = (note or "") + " error without a message"
        if expect == VALID and outcome == "clean error":
            note = (note or "") + " refused a valid input"
        r = {"class": cls, "input": what, "expect": expect, "outcome": outcome, "rc": rc,
             "cmd": " ".join(shlex.quote(str(a)) for a in argv), "temporaries": temps,
             "message": next((l for l in reversed(lines) if l.startswith("error")), lines[-1] if lines else "")[:400],
             "note": note}
        if outcome in ("panic/abort", "silent acceptance", "timeout") or temps or note:
            r["stderr_head"], r["stderr_tail"] = lines[:8], lines[-3:]
        self.results.append(r)
        return r

    def temporaries(self, dirs) -> list:
        """Our temporaries below `dirs`; removed once counted so the next case starts clean."""
        found = []
        for top in dirs:
            for root, dnames, fnames in os.walk(top):
                for name in dnames + fnames:
                    if is_temporary(name):
                        found.append(str(Path(root, name).relative_to(self.work)))
        for f in found:
            p = self.work / f
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        return found

    def snapshot(self) -> dict:
        return {str(p): (s.st_size, s.st_mtime_ns, s.st_ino) for p in self.b.rglob("*")
                if p.is_file() for s in [p.stat()]}

    def base_changes(self) -> list:
        now = self.snapshot()
        changed = sorted(set(now.items()) ^ set(self.base_state.items()))
        if not changed:
            return []
        shutil.rmtree(self.b)  # restore the shared inputs for the next cases
        shutil.copytree(self.work / "pristine", self.b, symlinks=True)
        self.base_state = self.snapshot()
        return sorted({Path(p).name for p, _ in changed})

    # -- commands ------------------------------------------------------------------------------

    def gd(self, d, o=None):
        b = self.b
        return opts_argv(self.trainer, "general-distill", {
            "--load-teacher-ckpt-path": b / "teacher.safetensors", "--data-dir": b / "gd/train.tfrecord",
            "--epoch-size": 1, "--enable-data-sink": "false", "--output-dir": d / "o", **(o or {})})

    def td(self, d, o=None):
        b = self.b
        return opts_argv(self.trainer, "task-distill", {
            "--td-phase": "1", "--load-teacher-ckpt-path": b / "teacher.safetensors",
            "--load-gd-ckpt-path": b / "student.safetensors", "--train-data-dir": b / "cls/train.tfrecord",
            "--eval-data-dir": b / "cls/train.tfrecord", "--td-phase1-epoch-size": 1,
            "--td-phase2-epoch-size": 1, "--enable-data-sink": "false", "--task-name": "accuracy",
            "--output-dir": d / "o", **(o or {})})

    def ft(self, d, o=None, trainer=None):
        b, reg = self.b, trainer is not None
        return opts_argv(trainer or self.trainer, "finetune", {
            "--load-teacher-ckpt-path": b / ("tdir_reg" if reg else "tdir"),
            "--train-data-dir": b / ("reg" if reg else "cls") / "train.tfrecord",
            "--eval-data-dir": b / ("reg" if reg else "cls") / "train.tfrecord", "--epoch-size": 1,
            "--task-name": "STS-B" if reg else "accuracy", "--enable-data-sink": "false",
            "--output-dir": d / "o", **(o or {})})

    def ev(self, d, o=None):
        return opts_argv(self.trainer, "eval", {
            "--eval-data-dir": self.b / "cls/train.tfrecord", "--load-td1-ckpt-path": self.b / "eval_model.safetensors",
            "--task-name": "accuracy", **(o or {})})

    def export(self, d, o=None):
        return opts_argv(self.trainer, "export-hf", {"--ckpt": self.b / "eval_model.safetensors",
                                                     "--output": d / "hf", **(o or {})})

    def tstep(self, d, o=None, tbc=False):
        opts = {"--phase": "td1", "--weights": self.b / "weights.safetensors",
                "--batch": self.b / "batch.safetensors", "--out": d / "out.safetensors", **(o or {})}
        if tbc:
            return opts_argv(self.tbc, "step", {"--teacher-config": TINY / "teacher.json",
                                                "--student-config": TINY / "student.json", **opts})
        return opts_argv(self.trainer, "step", opts)

    def plan(self, d, o=None):
        return opts_argv(self.tbc, "compile", {
            "--phases": "td1", "--teacher-config": TINY / "teacher.json", "--student-config": TINY / "student.json",
            "--batch": 4, "--seq-len": 16, "--compile-to": "plan", "--output": d / "plan.txt", **(o or {})})

    def glue(self, d, o=None):
        return opts_argv(self.tbc, "data", {"glue": True, "--task": "tsv", "--skip-header": True,
                                            "--text-a-column": 0, "--label-column": 1, "--labels": "0,1,2",
                                            "--vocab": VOCAB, "--max-seq-length": 16,
                                            "--input": self.b / "cls.tsv", "--output": d / "out/train.tfrecord",
                                            **(o or {})})

    def pretrain(self, d, o=None):
        return opts_argv(self.tbc, "data", {"pretrain": True, "--vocab": VOCAB, "--max-seq-length": 16,
                                            "--input": self.b / "corpus.txt", "--output": d / "out/gd.tfrecord",
                                            **(o or {})})

    # -- setup ---------------------------------------------------------------------------------

    def must(self, what, argv, cwd=None):
        rc, out, err = self.exec(argv, cwd or self.work, timeout=max(self.timeout, 120))
        if rc != 0:
            print(f"error: the valid baseline '{what}' failed (exit {rc}), so there is nothing to mutate:\n"
                  f"  {' '.join(map(str, argv))}\n{err[-3000:]}", file=sys.stderr)
            sys.exit(2)
        return out

    def setup(self):
        w, b, rng = self.work, self.b, random.Random(self.seed)
        assert crc32c(b"123456789") == 0xE3069283, "crc32c self-test"
        for sub in ("bin", "base/cls", "base/reg", "base/gd", "base/tdir", "base/tdir_reg", "cases"):
            (w / sub).mkdir(parents=True)
        teacher, student = json.loads((TINY / "teacher.json").read_text()), json.loads((TINY / "student.json").read_text())
        (w / "bin/teacher_reg.json").write_text(json.dumps(dict(teacher, num_labels=1)))
        (w / "bin/student_reg.json").write_text(json.dumps(dict(student, num_labels=1)))
        self.trainer, self.trainer_reg = w / "bin/trainer", w / "bin/trainer_reg"
        for out, phases, t, s in [(self.trainer, "gd,td1,td2,eval,ft,eval_teacher", TINY / "teacher.json", TINY / "student.json"),
                                  (self.trainer_reg, "ft,eval_teacher", w / "bin/teacher_reg.json", w / "bin/student_reg.json")]:
            print(f"compiling {out.name} ...", file=sys.stderr)
            self.must(f"compile {out.name}", [self.tbc, "compile", "--target", "cpu", "--phases", phases, "--preset",
                                              "mindspore", "--teacher-config", t, "--student-config", s, "--batch", "4",
                                              "--seq-len", "16", "--output", out])
        # Models: the fixture's teacher.* / student.* under Hugging Face names, and as directories.
        allw, meta = load_tensors(TINY / "weights.safetensors")
        for p in ("teacher", "student"):
            save_tensors(b / f"{p}.safetensors", {k[len(p) + 1 :]: v for k, v in allw.items() if k.startswith(p + ".")}, {"format": "pt"})
        shutil.copy(TINY / "weights.safetensors", b / "weights.safetensors")
        shutil.copy(TINY / "batch.safetensors", b / "batch.safetensors")
        shutil.copy(b / "teacher.safetensors", b / "tdir/model.safetensors")
        shutil.copy(TINY / "teacher.json", b / "tdir/config.json")
        t, _ = load_tensors(b / "teacher.safetensors")
        t["classifier.weight"] = ["F32", [1, 64], t["classifier.weight"][2][: 64 * 4]]
        t["classifier.bias"] = ["F32", [1], t["classifier.bias"][2][:4]]
        save_tensors(b / "tdir_reg/model.safetensors", t, {"format": "pt"})
        shutil.copy(w / "bin/teacher_reg.json", b / "tdir_reg/config.json")
        # Data, made by tbc: 24 labelled rows (3 classes), 24 regression rows, a gd corpus.
        words = [x for x in VOCAB.read_text().split()[5:] if x.isalpha()]
        sents = [" ".join(rng.choice(words) for _ in range(rng.randrange(3, 12))) for _ in range(24)]
        (b / "cls.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{i % 3}\n" for i, s in enumerate(sents)))
        (b / "reg.tsv").write_text("sentence\tscore\n" + "".join(f"{s}\t{i % 6 * 0.8:.1f}\n" for i, s in enumerate(sents)))
        (b / "corpus.txt").write_text("".join(s + ("\n\n" if i % 5 == 4 else "\n") for i, s in enumerate(sents)))
        self.must("tbc data glue", self.glue(b, {"--output": b / "cls/train.tfrecord"}))
        self.must("tbc data glue --float-label", self.glue(b, {"--input": b / "reg.tsv", "--output": b / "reg/train.tfrecord",
                                                                "--labels": None, "--float-label": True}))
        self.must("tbc data pretrain", self.pretrain(b, {"--output": b / "gd/train.tfrecord"}))
        self.rows = {k: [decode_example(r) for r in split_records((b / k / "train.tfrecord").read_bytes())]
                     for k in ("cls", "reg", "gd")}
        for k, rows in self.rows.items():  # our encoder writes what the trainer reads
            (b / k / "reencoded.tfrecord").write_bytes(tfrecord(rows))
        for phase in ("eval", "td2"):
            (b / f"{phase}.ir").write_text(self.must("tbc graph", [self.tbc, "graph", "--phase", phase, "--teacher-config",
                                                                    TINY / "teacher.json", "--student-config", TINY / "student.json",
                                                                    "--batch", "2", "--seq-len", "8"]))
        # Runs whose outputs the mutations start from: td1 checkpoints at every step, a td
        # student for eval/export, and the uninterrupted long td1 run the faults compare with.
        self.must("task-distill td1", self.td(w / "run_td1", {"--save-ckpt-step": 1, "--max-ckpt-num": 10}))
        self.must("task-distill both", self.td(w / "run_td", {"--td-phase": "both"}))
        shutil.copy(w / "run_td/o/eval_model.safetensors", b / "eval_model.safetensors")
        self.must("task-distill long td1", self.long_td1(w / "run_long"))
        for k in range(1, 13):
            (w / f"bl{k}").mkdir()
        baselines = {
            "general-distill": self.gd(w / "bl1"), "finetune": self.ft(w / "bl2"),
            "finetune (regression)": self.ft(w / "bl3", trainer=self.trainer_reg), "eval": self.ev(w),
            "eval teacher": self.ev(w, {"--load-td1-ckpt-path": None, "--load-teacher-ckpt-path": b / "tdir"}),
            "export-hf": self.export(w / "bl4"), "trainer step": self.tstep(w / "bl5"),
            "tbc step": self.tstep(w / "bl6", tbc=True), "tbc compile --compile-to plan": self.plan(w / "bl7"),
            "tbc verify": [self.tbc, "verify", b / "td2.ir"],
            "finetune on re-encoded data": self.ft(w / "bl8", {"--train-data-dir": b / "cls/reencoded.tfrecord"}),
            "regression on re-encoded data": self.ft(w / "bl9", {"--train-data-dir": b / "reg/reencoded.tfrecord"}, self.trainer_reg),
            "general-distill on re-encoded data": self.gd(w / "bl10", {"--data-dir": b / "gd/reencoded.tfrecord"}),
            "finetune with --schema-dir": self.ft(w / "bl11", {"--schema-dir": b / "cls/schema.json"}),
        }
        shutil.copytree(w / "run_td1/o", w / "bl12/o")  # resume from step 3
        for f in (w / "bl12/o/tinybert_td_phase1_save_ckpt").glob("tiny_bert_[456]_*"):
            f.unlink()
        baselines["resume td1"] = self.td(w / "bl12", {"--save-ckpt-step": 1, "--max-ckpt-num": 10, "--resume": True})
        for what, argv in baselines.items():
            self.must(what, argv)
        shutil.copytree(b, w / "pristine", symlinks=True)
        self.base_state = self.snapshot()

    def long_td1(self, d, extra=None):
        return self.td(d, {"--td-phase1-epoch-size": 60, "--save-ckpt-step": 1, **(extra or {})})

    # -- 1. safetensors weights ------------------------------------------------------------------

    def safetensors_class(self):
        cls, rng, b = "1 safetensors weights", self.rng, self.b
        # target: (file it replaces, command, tensors the command reads; None = every tensor)
        used = lambda n: n.startswith(("bert.embeddings.", "bert.encoder.", "teacher.bert.e", "student.bert.e"))
        targets = {
            "teacher of general-distill": ("teacher.safetensors", lambda d, p: self.gd(d, {"--load-teacher-ckpt-path": p}), used),
            "teacher of task-distill": ("teacher.safetensors", lambda d, p: self.td(d, {"--load-teacher-ckpt-path": p}), used),
            "student of task-distill": ("student.safetensors", lambda d, p: self.td(d, {"--load-gd-ckpt-path": p}),
                                        lambda n: n.startswith("bert.e")),  # a missing head is initialized
            "checkpoint of eval": ("eval_model.safetensors", lambda d, p: self.ev(d, {"--load-td1-ckpt-path": p}),
                                   lambda n: not n.startswith("fit_dense")),
            "weights of trainer step": ("weights.safetensors", lambda d, p: self.tstep(d, {"--weights": p}), used),
            "weights of tbc step": ("weights.safetensors", lambda d, p: self.tstep(d, {"--weights": p}, tbc=True), used),
        }
        kinds = ["truncated", "random bytes", "header length", "header bytes", "dtype", "shape", "offsets",
                 "NaN/Inf value", "renamed tensor", "missing tensor", "converted dtype"]
        for i in range(88):
            kind = kinds[i % len(kinds)]  # every kind meets every target in turn
            tname, (src, command, reads) = list(targets.items())[(i // len(kinds) + i % len(kinds)) % len(targets)]
            d, raw = self.case_dir(), (b / src).read_bytes()
            tensors, meta = load_tensors(b / src)
            name = rng.choice(sorted(n for n in tensors if reads(n)))
            dtype, shape, data = tensors[name]
            expect, edit = REFUSE, None
            if kind == "truncated":
                cut = rng.randrange(len(raw))
                out, what = raw[:cut], f"cut at byte {cut} of {len(raw)}"
            elif kind == "random bytes":
                n = rng.choice([0, 3, 8, 64, 4096])
                prefix = struct.pack("<Q", rng.choice([2, 64, 1 << 20])) if rng.random() < 0.5 else b""
                out, what = prefix + rng.randbytes(n), f"{len(prefix) + n} random bytes"
            elif kind == "header length":
                v = rng.choice([0, 1, 7, len(raw), 1 << 40, (1 << 63) + 1, (1 << 64) - 1])
                out, what = struct.pack("<Q", v) + raw[8:], f"header length {v}"
            elif kind == "header bytes":
                hlen = struct.unpack_from("<Q", raw)[0]
                what, h = mutate_bytes(rng, raw[8 : 8 + hlen])
                out, expect, what = raw[:8] + h.ljust(hlen)[:hlen] + raw[8 + hlen :], UNKNOWN, f"header JSON {what}"
            else:
                out = None
                if kind == "dtype":
                    bad = rng.choice(["F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "Q8", "", "f32"])
                    edit, what = lambda h: h[name].update(dtype=bad), f"{name} dtype {bad!r} with f32 bytes"
                elif kind == "shape":
                    bad = rng.choice([[4294967296, 4294967296], [], [0], list(reversed(shape)) + [1], [len(data) // 4],
                                      [-1] + shape[1:], [2**62, 4]])
                    if bad == shape:
                        bad = [1] + shape
                    edit, what = lambda h: h[name].update(shape=bad), f"{name} shape {bad}"
                elif kind == "offsets":
                    def edit(h, v=rng.choice(["past end", "reversed", "huge", "negative", "overlap"])):
                        s, e = h[name]["data_offsets"]
                        total = max(x["data_offsets"][1] for k, x in h.items() if k != "__metadata__")
                        h[name]["data_offsets"] = {"past end": [total, total + e - s], "reversed": [e, s],
                                                   "huge": [s, s + (1 << 40)], "negative": [-4, e - s - 4],
                                                   "overlap": [s, e + 4]}[v]
                        edit.what = v
                    what = f"{name} data_offsets"
                elif kind == "NaN/Inf value":
                    v = rng.choice([NAN, INF, -INF])
                    tensors[name][2] = poke_f32(data, rng.randrange(len(data) // 4), v)
                    what = f"{v} in {name}"
                elif kind == "renamed tensor":
                    new = rng.choice([x for x in (name.replace("weight", "wieght"), name.upper(), name + ".",
                                                  name.replace(".0.", ".9."), " " + name) if x != name])
                    tensors[new] = tensors.pop(name)
                    what = f"{name} renamed {new!r}"
                elif kind == "missing tensor":
                    del tensors[name]
                    what = f"without {name}"
                else:
                    conv = rng.choice(["F16", "BF16", "F64"])
                    tensors[name] = [conv, shape, convert_f32(data, conv)]
                    expect, what = VALID, f"{name} stored as {conv}"
                p = d / "w.safetensors"
                save_tensors(p, tensors, meta, edit)
                what += f" ({edit.what})" if getattr(edit, "what", None) else ""
            if out is not None:
                (d / "w.safetensors").write_bytes(out)
            self.run(cls, f"{tname}: {kind}: {what}", command(d, d / "w.safetensors"), expect, d)

    # -- 2. checkpoints --------------------------------------------------------------------------

    def checkpoint_class(self):
        cls, rng, w = "2 checkpoints", self.rng, self.work
        ck = "tinybert_td_phase1_save_ckpt"
        student, meta = load_tensors(self.b / "eval_model.safetensors")
        names = sorted(n for n in student if not n.startswith("fit_dense"))
        kinds = ["NaN in eval checkpoint", "NaN in export checkpoint", "eval checkpoint lacks a tensor",
                 "resume: weights lack a tensor", "resume: NaN in weights", "resume: state lacks a moment",
                 "resume: NaN/negative moment", "resume: state metadata", "resume: truncated state",
                 "resume: state metadata"]
        metadata_edits = iter([("batch", 8), ("seq_len", 32), ("phase", "gd"), ("global_step", 99), ("steps_per_epoch", 0),
                               ("scalars", {}), ("state.loss_scale", -1.0), ("state.loss_scale", 1e39),
                               ("state.step", -3.0), ("state.loss_scale", 0.0)])
        for i in range(50):
            kind, d = kinds[i % len(kinds)], self.case_dir()
            if not kind.startswith("resume"):
                t = {k: list(v) for k, v in student.items()}
                name = rng.choice(names)
                if "NaN" in kind:
                    t[name][2] = poke_f32(t[name][2], rng.randrange(len(t[name][2]) // 4), rng.choice([NAN, INF, -INF]))
                else:
                    del t[name]
                save_tensors(d / "s.safetensors", t, meta)
                argv = (self.export(d, {"--ckpt": d / "s.safetensors"}) if "export" in kind
                        else self.ev(d, {"--load-td1-ckpt-path": d / "s.safetensors"}))
                self.run(cls, f"{kind}: {name}", argv, REFUSE, d)
                continue
            shutil.copytree(w / "run_td1/o", d / "o")
            for f in (d / "o" / ck).glob("tiny_bert_[456]_*"):
                f.unlink()
            wpath, spath = d / "o" / ck / "tiny_bert_3_1.safetensors", d / "o" / ck / "tiny_bert_3_1.state.safetensors"
            path = spath if "state" in kind or "moment" in kind else wpath
            t, m = load_tensors(path)
            name = rng.choice(sorted(t)) if t else ""
            if kind == "resume: weights lack a tensor":
                name = rng.choice([n for n in sorted(t) if not n.startswith(("bert.pooler", "classifier"))])
                del t[name]
            elif kind == "resume: NaN in weights" or kind == "resume: NaN/negative moment":
                v = -1.0 if "negative" in kind and name.startswith("adam_v") and rng.random() < 0.5 else rng.choice([NAN, INF])
                t[name][2] = poke_f32(t[name][2], rng.randrange(len(t[name][2]) // 4), v)
                name += f" = {v}"
            elif kind == "resume: state lacks a moment":
                del t[name]
            elif kind == "resume: state metadata":
                st = json.loads(m["tbc_state"])
                key, val = next(metadata_edits)
                (st["scalars"] if key.startswith("state.") else st)[key] = val
                m = dict(m, tbc_state=json.dumps(st))
                name = f"{key} = {val}"
            if kind == "resume: truncated state":
                raw = path.read_bytes()
                path.write_bytes(raw[: rng.randrange(len(raw))])
            else:
                save_tensors(path, t, m)
            argv = self.td(d, {"--save-ckpt-step": 1, "--max-ckpt-num": 10, "--resume": True})
            self.run(cls, f"{kind}: {name}", argv, REFUSE, d)

    # -- 3. TFRecord data ------------------------------------------------------------------------

    def tfrecord_class(self):
        cls, rng = "3 TFRecord data", self.rng
        targets = {"finetune": ("cls", lambda d, p: self.ft(d, {"--train-data-dir": p})),
                   "task-distill td1": ("cls", lambda d, p: self.td(d, {"--train-data-dir": p})),
                   "eval": ("cls", lambda d, p: self.ev(d, {"--eval-data-dir": p})),
                   "general-distill": ("gd", lambda d, p: self.gd(d, {"--data-dir": p})),
                   "finetune (regression)": ("reg", lambda d, p: self.ft(d, {"--train-data-dir": p}, self.trainer_reg))}
        seq_targets = ["finetune", "task-distill td1", "eval", "general-distill"]
        kinds = {"truncated": seq_targets, "length crc": seq_targets, "data crc": seq_targets,
                 "length field": seq_targets, "random bytes": seq_targets, "empty file": seq_targets,
                 "payload bytes": seq_targets, "feature type": seq_targets, "feature length": seq_targets,
                 "missing feature": seq_targets, "id >= vocab_size": seq_targets, "negative id": seq_targets,
                 "segment id >= type_vocab_size": seq_targets, "mask not 0/1": seq_targets,
                 "label out of range": ["finetune"], "float label for classes": ["finetune"],
                 "non-finite float label": ["finetune (regression)"], "label of wrong kind": ["finetune (regression)"]}
        kind_list = list(kinds)
        bad_values = {"id >= vocab_size": ("input_ids", [100, 101, 5000, 2**31, 2**40, 2**63 - 1]),
                      "negative id": ("input_ids", [-1, -5, -(2**31), -(2**63)]),
                      "segment id >= type_vocab_size": ("segment_ids", [2, 7, -1, 2**40]),
                      "mask not 0/1": ("input_mask", [2, -1, 255])}
        for i in range(108):
            kind = kind_list[i % len(kind_list)]
            tname = kinds[kind][(i // len(kind_list)) % len(kinds[kind])]
            base, command = targets[tname]
            rows = copy.deepcopy(self.rows[base])
            good, d = tfrecord(rows), self.case_dir()
            r = rng.randrange(len(rows))
            col = rng.choice(["input_ids", "input_mask", "segment_ids"])
            kind_, vals = rows[r][col]
            pos = rng.randrange(len(vals))
            expect, what, blob = REFUSE, f"record {r}", None
            bounds = [0]
            for rec in rows:
                bounds.append(bounds[-1] + len(frame(encode_example(rec))))
            start = bounds[r]
            if kind == "truncated":
                cut = rng.choice([c for c in range(1, len(good)) if c not in bounds])
                blob, what = good[:cut], f"cut at byte {cut} of {len(good)}"
            elif kind in ("length crc", "data crc"):
                at = start + 8 if kind == "length crc" else bounds[r + 1] - 4
                blob = bytearray(good)
                blob[at + rng.randrange(4)] ^= 1 << rng.randrange(8)
            elif kind == "length field":
                n = rng.choice([0, 1, bounds[r + 1] - start - 15, 1 << 31, 1 << 62, (1 << 64) - 1])
                head = struct.pack("<Q", n)
                blob = good[:start] + head + struct.pack("<I", masked_crc(head)) + good[start + 12 :]
                what += f" length {n} (length CRC valid)"
            elif kind == "random bytes":
                blob = rng.randbytes(rng.choice([1, 12, 16, 100, 5000]))
                what = f"{len(blob)} random bytes"
            elif kind == "empty file":
                blob, what = b"", "0 bytes"
            elif kind == "payload bytes":
                recs = [encode_example(x) for x in rows]
                what, recs[r] = mutate_bytes(rng, recs[r])
                blob, expect, what = b"".join(frame(x) for x in recs), UNKNOWN, f"record {r} payload {what} (CRC valid)"
            elif kind == "feature type":
                new = rng.choice(["float", "bytes"])
                rows[r][col] = (new, [float(x) for x in vals] if new == "float" else [str(x).encode() for x in vals])
                what += f" {col} as a {new} list"
            elif kind == "feature length":
                n = rng.choice([0, 1, len(vals) - 1, len(vals) + 1, 4 * len(vals)])
                rows[r][col] = (kind_, (vals * 4)[:n])
                what += f" {col} with {n} values"
            elif kind == "missing feature":
                del rows[r][col]
                what += f" without {col}"
            elif kind in bad_values:
                col, choices = bad_values[kind]
                rows[r][col][1][pos] = v = rng.choice(choices)
                what += f" {col}[{pos}] = {v}"
            elif kind == "label out of range":
                v = rng.choice([3, 4, 99, -1, 2**40])
                rows[r]["label_ids"] = ("int", [v])
                what += f" label_ids = {v} (3 classes)"
            elif kind == "float label for classes":
                v = rng.choice([0.5, 1.0, NAN])
                rows[r]["label_ids"] = ("float", [v])
                what += f" label_ids = float {v}"
            elif kind == "non-finite float label":
                v = rng.choice([NAN, INF, -INF])
                rows[r]["label_ids"] = ("float", [v])
                what += f" label_ids = {v}"
            else:
                rows[r]["label_ids"] = rng.choice([("int", [1]), ("bytes", [b"1.5"]), ("float", [1.0, 2.0])])
                what += f" label_ids = {rows[r]['label_ids']}"
            if blob is None:
                blob = tfrecord(rows)
            (d / "x.tfrecord").write_bytes(bytes(blob))
            self.run(cls, f"{tname}: {kind}: {what}", command(d, d / "x.tfrecord"), expect, d)

    # -- 4. schema.json and config.json ------------------------------------------------------------

    def schema_config_class(self):
        cls, rng, b = "4 schema.json / config.json", self.rng, self.b
        schema = json.loads((b / "cls/schema.json").read_text())
        for i in range(40):
            d, s, expect = self.case_dir(), json.loads(json.dumps(schema)), REFUSE
            col = rng.choice(["input_ids", "input_mask", "segment_ids", "label_ids"])
            edit = ["shape", "rank", "type", "numRows", "datasetType", "drop column", "drop columns",
                    "not an object", "truncated", "bytes"][i % 10]
            text = None
            if edit == "shape":
                s["columns"][col]["shape"] = v = rng.choice([[0], [-1], [4294967296, 4294967296], [2**62], [17], [15], [2**64]])
                s["columns"][col]["rank"] = len(v)
            elif edit == "rank":
                s["columns"][col]["rank"] = v = rng.choice([0, 2, -1, 2**64])
            elif edit == "type":
                s["columns"][col]["type"] = v = rng.choice(["float32", "string", "int32", 5, None])
            elif edit == "numRows":
                s["numRows"] = v = rng.choice([-1, "24", 1.5, 2**70, None])
                expect = UNKNOWN if v is None else REFUSE  # null: an absent optional field
            elif edit == "datasetType":
                s["datasetType"] = v = rng.choice(["MindRecord", "", 7])
            elif edit == "drop column":
                del s["columns"][col]
                v = col
            elif edit == "drop columns":
                v = rng.choice(["columns", "numRows", "datasetType"])
                del s[v]
                expect = REFUSE if v == "columns" else VALID
            elif edit == "not an object":
                text = v = rng.choice(["[]", '"schema"', "5", "null", "{}"])
            elif edit == "truncated":
                full = json.dumps(s)
                v = rng.randrange(len(full) - 1)
                text = full[:v]
            else:
                v, text = mutate_bytes(rng, json.dumps(s, indent=2).encode())
                expect = UNKNOWN
            p = d / "schema.json"
            p.write_bytes(text if isinstance(text, bytes) else (text if text is not None else json.dumps(s)).encode())
            argv = self.ft(d, {"--schema-dir": p}) if rng.random() < 0.6 else self.ev(d, {"--schema-dir": p})
            self.run(cls, f"schema {edit}: {col} {v}", argv, expect, d)
        teacher = json.loads((TINY / "teacher.json").read_text())
        sizes = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size", "num_labels"]
        for i in range(44):
            d, c, expect, missing_default_agrees = self.case_dir(), dict(teacher), REFUSE, False
            edit, text = ["size", "overflow", "heads", "eps", "dropout", "positions", "missing", "type", "truncated", "bytes", "not an object"][i % 11], None
            if edit == "size":
                key, v = rng.choice(sizes), rng.choice([0, -4, 2**62, 2**64, 1.5, "64", None])
                c[key] = v
                edit = f"{key} = {v!r}"
            elif edit == "overflow":
                c["vocab_size"] = c["hidden_size"] = 4294967296
                edit = "vocab_size = hidden_size = 2^32"
            elif edit == "heads":
                c["num_attention_heads"] = v = rng.choice([3, 5, 7, 128])
                edit = f"num_attention_heads = {v} (hidden {c['hidden_size']})"
            elif edit == "eps":
                v = rng.choice(["NaN", "Infinity", "-1e-12", '"nan"', "1e999", "-0.5"])
                text = json.dumps(dict(c, layer_norm_eps="@")).replace('"@"', v)
                edit = f"layer_norm_eps = {v}"
            elif edit == "dropout":
                key, v = rng.choice(["hidden_dropout_prob", "attention_probs_dropout_prob"]), rng.choice([1.5, -0.1, "NaN"])
                text = json.dumps(dict(c, **{key: "@"})).replace('"@"', str(v))
                edit = f"{key} = {v}"
            elif edit == "positions":
                c["max_position_embeddings"] = v = rng.choice([8, 15])
                edit = f"max_position_embeddings = {v} < seq_len 16"
            elif edit == "missing":
                key = rng.choice(sizes)
                del c[key]
                edit, expect = f"without {key}", UNKNOWN
                missing_default_agrees = key == "type_vocab_size"  # Hugging Face's default is 2 as well
            elif edit == "type":
                key, v = rng.choice([("model_type", "gpt2"), ("hidden_act", "relu"), ("hidden_act", "nope"), ("architectures", 5)])
                c[key] = v
                edit, expect = f"{key} = {v!r}", UNKNOWN
            elif edit == "truncated":
                full = json.dumps(c)
                text = full[: rng.randrange(len(full) - 1)]
            elif edit == "not an object":
                text = rng.choice(["[]", "null", '"bert"'])
                edit += f" {text}"
            else:
                edit, text = mutate_bytes(rng, json.dumps(c, indent=2).encode())
                edit, expect = f"bytes {edit}", UNKNOWN
            raw = text if isinstance(text, bytes) else (text if text is not None else json.dumps(c)).encode()
            if i % 2:  # the teacher directory the trainer reads
                shutil.copytree(b / "tdir", d / "tdir")
                (d / "tdir/config.json").write_bytes(raw)
                if edit.startswith("without") and not missing_default_agrees:
                    expect = REFUSE  # Hugging Face's default differs from the compiled model
                self.run(cls, f"trainer teacher config.json {edit}", self.ft(d, {"--load-teacher-ckpt-path": d / "tdir"}), expect, d)
            else:
                (d / "teacher.json").write_bytes(raw)
                self.run(cls, f"tbc compile teacher config {edit}", self.plan(d, {"--teacher-config": d / "teacher.json"}), expect, d)

    # -- 5. IR text (tbc verify) -------------------------------------------------------------------

    def ir_class(self):
        cls, rng = "5 IR text", self.rng
        huge = "f32[4294967296,4294967296]"
        for i in range(64):
            d = self.case_dir()
            src = rng.choice(["eval.ir", "td2.ir"])
            text, expect = (self.b / src).read_text(), REFUSE
            lines = text.splitlines(keepends=True)
            nodes = [j for j, l in enumerate(lines) if l.lstrip().startswith("%")]
            j = rng.choice(nodes)
            kind = ["truncated", "bytes", "huge input type", "huge graph", "huge constant", "result type",
                    "undefined operand", "duplicate definition", "unknown op", "unknown dtype", "attribute",
                    "deep type", "delete line", "swap lines", "empty", "not UTF-8"][i % 16]
            if kind == "truncated":
                out = text[: rng.randrange(len(text.rstrip()) - 1)]
            elif kind == "bytes":
                kind, out = mutate_bytes(rng, text.encode(), avoid_end=3)
                kind, expect = f"bytes {kind}", UNKNOWN
            elif kind == "huge input type":
                k = rng.choice([n for n in nodes if " input " in lines[n]])
                lines[k] = lines[k].rsplit(": ", 1)[0] + f": {huge}\n"
                out = "".join(lines)
            elif kind == "huge graph":
                out = f'graph "g" {{\n  %0 = input "x" : {huge}\n  %1 = exp %0 : {huge}\n  output "y" = %1\n}}\n'
            elif kind == "huge constant":
                out = f'graph "g" {{\n  %0 = constant 1.0 : {huge}\n  %1 = exp %0 : {huge}\n  output "y" = %1\n}}\n'
            elif kind == "result type":
                head, old = lines[j].rstrip("\n").rsplit(": ", 1)
                new = rng.choice([t for t in ("f32[3,5]", "f32[]", "i32[2,8,32]", "f32[-1]", "f32[2,8,33]") if t != old])
                lines[j], kind = f"{head}: {new}\n", f"result type {old} -> {new}"
                out = "".join(lines)
            elif kind == "undefined operand":
                j = rng.choice([n for n in nodes if "%" in lines[n].split(" = ", 1)[1]])
                lhs, rhs = lines[j].split(" = ", 1)
                lines[j] = lhs + " = " + re.sub(r"%\d+", "%99999", rhs, count=1)
                out = "".join(lines)
            elif kind == "duplicate definition":
                out = "".join(lines[: j + 1] + [lines[j]] + lines[j + 1 :])
            elif kind == "unknown op":
                out = "".join(lines[:j] + [lines[j].replace(" = ", " = frobnicate ", 1)] + lines[j + 1 :])
            elif kind == "unknown dtype":
                out = text.replace("f32[", rng.choice(["f99[", "q8[", "F32["]), 1)
            elif kind == "attribute":
                attrs = [n for n in nodes if "{" in lines[n]]
                k = rng.choice(attrs)
                new = rng.choice(["dims = [99]", "start = [0, 0], end = [99999, 32]", "dims = [-1]", "dims = [18446744073709551616]"])
                lines[k] = lines[k].split("{", 1)[0] + "{" + new + "}" + lines[k].split("}", 1)[1]
                out, kind = "".join(lines), f"attribute {{{new}}}"
            elif kind == "deep type":
                out = text.replace("f32[", "f32[" + "1," * 100000, 1)
            elif kind == "delete line":
                out, expect = "".join(lines[:j] + lines[j + 1 :]), UNKNOWN
            elif kind == "swap lines":
                k = rng.choice(nodes)
                lines[j], lines[k] = lines[k], lines[j]
                out, expect = "".join(lines), UNKNOWN
            elif kind == "empty":
                out = rng.choice(["", "\n", "graph", 'graph "g" {'])
            else:
                out = text.encode().replace(b'"', b"\xff\xfe", 1)
            (d / "g.ir").write_bytes(out if isinstance(out, bytes) else out.encode())
            self.run(cls, f"{src}: {kind} (line {j + 1})", [self.tbc, "verify", d / "g.ir"], expect, d)

    # -- 6. TSV (tbc data glue) --------------------------------------------------------------------

    def tsv_class(self):
        cls, rng = "6 TSV (tbc data glue)", self.rng
        good = (self.b / "cls.tsv").read_bytes()
        lines = good.split(b"\n")
        for i in range(44):
            d, o, expect = self.case_dir(), {}, REFUSE
            r = 1 + rng.randrange(len(lines) - 2)
            ls = list(lines)
            kind = ["missing column", "bad label", "empty", "header only", "binary junk", "invalid UTF-8 text",
                    "float label", "column flag", "labels flag", "output = input", "CRLF", "MNLI columns",
                    "long line", "NUL byte"][i % 14]
            if kind == "missing column":
                ls[r] = ls[r].split(b"\t")[0]
            elif kind == "bad label":
                label = rng.choice([b"3", b"x", b"", b"nan", b"-1", b"00"])
                ls[r] = ls[r].split(b"\t")[0] + b"\t" + label
                kind += f" {label.decode()!r}"
            elif kind == "empty":
                ls = [b""]
            elif kind == "header only":
                ls = [lines[0], b""]
            elif kind == "binary junk":
                ls = [rng.randbytes(rng.choice([10, 500, 5000]))]
            elif kind == "invalid UTF-8 text":
                ls[r] = b"\xff\xfe\xc3" + ls[r]
                expect = UNKNOWN
            elif kind == "float label":
                v = rng.choice([b"nan", b"inf", b"-inf", b"1e999", b"abc", b"NaN"])
                ls = [l.split(b"\t")[0] + b"\t" + (v if j == r else b"0.5") if j and l else l for j, l in enumerate(lines)]
                o = {"--labels": None, "--float-label": True}
                kind += f" {v.decode()}"
            elif kind == "column flag":
                o = dict([rng.choice([("--label-column", 99), ("--text-a-column", 99), ("--text-b-column", -99),
                                      ("--label-column", -99), ("--text-a-column", 2**64)])])
                kind += f" {o}"
            elif kind == "labels flag":
                o = {"--labels": rng.choice(["", "0,0,1", ",", "0,1"])}
                kind += f" {o}"
            elif kind == "output = input":
                shutil.copy(self.b / "cls.tsv", d / "in.tsv")
                o = {"--input": d / "in.tsv", rng.choice(["--output", "--schema-out"]): d / "in.tsv"}
            elif kind == "CRLF":
                ls, expect = [l + b"\r" if l else l for l in lines], VALID
            elif kind == "MNLI columns":
                o = {"--task": "MNLI", "--skip-header": None, "--text-a-column": None, "--label-column": None, "--labels": None}
            elif kind == "long line":
                ls[r] = b"good " * 200000 + b"\t1"
                expect = VALID
            else:
                ls[r] = ls[r].replace(b" ", b"\x00", 1)
                expect = UNKNOWN
            if "--input" not in o:
                (d / "in.tsv").write_bytes(b"\n".join(ls))
                o["--input"] = d / "in.tsv"
            before = (d / "in.tsv").read_bytes()
            check = lambda rc, out, err: (("silent acceptance", "the input was overwritten")
                                          if (d / "in.tsv").read_bytes() != before else (None, None))
            self.run(cls, kind, self.glue(d, o), expect, d, check)

    # -- 7. numeric flags ----------------------------------------------------------------------------

    def flags_class(self):
        cls = "7 numeric flags"
        count = lambda v: v == str(2**62)  # whole numbers >= 1 (2^64 does not fit u64)
        u64 = lambda v: v in ("0", str(2**62))  # seeds, patience
        f32pos = lambda v: v in (str(2**62), str(2**64))  # (0, 3.4e38]
        never = lambda v: False
        maybe = {}  # (flag, value) whose validity the campaign does not decide
        sites = [
            ("task-distill", "--learning-rate", never, self.td), ("task-distill", "--loss-scale-value", f32pos, self.td),
            ("task-distill", "--save-ckpt-step", count, self.td), ("task-distill", "--max-ckpt-num", count, self.td),
            ("task-distill", "--seed", u64, self.td), ("task-distill", "--overflow-patience", u64, self.td),
            ("task-distill", "--td-phase1-epoch-size", count, self.td),
            ("general-distill", "--data-sink-steps", count, lambda d, o: self.gd(d, {"--enable-data-sink": "true", **o})),
            ("finetune", "--epoch-size", count, self.ft),
            ("trainer step", "--lr", never, self.tstep), ("trainer step", "--loss-scale", f32pos, self.tstep),
            ("trainer step", "--step", lambda v: v == "0", self.tstep),
            ("trainer step", "--decay-steps", lambda v: v in ("inf", "1e308", str(2**62), str(2**64)), self.tstep),
            ("tbc step", "--lr", never, lambda d, o: self.tstep(d, o, tbc=True)),
            ("tbc step", "--warmup-steps", lambda v: v in ("0", "1e308", str(2**62), str(2**64)), lambda d, o: self.tstep(d, o, tbc=True)),
            ("tbc compile", "--batch", never, self.plan), ("tbc compile", "--seq-len", never, self.plan),
            ("tbc data glue", "--max-seq-length", never, self.glue),
            ("tbc data pretrain", "--max-seq-length", never, self.pretrain),
        ]
        maybe.update({("--lr", str(2**62)): 1, ("--lr", str(2**64)): 1, ("--warmup-steps", "1e308"): 1,
                      ("--data-sink-steps", str(2**62)): 1, ("--step", str(2**62)): 1})
        for prog, flag, valid, command in sites:
            for v in NUMBERS:
                if flag.endswith("epoch-size") and v == str(2**62):
                    continue  # valid and would train for ever
                d = self.case_dir()
                expect = UNKNOWN if (flag, v) in maybe else VALID if valid(v) else REFUSE
                self.run(cls, f"{prog} {flag}={v}", command(d, {flag: v}), expect, d)
        for v in ["3", "0", "-1", "nan", ""]:  # not numeric in kind, but numbers all the same
            d = self.case_dir()
            self.run(cls, f"task-distill --td-phase={v}", self.td(d, {"--td-phase": v}), REFUSE, d)

    # -- 8. file handling ----------------------------------------------------------------------------

    def files_class(self):
        cls, rng, b = "8 file handling", self.rng, self.b
        for i in range(63):
            d = self.case_dir()
            shutil.copytree(b / "tdir", d / "tdir")
            shutil.copytree(b / "cls", d / "data")
            shutil.copy(b / "eval_model.safetensors", d / "ckpt.safetensors")
            shutil.copy(b / "cls.tsv", d / "in.tsv")
            use_link = rng.random() < 0.3  # name the output through a symlink to the input
            alias = lambda p: (d / "alias").symlink_to(p) or d / "alias" if use_link else p
            kind, expect, check = i % 21, REFUSE, None
            if kind == 0:
                what, argv = "finetune --export-hf onto the teacher directory", self.ft(d, {"--load-teacher-ckpt-path": d / "tdir", "--export-hf": alias(d / "tdir")})
            elif kind == 1:
                what, argv = "finetune --export-hf onto the teacher's parent", self.ft(d, {"--load-teacher-ckpt-path": d / "tdir", "--export-hf": d, "--output-dir": d / "tdir/../o"})
            elif kind == 2:
                what, argv = "finetune --export-hf onto the data directory", self.ft(d, {"--train-data-dir": d / "data", "--export-hf": alias(d / "data")})
            elif kind == 3:
                what, argv = "finetune --export-hf onto its --output-dir", self.ft(d, {"--export-hf": d / "o", "--output-dir": d / "o"})
            elif kind == 4:
                what, argv = "task-distill --export-hf onto the student checkpoint", self.td(d, {"--td-phase": "both", "--load-gd-ckpt-path": d / "ckpt.safetensors", "--export-hf": alias(d / "ckpt.safetensors")})
            elif kind == 5:
                what, argv = "export-hf -o onto --ckpt", self.export(d, {"--ckpt": d / "ckpt.safetensors", "--output": alias(d / "ckpt.safetensors")})
            elif kind == 6:
                what, argv = "export-hf -o onto the --tokenizer directory", self.export(d, {"--tokenizer": d / "data", "--output": alias(d / "data")})
            elif kind == 7:
                (d / "sdir").mkdir()
                shutil.copy(b / "eval_model.safetensors", d / "sdir/ckpt.safetensors")
                what, argv = "export-hf -o onto the directory holding --ckpt", self.export(d, {"--ckpt": d / "sdir/ckpt.safetensors", "--output": alias(d / "sdir")})
            elif kind == 8:
                target = rng.choice(["tdir/model.safetensors", "data/train.tfrecord", "tdir/config.json"])
                what, argv = f"--metrics-file onto {target}", self.ft(d, {"--load-teacher-ckpt-path": d / "tdir", "--train-data-dir": d / "data",
                                                                          "--metrics-file": alias(d / target)})
            elif kind == 9:
                target = rng.choice(["ckpt.safetensors", "data/train.tfrecord"])
                what, argv = f"eval --dump-logits onto {target}", self.ev(d, {"--load-td1-ckpt-path": d / "ckpt.safetensors",
                                                                              "--eval-data-dir": d / "data", "--dump-logits": alias(d / target)})
            elif kind == 10:
                shutil.copy(b / "weights.safetensors", d / "w.safetensors")
                tbc = rng.random() < 0.5
                what, argv = f"{'tbc' if tbc else 'trainer'} step --out onto --weights", self.tstep(d, {"--weights": d / "w.safetensors", "--out": alias(d / "w.safetensors")}, tbc)
            elif kind == 11:
                o = rng.choice(["--output", "--schema-out"])
                what, argv = f"tbc data glue {o} onto --input", self.glue(d, {"--input": d / "in.tsv", o: alias(d / "in.tsv")})
            elif kind == 12:
                shutil.copy(VOCAB, d / "vocab.txt")
                what, argv = "tbc data glue --output onto --vocab", self.glue(d, {"--input": d / "in.tsv", "--vocab": d / "vocab.txt", "--output": alias(d / "vocab.txt")})
            elif kind == 13:
                shutil.copy(b / "corpus.txt", d / "c.txt")
                what, argv = "tbc data pretrain --output onto an --input", self.pretrain(d, {"--input": d / "c.txt", "--output": alias(d / "c.txt")})
            elif kind == 14:
                shutil.copy(TINY / "student.json", d / "s.json")
                what, argv = "tbc compile -o onto --student-config", self.plan(d, {"--student-config": d / "s.json", "--output": alias(d / "s.json")})
            elif kind == 15:
                what, argv = "--output-dir is the teacher file", self.ft(d, {"--load-teacher-ckpt-path": d / "tdir", "--output-dir": d / "tdir/model.safetensors"})
            elif kind in (16, 17, 18, 19):
                names = [["imdb_train.tfrecord", "train.mindrecord.db"], ["db.tfrecord"], ["train-db.record", "x.tfrecord.db"],
                         ["train.tfrecord.db"]][kind - 16]
                (d / "dbdata").mkdir()
                for n in names:
                    shutil.copy(b / "cls/train.tfrecord", d / "dbdata" / n)
                data_files = [n for n in names if "record" in n and not n.endswith(".db")]
                expect = VALID if data_files else REFUSE
                what = f"data directory holding {names}"
                argv = self.ft(d, {"--train-data-dir": d / "dbdata"})
                check = lambda rc, out, err, f=data_files: (
                    ("silent acceptance", f"read other files than {f}")
                    if rc == 0 and f"{len(f)} file(s): {', '.join(sorted(f))}" not in out + err else (None, None))
            else:
                (d / "m.jsonl").write_text((self.work / "run_td/o/metrics.jsonl").read_text())
                what, argv = "tbc plot --output onto --metrics", [self.tbc, "plot", "--metrics", d / "m.jsonl", "--output", alias(d / "m.jsonl")]
            inputs = {p: p.read_bytes() for p in d.rglob("*") if p.is_file() and not p.is_symlink()}
            link = (d / "alias").is_symlink()

            def damage(rc, out, err, inputs=inputs, check=check, link=link):
                lost = [str(p.relative_to(d)) for p, v in inputs.items() if not p.is_file() or p.read_bytes() != v]
                if lost:
                    return "silent acceptance", f"input(s) replaced or removed: {lost}"
                if rc == 0 and link and not (d / "alias").is_symlink():
                    return None, "wrote over the symlink itself; the input it named is intact"
                return check(rc, out, err) if check else (None, None)
            self.run(cls, what + (" (through a symlink)" if link else ""), argv, expect, d, damage)

    # -- 9. faults ------------------------------------------------------------------------------------

    def faults_class(self):
        cls, rng = "9 faults (SIGKILL/SIGINT)", self.rng
        ck = "tinybert_td_phase1_save_ckpt"
        reference = (self.work / f"run_long/o/{ck}/tiny_bert_360_1.safetensors").read_bytes()
        plans = ["SIGKILL"] * 14 + ["SIGINT"] * 5 + ["SIGTERM"] * 3 + ["SIGINT twice"] * 6 + ["SIGKILL twice"] * 2
        for i, how in enumerate(plans):
            d = self.case_dir()
            argv = self.long_td1(d, {"--max-ckpt-num": rng.choice([1, 2, 3])})
            killed_at, notes, left = [], [], []
            for _round in range(2 if how.endswith("twice") and how.startswith("SIGKILL") else 1):
                p = subprocess.Popen([str(a) for a in argv + (["--resume"] if _round else [])], cwd=d, env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limit_child)
                t0 = time.time()
                while not (d / "o" / ck).is_dir() and time.time() - t0 < self.timeout and p.poll() is None:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, 1.2))
                sig = signal.SIGKILL if how.startswith("SIGKILL") else signal.SIGTERM if how == "SIGTERM" else signal.SIGINT
                p.send_signal(sig)
                if how == "SIGINT twice":  # 2-20 ms later: sooner, the kernel merges the two
                    time.sleep(rng.uniform(0.002, 0.02))
                    p.send_signal(sig)
                try:
                    _, err = p.communicate(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    _, err = p.communicate()
                    self.record(cls, f"{how}: no exit after the signal", argv, VALID, d, None, "", "timeout")
                    break
                err = err.decode(errors="replace")
                killed_at.append(round(time.time() - t0, 2))
                if any(m in err for m in PANIC_MARKS) or (p.returncode < 0 and p.returncode != -sig):
                    self.record(cls, f"{how}: the interrupted run", argv, VALID, d, p.returncode, err, "panic/abort")
                    break
                if sig != signal.SIGKILL:  # a signal the trainer handles: nothing may stay behind
                    left += [f"{t} (after {how})" for t in self.temporaries([d])]
            else:
                rc, out, err = self.exec(argv + ["--resume"], d)
                outcome = classify(rc, err, VALID)
                final = d / "o" / ck / "tiny_bert_360_1.safetensors"
                if rc == 0 and (not final.is_file() or final.read_bytes() != reference):
                    notes.append("resumed weights differ from the uninterrupted run")
                self.record(cls, f"{how} at {killed_at} s, then --resume", argv + ["--resume"], VALID, d, rc, err,
                            outcome, "; ".join(notes) or None, left)


# ---------------------------------------------------------------------------------------- report


def report(results, json_path, seed, elapsed):
    classes = list(dict.fromkeys(r["class"] for r in results))
    print(f"tbc fault campaign, seed {seed}: {len(results)} cases in {elapsed:.0f} s\n")
    print("| class | inputs | clean errors | panics | silent acceptances | accepted valid | timeouts | leftover temporaries |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total, summary = [0] * 7, {}
    for cls in classes + ["all"]:
        rs = [r for r in results if cls in ("all", r["class"])]
        row = [len(rs)] + [sum(r["outcome"] == o for r in rs) for o in OUTCOMES] + [sum(bool(r["temporaries"]) for r in rs)]
        summary[cls] = dict(zip(["inputs"] + OUTCOMES + ["leftover temporaries"], row))
        name = "**all**" if cls == "all" else cls
        print(f"| {name} | " + " | ".join(map(str, row)) + " |")
    bad = lambda r: r["outcome"] in ("panic/abort", "silent acceptance", "timeout") or r["temporaries"]
    notes = [r for r in results if r.get("note") and not bad(r)]
    if notes:
        print(f"\n{len(notes)} other case(s) with a note (valid input refused, error without a message, resume differing):")
        for r in notes[:10]:
            print(f"- {r['class']}: {r['input']}: {r['note'].strip()} — `{r['message'][:160]}`")
    for cls in classes:
        rs = [r for r in results if r["class"] == cls and bad(r)]
        if rs:
            print(f"\n### {cls}: {len(rs)} finding(s), up to 5 shown")
        for r in rs[:5]:
            extra = f" temporaries {r['temporaries']}" if r["temporaries"] else ""
            print(f"- **{r['outcome']}** (exit {r['rc']}){extra}: {r['input']}" + (f" — {r['note']}" if r.get("note") else ""))
            print(f"  `{r['cmd'][:400]}`")
            for line in (r.get("stderr_tail") or [])[-2:]:
                print(f"  > {line[:300]}")
    if json_path:
        json_path.write_text(json.dumps({"seed": seed, "summary": summary, "cases": results}, indent=1))
    return 1 if any(bad(r) for r in results) else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tbc", type=Path, default=REPO / "target/release/tbc")
    ap.add_argument("--work", type=Path, help="empty or new directory for everything (default: a temporary one)")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--json", type=Path, help="write every case and the summary here")
    ap.add_argument("--timeout", type=float, default=20, help="seconds per command")
    ap.add_argument("--keep", action="store_true", help="keep the default temporary work directory")
    ap.add_argument("--classes", default="1,2,3,4,5,6,7,8,9", help="which classes to run, e.g. 3,9")
    a = ap.parse_args()
    if not a.tbc.is_file():
        sys.exit(f"error: {a.tbc} not found (make build, or pass --tbc)")
    work = (a.work or Path(tempfile.mkdtemp(prefix="tbc-campaign-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        sys.exit(f"error: --work {work} is not empty")
    start = time.time()
    c = Campaign(a.tbc.resolve(), work, a.seed, a.timeout)
    c.setup()
    steps = (c.safetensors_class, c.checkpoint_class, c.tfrecord_class, c.schema_config_class, c.ir_class,
             c.tsv_class, c.flags_class, c.files_class, c.faults_class)
    for k, step in enumerate(steps, 1):
        if str(k) not in a.classes.split(","):
            continue
        t0, c.rng = time.time(), random.Random(f"{a.seed}/{k}")  # each class's inputs depend on the seed only
        step()
        print(f"{step.__name__}: {len(c.results)} cases so far ({time.time() - t0:.0f} s)", file=sys.stderr)
    code = report(c.results, a.json, a.seed, time.time() - start)
    if a.work is None and not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"\nwork directory: {work}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
