#!/usr/bin/env python3
"""PyTorch CPU baseline for one tbc `td1` training step (TinyBERT task distillation, phase 1).

The step is the same math that `tbc graph --phase td1 --preset paper` builds (README "Presets",
../shared/TINYBERT_SPEC.md §2-§3), in float32 on the CPU:

  * teacher: BERT-base (configs/bert-base-teacher.json), frozen, no grad, no dropout;
  * student: configs/student-4l-312.json (4L/312/12 heads/1200) + fit_dense 312->768,
    dropout 0.1 on the embedding output, the attention probabilities, and both residual branches;
  * loss = sum_i MSE(zero_le_-100(A_S^i), zero_le_-100(A_T^{3i+2}))            (teacher layers 3,6,9,12)
         + sum_i MSE(fit_dense(H_S^i), H_T^{3i})                               (i = 0..4, 0 = embeddings)
  * backward, [PAD] row of the student word embeddings gets no gradient (padding_idx=0),
    parameters the loss does not use (pooler, classifier) are skipped,
    per-tensor clip g*min(1, 1/(|g|+1e-6)), BertAdam without bias correction
    (b1 0.9, b2 0.999, eps 1e-6, wd 0.01 except LayerNorm and biases), constant lr 5e-5,
    and, as in tbc's graph, the update is skipped if any gradient is non-finite.

Helpers (GELU, LayerNorm, MSE, the <= -100 cut, the decay filter, the parameter list, the Adam
constants, the preset table) come from tests/reference/make_fixtures.py, the f64 oracle that tbc's
parity tests are built from.

Modes (each one runs in a fresh subprocess, so the peak RSS is per mode):
  eager         plain PyTorch; native fused ops (F.layer_norm, F.gelu, softmax, F.dropout, F.linear)
  compile       torch.compile of forward+loss (teacher and student; AOTAutograd traces and compiles
                the matching backward), plus torch.compile of the optimizer update
  compile-step  torch.compile of the whole step in one graph (torch.func.grad_and_value + update)

Usage (see bench/README.md):
  python bench/pytorch_step.py --threads 2 --warmup 1 --reps 3            # real shape, eager + compile
  python bench/pytorch_step.py --shape tiny --check                       # smoke test + self-checks
Prints one JSON line per mode on stdout; everything else goes to stderr.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, ".."))

SHAPES = {
    # teacher config, student config, batch, seq
    "real": (os.path.join(REPO, "configs", "bert-base-teacher.json"),
             os.path.join(REPO, "configs", "student-4l-312.json"), 32, 64),
    "tiny": (os.path.join(REPO, "tests", "fixtures", "tiny", "teacher.json"),
             os.path.join(REPO, "tests", "fixtures", "tiny", "student.json"), 4, 16),
}
MODES = ("eager", "compile", "compile-step")
LR = 5e-5  # td1 `paper`: constant 5e-5
STUDENT_DROPOUT = 0.1  # hidden and attention-probs dropout of the student (the teacher runs without)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="real")
    ap.add_argument("--modes", default="eager,compile",
                    help="comma-separated subset of %s (default eager,compile)" % ",".join(MODES))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads and OMP/MKL_NUM_THREADS (default: os.cpu_count())")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed steps before the timed ones; the first step (which compiles) is one "
                         "of them and is reported as first_step_s; at least 1")
    ap.add_argument("--reps", type=int, default=3, help="timed steps")
    ap.add_argument("--batch", type=int, default=None, help="override the shape's batch size")
    ap.add_argument("--seq-len", type=int, default=None, help="override the shape's sequence length")
    ap.add_argument("--ops", choices=("native", "reference"), default="native",
                    help="native: F.layer_norm/F.gelu (fast eager); reference: make_fixtures.py's "
                         "hand-written LayerNorm and erf GELU (the TinyBERT repo's own code)")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile(mode=...), e.g. max-autotune (default: torch's default)")
    ap.add_argument("--autocast", choices=("none", "bf16"), default="none",
                    help="bf16: forward and loss under torch.autocast('cpu', dtype=torch.bfloat16) "
                         "(GEMMs in bf16, fp32 master weights and optimizer), as tbc's --precision bf16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm-cache", action="store_true",
                    help="let torch.compile reuse inductor's on-disk caches (default: a fresh, empty cache "
                         "directory per mode, so compile_s is a cold compile)")
    ap.add_argument("--check", action="store_true",
                    help="run the tiny-shape self-checks (fixture parity, eager == compile) before timing")
    ap.add_argument("--no-bench", action="store_true", help="with --check: only the checks")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: mode run in this process
    return ap.parse_args(argv)


# ================================================================================================
# Driver: one fresh subprocess per mode
# ================================================================================================
def child_env(threads, cache_dir=None):
    env = dict(os.environ)
    if cache_dir is not None:
        env["TORCHINDUCTOR_CACHE_DIR"] = cache_dir  # FX graph, AOTAutograd and C++ kernel caches
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env["OPENBLAS_NUM_THREADS"] = str(threads)
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", str(threads))
    return env


def run_child(args, what):
    argv = [sys.executable, os.path.abspath(__file__), "--child", what, "--shape", args.shape,
            "--threads", str(args.threads), "--warmup", str(args.warmup), "--reps", str(args.reps),
            "--ops", args.ops, "--seed", str(args.seed), "--modes", args.modes,
            "--autocast", args.autocast]
    if args.batch is not None:
        argv += ["--batch", str(args.batch)]
    if args.seq_len is not None:
        argv += ["--seq-len", str(args.seq_len)]
    if args.compile_mode:
        argv += ["--compile-mode", args.compile_mode]
    print(f"[bench] {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="tbc-bench-inductor-") as tmp:
        env = child_env(args.threads, None if args.warm_cache else tmp)
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        rec = {"mode": what, "error": f"exit status {p.returncode}", "stdout_tail": p.stdout[-2000:]}
        print(json.dumps(rec), flush=True)
        return False
    print(lines[-1], flush=True)
    return p.returncode == 0


def driver(args):
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        if mode not in MODES:
            sys.exit(f"unknown mode {mode!r}; choose from {MODES}")
    args.modes = ",".join(modes)
    ok = True
    if args.check:
        ok &= run_child(args, "check")
    if not args.no_bench:
        for mode in modes:
            ok &= run_child(args, mode)
    return 0 if ok else 1


# ================================================================================================
# Child: everything below runs with torch imported after the thread settings
# ================================================================================================
def setup_torch(threads):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, os.path.join(REPO, "tests", "reference"))
    import make_fixtures as ref  # sets the default dtype to float64 on import; undo that below
    torch.set_default_dtype(torch.float32)
    return torch, ref


def build(torch, ref, args, tcfg_path, scfg_path, batch_size, seq):
    """Random BERT-init weights (N(0, 0.02), LayerNorm 1/0, biases 0) and a padded random batch."""
    tcfg, scfg = ref.load_config(tcfg_path), ref.load_config(scfg_path)
    gen = torch.Generator().manual_seed(args.seed)

    def init(shapes):
        P = {}
        for name, shape, kind in shapes:
            if kind in ("emb", "w", "w_qk", "w_head"):
                P[name] = torch.randn(shape, generator=gen) * 0.02
            elif kind == "ln_g":
                P[name] = torch.ones(shape)
            else:  # "b", "ln_b"
                P[name] = torch.zeros(shape)
        return P

    T = init(ref.param_shapes(tcfg))
    S = init(ref.param_shapes(scfg, with_fit_dense_to=tcfg["hidden_size"]))
    B, L = batch_size, seq
    lengths = torch.randint(L // 2, L + 1, (B,), generator=gen)
    lengths[0] = L  # at least one full row
    pos = torch.arange(L).unsqueeze(0)
    mask = (pos < lengths.unsqueeze(1)).to(torch.int64)
    ids = torch.randint(1, scfg["vocab_size"], (B, L), generator=gen) * mask  # [PAD] = 0
    seg = ((pos >= (lengths // 2).unsqueeze(1)) & (mask == 1)).to(torch.int64)
    batch = {"input_ids": ids, "input_mask": mask, "segment_ids": seg}
    return tcfg, scfg, T, S, batch


class Model:
    """The td1 forward + loss, written against make_fixtures.py's f64 oracle (bert_forward,
    distill_losses) but dtype-neutral and with the student's dropout."""

    def __init__(self, torch, ref, tcfg, scfg, ops, dropout=STUDENT_DROPOUT):
        import torch.nn.functional as F
        self.torch, self.ref, self.F = torch, ref, F
        self.tcfg, self.scfg, self.ops, self.p_drop = tcfg, scfg, ops, dropout
        preset = ref.PRESETS["paper"]
        self.gelu_form, self.eps = preset["gelu"], preset["ln_eps"]
        assert self.gelu_form == "erf"

    def ln(self, x, P, prefix):
        g, b = P[prefix + ".weight"], P[prefix + ".bias"]
        if self.ops == "reference":
            return self.ref.layer_norm(x, g, b, self.eps)
        return self.F.layer_norm(x, (x.shape[-1],), g, b, self.eps)

    def gelu(self, x):
        if self.ops == "reference":
            return self.ref.gelu(x, self.gelu_form)
        return self.F.gelu(x)  # approximate="none": the erf form

    def lin(self, x, P, prefix):
        if self.ops == "reference":
            return self.ref.linear(x, P[prefix + ".weight"], P[prefix + ".bias"])
        return self.F.linear(x, P[prefix + ".weight"], P[prefix + ".bias"])

    def drop(self, x, p):
        return self.F.dropout(x, p, training=True) if p > 0.0 else x

    def encoder(self, P, cfg, batch, p_drop):
        """(reps, atts) as in ref.bert_forward: reps[0] = embeddings, atts = masked scaled scores."""
        torch, F = self.torch, self.F
        H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        dh = H // nh
        ids, seg = batch["input_ids"], batch["segment_ids"]
        B, S = ids.shape
        # padding_idx=0: the [PAD] row gets no gradient (paper preset); a no-op for the teacher
        words = F.embedding(ids, P["bert.embeddings.word_embeddings.weight"], padding_idx=0)
        emb = (words + P["bert.embeddings.position_embeddings.weight"][:S].unsqueeze(0)
               + F.embedding(seg, P["bert.embeddings.token_type_embeddings.weight"]))
        x = self.drop(self.ln(emb, P, "bert.embeddings.LayerNorm"), p_drop)
        ext = ((1.0 - batch["input_mask"].to(x.dtype)) * -10000.0).view(B, 1, 1, S)
        scale = 1.0 / (dh ** 0.5)
        reps, atts = [x], []
        for i in range(cfg["num_hidden_layers"]):
            p = f"bert.encoder.layer.{i}."

            def heads(t):
                return t.view(B, S, nh, dh).permute(0, 2, 1, 3)

            q = heads(self.lin(x, P, p + "attention.self.query"))
            k = heads(self.lin(x, P, p + "attention.self.key"))
            v = heads(self.lin(x, P, p + "attention.self.value"))
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale + ext
            atts.append(scores)
            probs = self.drop(torch.softmax(scores, dim=-1), p_drop)
            ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(B, S, H)
            a = self.drop(self.lin(ctx, P, p + "attention.output.dense"), p_drop)
            a = self.ln(a + x, P, p + "attention.output.LayerNorm")
            inter = self.gelu(self.lin(a, P, p + "intermediate.dense"))
            o = self.drop(self.lin(inter, P, p + "output.dense"), p_drop)
            x = self.ln(o + a, P, p + "output.LayerNorm")
            reps.append(x)
        return reps, atts

    def loss(self, SP, TP, batch):
        """td1 loss (ref.distill_losses, phase gd/td1). Returns (loss, att, rep)."""
        torch, ref = self.torch, self.ref
        with torch.no_grad():
            t_reps, t_atts = self.encoder(TP, self.tcfg, batch, 0.0)
        s_reps, s_atts = self.encoder(SP, self.scfg, batch, self.p_drop)
        Ls, Lt = self.scfg["num_hidden_layers"], self.tcfg["num_hidden_layers"]
        k = Lt // Ls
        att = sum(ref.mse(ref.zero_masked(s_atts[i]), ref.zero_masked(t_atts[(i + 1) * k - 1]))
                  for i in range(Ls))
        rep = sum(ref.mse(self.F.linear(s_reps[i], SP["fit_dense.weight"], SP["fit_dense.bias"]),
                          t_reps[i * k])
                  for i in range(Ls + 1))
        return att + rep, att, rep


def used_names(student_names):
    """td1 trains every student parameter, but the loss never reaches the pooler and the classifier:
    BertAdam skips them (grad is None), so they are left out here (checked in --check)."""
    return [n for n in student_names if not n.startswith(("bert.pooler.", "classifier."))]


def make_updates(torch, ref, names, lr):
    b1, b2, eps, wd = ref.BETA1, ref.BETA2, ref.ADAM_EPS, ref.PRESETS["paper"]["wd"]
    decayed = [ref.is_decayed(n) for n in names]

    def update_eager(params, ms, vs, grads):
        """BertAdam.step (per-tensor clip, no bias correction), in place; skipped on overflow."""
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        if not bool(finite):
            return
        for p, m, v, g, dec in zip(params, ms, vs, grads, decayed):
            g = g * torch.clamp(1.0 / (torch.linalg.vector_norm(g) + 1e-6), max=1.0)
            m.mul_(b1).add_(g, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
            u = m / (v.sqrt() + eps)
            if dec:
                u.add_(p, alpha=wd)
            p.add_(u, alpha=-lr)

    def update_functional(params, ms, vs, grads):
        """The same update without data-dependent control flow (tbc's select on the overflow flag)."""
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        out = []
        for p, m, v, g, dec in zip(params, ms, vs, grads, decayed):
            g = g * torch.clamp(1.0 / (torch.linalg.vector_norm(g) + 1e-6), max=1.0)
            m1 = b1 * m + (1.0 - b1) * g
            v1 = b2 * v + (1.0 - b2) * g * g
            u = m1 / (torch.sqrt(v1) + eps)
            if dec:
                u = u + wd * p
            p1 = p - lr * u
            out.append((torch.where(finite, p1, p), torch.where(finite, m1, m), torch.where(finite, v1, v)))
        return out

    def update_inplace(params, ms, vs, grads):
        for (p1, m1, v1), p, m, v in zip(update_functional(params, ms, vs, grads), params, ms, vs):
            p.copy_(p1)
            m.copy_(m1)
            v.copy_(v1)

    return update_eager, update_functional, update_inplace


class Trainer:
    """State (student params, Adam moments) and one td1 step for a mode."""

    def __init__(self, torch, ref, model, T, S, mode, lr=LR, compile_mode=None, autocast="none"):
        self.torch, self.model, self.T, self.mode = torch, model, T, mode
        self.autocast = autocast == "bf16"
        self.S = S
        self.names = used_names(list(S))
        for n in self.names:
            S[n].requires_grad_(True)
        self.M = {n: torch.zeros_like(S[n]) for n in self.names}
        self.V = {n: torch.zeros_like(S[n]) for n in self.names}
        upd_eager, upd_fun, upd_inplace = make_updates(torch, ref, self.names, lr)
        ckw = {} if compile_mode is None else {"mode": compile_mode}
        if mode == "eager":
            self.loss_fn, self.update = model.loss, upd_eager
        elif mode == "compile":
            # forward+loss compiled (AOTAutograd compiles the backward at the first .grad call);
            # the optimizer update compiled separately (the PyTorch 2 recipe for training loops)
            self.loss_fn = torch.compile(model.loss, **ckw)
            self.update = torch.compile(upd_inplace, **ckw)
        elif mode == "compile-step":
            names = self.names

            def full_step(SP, TP, M, V, batch):
                Pu = {n: SP[n] for n in names}
                rest = {n: t for n, t in SP.items() if n not in Pu}

                def f(Pu):
                    loss, att, rep = model.loss({**rest, **Pu}, TP, batch)
                    return loss, (att, rep)

                grads, (loss, (att, rep)) = torch.func.grad_and_value(f, has_aux=True)(Pu)
                outs = upd_fun([Pu[n] for n in names], [M[n] for n in names], [V[n] for n in names],
                               [grads[n] for n in names])
                for n, (p1, m1, v1) in zip(names, outs):
                    SP[n].copy_(p1)
                    M[n].copy_(m1)
                    V[n].copy_(v1)
                return loss, att, rep

            self.full_step = torch.compile(full_step, **ckw)
        else:
            raise ValueError(mode)

    def step(self, batch):
        torch = self.torch
        if self.mode == "compile-step":
            with torch.no_grad():  # parameters are mutated in place; func.grad enables grad inside
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                    return self.full_step(self.S, self.T, self.M, self.V, batch)
        # autocast's recipe: the forward and loss under autocast, the backward and update outside
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            loss, att, rep = self.loss_fn(self.S, self.T, batch)
        grads = torch.autograd.grad(loss, [self.S[n] for n in self.names])
        with torch.no_grad():
            self.update([self.S[n] for n in self.names], [self.M[n] for n in self.names],
                        [self.V[n] for n in self.names], list(grads))
        return loss.detach(), att.detach(), rep.detach()


def flop_estimate(tcfg, scfg, B, S):
    """Matmul FLOPs of one td1 step: teacher forward, student forward + backward (2x forward),
    fit_dense forward + backward on the 5 student hidden states. Elementwise work is not counted."""
    def layer_fwd(cfg):
        H, I = cfg["hidden_size"], cfg["intermediate_size"]
        N = B * S
        return 2 * N * (4 * H * H + 2 * H * I) + 2 * 2 * B * S * S * H  # QKV+out, FFN, QK^T and PV

    teacher = tcfg["num_hidden_layers"] * layer_fwd(tcfg)
    student = 3 * scfg["num_hidden_layers"] * layer_fwd(scfg)
    fit = 3 * (scfg["num_hidden_layers"] + 1) * 2 * B * S * scfg["hidden_size"] * tcfg["hidden_size"]
    return teacher + student + fit


def maxrss_mib(who):
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: KiB


def dynamo_counters(torch):
    try:
        from torch._dynamo.utils import counters
        return {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
                "graph_breaks": int(sum(counters["graph_break"].values())),
                "frames_compiled": int(counters["frames"].get("ok", 0))}
    except Exception as e:  # counters are internal API
        return {"error": repr(e)}


def child_bench(args):
    torch, ref = setup_torch(args.threads)
    tpath, spath, B, L = SHAPES[args.shape]
    B = args.batch or B
    L = args.seq_len or L
    t0 = time.perf_counter()
    tcfg, scfg, T, S, batch = build(torch, ref, args, tpath, spath, B, L)
    torch.manual_seed(args.seed)  # dropout stream
    model = Model(torch, ref, tcfg, scfg, args.ops)
    tr = Trainer(torch, ref, model, T, S, args.mode, compile_mode=args.compile_mode,
                 autocast=args.autocast)
    setup_s = time.perf_counter() - t0
    rss_setup = maxrss_mib(resource.RUSAGE_SELF)
    load0 = os.getloadavg()[0]

    warmup = max(args.warmup, 1)
    losses = []
    t = time.perf_counter()
    out = tr.step(batch)
    first_step_s = time.perf_counter() - t
    losses.append(float(out[0]))
    counters_after_first = dynamo_counters(torch) if args.mode != "eager" else None
    print(f"[{args.mode}] first step {first_step_s:.2f} s, loss {losses[-1]:.6f}", file=sys.stderr, flush=True)
    for _ in range(warmup - 1):
        t = time.perf_counter()
        out = tr.step(batch)
        print(f"[{args.mode}] warmup step {time.perf_counter() - t:.2f} s", file=sys.stderr, flush=True)
        losses.append(float(out[0]))
    times = []
    for _ in range(args.reps):
        t = time.perf_counter()
        out = tr.step(batch)
        times.append(time.perf_counter() - t)
        losses.append(float(out[0]))
        print(f"[{args.mode}] step {times[-1]:.2f} s, loss {losses[-1]:.6f}", file=sys.stderr, flush=True)

    med = statistics.median(times) if times else None
    gflop = flop_estimate(tcfg, scfg, B, L) / 1e9
    rec = {
        "mode": args.mode,
        "shape": args.shape,
        "batch": B,
        "seq_len": L,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "ops": args.ops,
        "autocast": args.autocast,
        "warmup": warmup,
        "reps": args.reps,
        "median_s": med,
        "min_s": min(times) if times else None,
        "max_s": max(times) if times else None,
        "first_step_s": first_step_s,
        "times_s": [round(x, 4) for x in times],
        # the first step = tracing + compilation + one execution; minus a steady-state step
        "compile_s": (first_step_s - med) if (args.mode != "eager" and med is not None) else None,
        "inductor_cache": None if args.mode == "eager" else
        ("fresh" if "tbc-bench-inductor-" in os.environ.get("TORCHINDUCTOR_CACHE_DIR", "") else "default"),
        "setup_s": setup_s,
        "peak_rss_mib": maxrss_mib(resource.RUSAGE_SELF),
        "rss_after_setup_mib": rss_setup,
        "peak_rss_children_mib": maxrss_mib(resource.RUSAGE_CHILDREN),
        "gflop_per_step": gflop,
        "gflops": (gflop / med) if med else None,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loadavg_1m_start": load0,
        "loadavg_1m_end": os.getloadavg()[0],
    }
    if args.mode != "eager":
        c = dynamo_counters(torch)
        rec["compile_scope"] = ("forward+loss (teacher+student; AOTAutograd backward) + optimizer update"
                                if args.mode == "compile" else "whole step (func.grad_and_value + update)")
        rec["dynamo"] = c
        rec["recompiled_after_first_step"] = (c != counters_after_first)
    print(json.dumps(rec), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------
# Self-checks (tiny shape)
# ------------------------------------------------------------------------------------------------
def rel_err(a, b):
    """Norm-wise relative error, as in tbc's parity tests."""
    d = (a.double() - b.double()).norm().item()
    n = b.double().norm().item()
    return d / n if n > 0 else d


def child_check(args):
    torch, ref = setup_torch(args.threads)
    import torch._inductor.config as inductor_config
    from safetensors.torch import load_file
    fx = os.path.join(REPO, "tests", "fixtures", "tiny")
    tpath, spath = SHAPES["tiny"][:2]
    tcfg, scfg = ref.load_config(tpath), ref.load_config(spath)
    results = {"mode": "check", "torch": torch.__version__, "threads": torch.get_num_threads()}
    ok = True

    # (1) Fixture parity: the f32 step of eager and each requested compiled mode against the f64 oracle's `paper` td1 step
    #     (the fixtures have no dropout and use lr 1e-3), tolerance 1e-5 norm-wise per tensor
    #     (the tolerance tbc's f32 parity test uses).
    W = load_file(os.path.join(fx, "weights.safetensors"))
    fb = load_file(os.path.join(fx, "batch.safetensors"))
    batch = {k: fb[k].long() for k in ("input_ids", "input_mask", "segment_ids")}
    exp = load_file(os.path.join(fx, "expected_paper_td1.safetensors"))
    lr_fx = float(ref.LR)
    # the oracle's invariant: exactly pooler and classifier get no gradient in td1
    S0 = {n[len("student."):]: t.clone() for n, t in W.items() if n.startswith("student.")}
    T0 = {n[len("teacher."):]: t.clone() for n, t in W.items() if n.startswith("teacher.")}
    probe = Model(torch, ref, tcfg, scfg, args.ops, dropout=0.0)
    Sg = {n: t.clone().requires_grad_(True) for n, t in S0.items()}
    gl = torch.autograd.grad(probe.loss(Sg, T0, batch)[0], list(Sg.values()), allow_unused=True)
    unused = sorted(n for n, g in zip(Sg, gl) if g is None)
    assert unused == sorted(set(S0) - set(used_names(list(S0)))), unused
    modes = ["eager"] + [m for m in args.modes.split(",") if m.strip() in MODES[1:]]
    worst = {}
    for mode in modes:
        torch._dynamo.reset()
        S = {n: t.clone() for n, t in S0.items()}
        T = {n: t.clone() for n, t in T0.items()}
        model = Model(torch, ref, tcfg, scfg, args.ops, dropout=0.0)
        tr = Trainer(torch, ref, model, T, S, mode, lr=lr_fx)
        loss, att, rep = tr.step(batch)
        errs = {"loss": rel_err(loss, exp["loss"]), "loss.att": rel_err(att, exp["loss.att"]),
                "loss.rep": rel_err(rep, exp["loss.rep"])}
        for n in S0:
            errs["param." + n] = rel_err(S[n].detach(), exp["param." + n])
            if n in tr.M:
                errs["adam_m." + n] = rel_err(tr.M[n], exp["adam_m." + n])
                errs["adam_v." + n] = rel_err(tr.V[n], exp["adam_v." + n])
            else:  # skipped: moments stay 0 and the parameter does not move
                assert torch.all(exp["adam_m." + n] == 0) and torch.equal(S[n].detach(), S0[n]), n
        k = max(errs, key=errs.get)
        worst[mode] = {"max_rel_err": errs[k], "at": k, "loss": float(loss)}
        ok &= errs[k] <= 1e-5
        print(f"[check] fixture parity {mode}: loss {float(loss):.9f} (f64 {exp['loss'].item():.9f}), "
              f"worst rel err {errs[k]:.2e} at {k}", file=sys.stderr, flush=True)
    results["fixture_parity"] = worst

    # (2) eager == compile with dropout 0.1: the same seed and inductor's fallback_random (the
    #     compiled graph draws its masks with the eager RNG), two steps each (the second loss
    #     depends on the first update), |loss_compiled - loss_eager| <= 1e-5 (relative).
    inductor_config.fallback_random = True
    runs = {}
    for mode in modes:
        torch._dynamo.reset()
        S = {n: t.clone() for n, t in S0.items()}
        T = {n: t.clone() for n, t in T0.items()}
        model = Model(torch, ref, tcfg, scfg, args.ops)  # dropout 0.1
        tr = Trainer(torch, ref, model, T, S, mode)
        torch.manual_seed(1234)
        runs[mode] = [float(tr.step(batch)[0]) for _ in range(2)]
        print(f"[check] dropout 0.1 {mode}: losses {runs[mode]}", file=sys.stderr, flush=True)
    eq = {}
    for mode in modes[1:]:
        d = max(abs(a - b) / abs(b) for a, b in zip(runs[mode], runs["eager"]))
        eq[mode] = d
        ok &= d <= 1e-5
    results["dropout_losses"] = runs
    results["eager_vs_compiled_max_rel_diff"] = eq
    results["ok"] = bool(ok)
    print(json.dumps(results), flush=True)
    return 0 if ok else 1


def main():
    args = parse_args()
    if args.threads is None:
        args.threads = os.cpu_count() or 1
    if args.child is None:
        return driver(args)
    args.mode = args.child
    if args.child == "check":
        return child_check(args)
    return child_bench(args)


if __name__ == "__main__":
    sys.exit(main())
