#!/usr/bin/env python3
"""Independent PyTorch (float64) oracle for tbc's TinyBERT distillation math.

Generates the fixtures in tests/fixtures/tiny (or --out DIR):

  weights.safetensors                       f32 teacher.* and student.* parameters
  batch.safetensors                         int32 input_ids / input_mask / segment_ids / label_ids
  expected_{preset}_{phase}.safetensors     f64 loss, loss parts, grads and one optimizer step
  expected_{preset}_ft.safetensors          the same for teacher fine-tuning (hard-label CE), plus
                                            lr and the next state counters
  expected_{preset}_eval.safetensors        f64 student logits
  expected_{preset}_eval_teacher.safetensors f64 teacher logits
  regression.safetensors                    one-output classifiers (teacher.*, student.*) and f32
                                            float targets label_ids, for a regression head (STS-B)
  expected_{preset}_{td2,ft}_regression.safetensors  td2 and ft with that head: MSE to the targets
  expected_schedule.safetensors             f64 learning-rate schedules
  expected_loss_scale.safetensors           DynamicLossScaleUpdateCell simulation

preset in {mindspore, paper}, phase in {gd, td1, td2}.  See tests/reference/README.md.

The script is deterministic: running it twice on one machine produces byte-identical files
(another CPU may differ in float64 round-off, ~1e-15 relative).
"""

import argparse
import hashlib
import json
import math
import os
import struct
import sys

import numpy as np
import torch
from safetensors.torch import load_file

torch.set_default_dtype(torch.float64)
F64 = torch.float64

SEED = 20240531
LR = 1e-3
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-6

PRESETS = {
    # name: GELU form, LayerNorm eps, weight decay (the optimizer flavour is chosen by name in run_phase)
    "mindspore": dict(gelu="tanh", ln_eps=1e-7, wd=1e-4),
    "paper": dict(gelu="erf", ln_eps=1e-12, wd=1e-2),
}
PHASES = ("gd", "td1", "td2")


# --------------------------------------------------------------------------------------------
# Deterministic safetensors writer.
#
# The file format: u64 little-endian header length N, N bytes of JSON header, then the raw
# little-endian tensor bytes.  We write it ourselves so that the byte layout (key order,
# metadata order, padding) does not depend on hash-map iteration order inside the safetensors
# library.  Keys are sorted; tensors are laid out in sorted-key order; the header is padded with
# spaces to a multiple of 8 bytes (as the reference implementation does).  The result is read
# back with safetensors.torch.load_file as a check.
# --------------------------------------------------------------------------------------------
_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.int32: "I32",
    torch.int64: "I64",
}


def save_safetensors(path, tensors, metadata=None):
    names = sorted(tensors)
    header = {}
    if metadata is not None:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    blobs = []
    offset = 0
    for name in names:
        t = tensors[name].detach().cpu().contiguous()
        arr = t.numpy()
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        data = arr.tobytes(order="C")
        header[name] = {
            "dtype": _ST_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    hjson = json.dumps(header, separators=(",", ":"), sort_keys=False).encode("utf-8")
    pad = (-len(hjson)) % 8
    hjson += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for b in blobs:
            f.write(b)
    # read-back check
    back = load_file(path)
    assert sorted(back) == names
    for name in names:
        assert back[name].dtype == tensors[name].dtype, name
        assert torch.equal(back[name], tensors[name].detach().cpu()), name


# --------------------------------------------------------------------------------------------
# Configs and weights
# --------------------------------------------------------------------------------------------
def load_config(path):
    with open(path) as f:
        return json.load(f)


def param_shapes(cfg, with_fit_dense_to=None):
    """Ordered list of (HF name, shape, kind) for BertForSequenceClassification (+ fit_dense).

    kind in {"emb", "w", "w_qk", "w_head", "b", "ln_g", "ln_b"} selects the init distribution."""
    H = cfg["hidden_size"]
    I = cfg["intermediate_size"]
    V = cfg["vocab_size"]
    P = cfg["max_position_embeddings"]
    T = cfg["type_vocab_size"]
    C = cfg["num_labels"]
    out = [
        ("bert.embeddings.word_embeddings.weight", (V, H), "emb"),
        ("bert.embeddings.position_embeddings.weight", (P, H), "emb"),
        ("bert.embeddings.token_type_embeddings.weight", (T, H), "emb"),
        ("bert.embeddings.LayerNorm.weight", (H,), "ln_g"),
        ("bert.embeddings.LayerNorm.bias", (H,), "ln_b"),
    ]
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        for n in ("query", "key", "value"):
            out.append((p + f"attention.self.{n}.weight", (H, H), "w" if n == "value" else "w_qk"))
            out.append((p + f"attention.self.{n}.bias", (H,), "b"))
        out += [
            (p + "attention.output.dense.weight", (H, H), "w"),
            (p + "attention.output.dense.bias", (H,), "b"),
            (p + "attention.output.LayerNorm.weight", (H,), "ln_g"),
            (p + "attention.output.LayerNorm.bias", (H,), "ln_b"),
            (p + "intermediate.dense.weight", (I, H), "w"),
            (p + "intermediate.dense.bias", (I,), "b"),
            (p + "output.dense.weight", (H, I), "w"),
            (p + "output.dense.bias", (H,), "b"),
            (p + "output.LayerNorm.weight", (H,), "ln_g"),
            (p + "output.LayerNorm.bias", (H,), "ln_b"),
        ]
    out += [
        ("bert.pooler.dense.weight", (H, H), "w_head"),
        ("bert.pooler.dense.bias", (H,), "b"),
        ("classifier.weight", (C, H), "w_head"),
        ("classifier.bias", (C,), "b"),
    ]
    if with_fit_dense_to is not None:
        out += [
            ("fit_dense.weight", (with_fit_dense_to, H), "w"),
            ("fit_dense.bias", (with_fit_dense_to,), "b"),
        ]
    return out


# Init scales.  Most matrices are small (N(0, 0.02)), but a few are large on purpose so that the
# fixtures exercise the interesting regimes: query/key weights give pre-softmax attention scores
# with std about 2 in both models (std ~ H * qk_std^2, so the teacher with H 64 gets a smaller
# qk_std than the student with H 32), which makes loss.att of the same order as loss.rep and the
# softmax far from uniform; pooler and classifier weights give O(1) logits that differ between
# teacher and student, so td2 has real gradients into the encoder; and together they put the
# gradient norm of several tensors above the per-tensor clip threshold 1 in every phase.
QK_STD = {"teacher": 0.17, "student": 0.24}
HEAD_STD = 0.6


def init_params(rng, shapes, qk_std):
    params = {}
    for name, shape, kind in shapes:
        if kind == "emb":
            x = rng.normal(0.0, 0.2, size=shape)
        elif kind == "w":
            x = rng.normal(0.0, 0.02, size=shape)
        elif kind == "w_qk":
            x = rng.normal(0.0, qk_std, size=shape)
        elif kind == "w_head":
            x = rng.normal(0.0, HEAD_STD, size=shape)
        elif kind == "b":
            x = rng.normal(0.0, 0.02, size=shape)
        elif kind == "ln_g":
            x = 1.0 + rng.normal(0.0, 0.1, size=shape)
        elif kind == "ln_b":
            x = rng.normal(0.0, 0.1, size=shape)
        else:
            raise ValueError(kind)
        params[name] = torch.from_numpy(np.ascontiguousarray(x.astype(np.float32)))
    return params


def make_batch(rng, cfg):
    B, S = 4, 16
    lengths = [16, 11, 7, 13]
    # first segment length (segment 0) per row; the rest of the real tokens are segment 1
    first = [9, 6, 4, 8]
    V = cfg["vocab_size"]
    input_ids = np.zeros((B, S), dtype=np.int32)
    input_mask = np.zeros((B, S), dtype=np.int32)
    segment_ids = np.zeros((B, S), dtype=np.int32)
    for b in range(B):
        L = lengths[b]
        input_ids[b, :L] = rng.integers(1, V, size=L)  # 1..99 inclusive
        input_mask[b, :L] = 1
        segment_ids[b, first[b]:L] = 1
    label_ids = rng.integers(0, cfg["num_labels"], size=B).astype(np.int32)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "input_mask": torch.from_numpy(input_mask),
        "segment_ids": torch.from_numpy(segment_ids),
        "label_ids": torch.from_numpy(label_ids),
    }


# --------------------------------------------------------------------------------------------
# Model (float64, written out by hand)
# --------------------------------------------------------------------------------------------
def gelu(x, form):
    if form == "tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
    if form == "erf":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    raise ValueError(form)


def layer_norm(x, g, b, eps):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased variance
    return (x - mean) / torch.sqrt(var + eps) * g + b


def linear(x, w, b):
    return torch.matmul(x, w.transpose(0, 1)) + b


def bert_forward(P, cfg, batch, preset):
    """Returns (reps, atts, logits). P maps HF names to f64 tensors."""
    form, eps = preset["gelu"], preset["ln_eps"]
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    dh = H // nh
    ids = batch["input_ids"].long()
    seg = batch["segment_ids"].long()
    mask = batch["input_mask"].to(F64)
    B, S = ids.shape

    pos = torch.arange(S)
    emb = (P["bert.embeddings.word_embeddings.weight"][ids]
           + P["bert.embeddings.position_embeddings.weight"][pos].unsqueeze(0)
           + P["bert.embeddings.token_type_embeddings.weight"][seg])
    x = layer_norm(emb, P["bert.embeddings.LayerNorm.weight"], P["bert.embeddings.LayerNorm.bias"], eps)

    ext = ((1.0 - mask) * -10000.0).view(B, 1, 1, S)  # mask on the key axis

    reps = [x]
    atts = []
    for i in range(cfg["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."

        def heads(t):
            return t.view(B, S, nh, dh).permute(0, 2, 1, 3)  # [B, nh, S, dh]

        q = heads(linear(x, P[p + "attention.self.query.weight"], P[p + "attention.self.query.bias"]))
        k = heads(linear(x, P[p + "attention.self.key.weight"], P[p + "attention.self.key.bias"]))
        v = heads(linear(x, P[p + "attention.self.value.weight"], P[p + "attention.self.value.bias"]))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(dh) + ext
        atts.append(scores)
        probs = torch.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(B, S, H)
        attn_out = layer_norm(
            linear(ctx, P[p + "attention.output.dense.weight"], P[p + "attention.output.dense.bias"]) + x,
            P[p + "attention.output.LayerNorm.weight"], P[p + "attention.output.LayerNorm.bias"], eps)
        inter = gelu(linear(attn_out, P[p + "intermediate.dense.weight"], P[p + "intermediate.dense.bias"]), form)
        x = layer_norm(
            linear(inter, P[p + "output.dense.weight"], P[p + "output.dense.bias"]) + attn_out,
            P[p + "output.LayerNorm.weight"], P[p + "output.LayerNorm.bias"], eps)
        reps.append(x)

    pooled = torch.tanh(linear(x[:, 0], P["bert.pooler.dense.weight"], P["bert.pooler.dense.bias"]))
    logits = linear(torch.relu(pooled), P["classifier.weight"], P["classifier.bias"])
    return reps, atts, logits


def mse(a, b):
    return ((a - b) ** 2).mean()


def zero_masked(a):
    return torch.where(a <= -100.0, torch.zeros_like(a), a)


def distill_losses(SP, TP, scfg, tcfg, batch, preset, phase, teacher_out=None, regression=False):
    """Returns dict with 'loss' and its parts. SP: student params (f64, may require grad).
    With `regression` (a one-output head, STS-B), td2 is PyTorch TinyBERT's
    `MSELoss()(student_logits.view(-1), label_ids.view(-1))`: hard targets, no teacher."""
    if teacher_out is None:
        with torch.no_grad():
            teacher_out = bert_forward(TP, tcfg, batch, preset)
    t_reps, t_atts, t_logits = teacher_out
    s_reps, s_atts, s_logits = bert_forward(SP, scfg, batch, preset)
    if phase in ("gd", "td1"):
        Ls = scfg["num_hidden_layers"]
        Lt = tcfg["num_hidden_layers"]
        assert Lt % Ls == 0
        k = Lt // Ls
        att = sum(mse(zero_masked(s_atts[i]), zero_masked(t_atts[(i + 1) * k - 1])) for i in range(Ls))
        rep = sum(mse(linear(s_reps[i], SP["fit_dense.weight"], SP["fit_dense.bias"]), t_reps[i * k])
                  for i in range(Ls + 1))
        return {"loss": att + rep, "loss.att": att, "loss.rep": rep}
    if phase == "td2" and regression:
        y = batch["label_ids"].to(F64)
        cls = mse(s_logits.view(-1), y)
        ref = torch.nn.functional.mse_loss(s_logits.view(-1), y)
        assert torch.allclose(cls, ref, rtol=1e-14, atol=0.0)
        return {"loss": cls, "loss.cls": cls}
    if phase == "td2":
        cls = (-torch.softmax(t_logits, dim=-1) * torch.log_softmax(s_logits, dim=-1)).mean()
        return {"loss": cls, "loss.cls": cls}
    raise ValueError(phase)


def phase_param_names(student_names, phase):
    if phase == "gd":
        return [n for n in student_names if not n.startswith("classifier.")]
    return list(student_names)


def is_decayed(name):
    low = name.lower()
    return "layernorm" not in low and "bias" not in low


# --------------------------------------------------------------------------------------------
# One optimizer step
# --------------------------------------------------------------------------------------------
def adam_step(P, names, preset_name):
    """One optimizer step from m = v = 0 with lr LR for every parameter in `names` of P (f64
    leaves after backward): per-parameter clip, AdamWeightDecay (mindspore) or BertAdam (paper),
    no bias correction. Returns grad./param./adam_m./adam_v. entries."""
    preset = PRESETS[preset_name]
    out = {}
    for n in names:
        w = P[n].detach().clone()
        g_raw = P[n].grad  # None if the loss does not depend on n
        if preset_name == "mindspore":
            g = torch.zeros_like(w) if g_raw is None else g_raw.detach().clone()
            gnorm = torch.sqrt((g * g).sum())
            gc = g / torch.clamp(gnorm, min=1.0)  # ClipByNorm(1.0): g / max(|g|, 1)
            m = (1.0 - BETA1) * gc  # m0 = 0
            v = (1.0 - BETA2) * gc * gc  # v0 = 0
            u = m / (torch.sqrt(v) + ADAM_EPS)
            if is_decayed(n):
                u = u + preset["wd"] * w
            w_new = w - LR * u
        elif preset_name == "paper":
            if g_raw is None:
                # BertAdam skips params whose .grad is None: nothing changes.
                g = torch.zeros_like(w)
                m = torch.zeros_like(w)
                v = torch.zeros_like(w)
                w_new = w.clone()
            else:
                g = g_raw.detach().clone()
                if n == "bert.embeddings.word_embeddings.weight":
                    g[0].zero_()  # nn.Embedding(padding_idx=0)
                gnorm = torch.sqrt((g * g).sum())
                coef = torch.clamp(1.0 / (gnorm + 1e-6), max=1.0)  # clip_grad_norm_(p, 1.0)
                gc = g * coef
                # cross-check the hand-written clip against torch's own clip_grad_norm_
                chk = torch.zeros_like(w, requires_grad=True)
                chk.grad = g.clone()
                torch.nn.utils.clip_grad_norm_([chk], 1.0)
                # (its norm sums in another order: agreement to a few ulp of the largest element)
                assert (chk.grad - gc).abs().max() <= 1e-14 * gc.abs().max(), n
                m = (1.0 - BETA1) * gc
                v = (1.0 - BETA2) * gc * gc
                u = m / (torch.sqrt(v) + ADAM_EPS)
                if is_decayed(n):
                    u = u + preset["wd"] * w
                w_new = w - LR * u
        else:
            raise ValueError(preset_name)
        out["grad." + n] = g
        out["param." + n] = w_new
        out["adam_m." + n] = m
        out["adam_v." + n] = v
    return out


def run_phase(student32, teacher32, scfg, tcfg, batch, preset_name, phase, regression=False):
    preset = PRESETS[preset_name]
    names = phase_param_names(list(student32), phase)
    SP = {n: t.to(F64) for n, t in student32.items()}
    for n in names:
        SP[n] = SP[n].clone().requires_grad_(True)
    TP = {n: t.to(F64) for n, t in teacher32.items()}

    losses = distill_losses(SP, TP, scfg, tcfg, batch, preset, phase, regression=regression)
    losses["loss"].backward()

    out = {k: v.detach().clone() for k, v in losses.items()}
    out.update(adam_step(SP, names, preset_name))
    for k, t in out.items():
        assert t.dtype == F64, k
    # invariants of the spec
    wg = out["grad.bert.embeddings.word_embeddings.weight"][0]
    if preset_name == "paper":
        assert torch.all(wg == 0)
    elif phase != "td2":
        # padding tokens (id 0) feed row 0 through the hidden-state loss; in td2 they cannot reach
        # the [CLS] logits (their keys are masked with -10000, exp underflows to exactly 0)
        assert torch.any(wg != 0)
    for n in names:
        depends = SP[n].grad is not None
        assert depends == (not (phase == "td2" and n.startswith("fit_dense."))
                           and not (phase != "td2" and n.startswith(("bert.pooler.", "classifier.")))), n
    meta = {
        "lr": repr(LR),
        "step": "1",
        "loss_scale": "1.0",
        "preset": preset_name,
        "phase": phase,
    }
    return out, meta


def ft_losses(TP, tcfg, batch, preset, regression=False):
    """Teacher fine-tuning loss: mean over the batch of -log_softmax(logits)[label] on the TinyBERT
    head (classifier(relu(pooler))), cross-checked against torch's own cross_entropy; with
    `regression`, the mean squared error of the single logit to the float targets (MSELoss)."""
    _, _, logits = bert_forward(TP, tcfg, batch, preset)
    if regression:
        y = batch["label_ids"].to(F64)
        loss = mse(logits.view(-1), y)
        ref = torch.nn.functional.mse_loss(logits.view(-1), y)
        assert torch.allclose(loss, ref, rtol=1e-14, atol=0.0)
        return {"loss": loss, "loss.mse": loss}
    labels = batch["label_ids"].long()
    ce = -torch.log_softmax(logits, dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1).mean()
    ref = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.allclose(ce, ref, rtol=1e-14, atol=0.0), (ce.item(), ref.item())
    return {"loss": ce, "loss.ce": ce}


# The step state the fixtures assume on input (tbc step's defaults): state.step 0, state.cur_iter 1,
# state.last_overflow_iter 0, no loss scaling. ft has no dynamic loss scale, so the scale passes
# through unchanged and is not stored (a test may feed any scale).
FT_STATE_AFTER = {"state.step": 1, "state.cur_iter": 2, "state.last_overflow_iter": 0}


def run_ft(teacher32, tcfg, batch, preset_name, regression=False):
    """One teacher fine-tuning step (all teacher parameters train; config dropout is 0)."""
    preset = PRESETS[preset_name]
    names = list(teacher32)
    TP = {n: t.to(F64).clone().requires_grad_(True) for n, t in teacher32.items()}
    losses = ft_losses(TP, tcfg, batch, preset, regression=regression)
    losses["loss"].backward()
    out = {k: v.detach().clone() for k, v in losses.items()}
    out.update(adam_step(TP, names, preset_name))
    for k, t in out.items():
        assert t.dtype == F64, k
    out["lr"] = torch.tensor(LR, dtype=F64)  # the constant lr of the step (warmup 0, no decay)
    for k, v in FT_STATE_AFTER.items():
        out[k] = torch.tensor(v, dtype=torch.int32)
    # every teacher parameter reaches the loss
    for n in names:
        assert TP[n].grad is not None, n
    # padding tokens (id 0) cannot reach the [CLS] logits (as in td2), so row 0 gets exactly zero
    # under both presets
    assert torch.all(out["grad.bert.embeddings.word_embeddings.weight"][0] == 0)
    meta = {
        "lr": repr(LR),
        "step": "1",
        "loss_scale": "1.0",
        "preset": preset_name,
        "phase": "ft",
    }
    return out, meta


# --------------------------------------------------------------------------------------------
# Finite-difference self-check of the autograd gradients
# --------------------------------------------------------------------------------------------
def finite_difference_check(student32, teacher32, scfg, tcfg, batch):
    """Central differences in float64 vs torch.autograd.

    (a) single elements of a few parameters, (b) for every preset and phase, the directional
    derivative along a fixed random direction over *all* student parameters of the phase; the same
    two checks for ft over the teacher's parameters.
    The loss is smooth away from the <= -100 cut (masked scores sit at about -10000), so a fairly
    large step (h = 1e-3, with Richardson extrapolation) gives the best accuracy; we require relative
    agreement to 1e-5."""
    h = 1e-3
    rtol = 1e-5
    teacher_cache = {}

    def setup(preset_name):
        preset = PRESETS[preset_name]
        if preset_name not in teacher_cache:
            TP = {n: t.to(F64) for n, t in teacher32.items()}
            with torch.no_grad():
                teacher_cache[preset_name] = (TP, bert_forward(TP, tcfg, batch, preset))
        return preset, teacher_cache[preset_name]

    def loss_at(preset, TP, tout, phase, shift):
        Q = {n: t.to(F64) for n, t in student32.items()}
        for n, d in shift.items():
            Q[n] = Q[n] + d
        with torch.no_grad():
            return distill_losses(Q, TP, scfg, tcfg, batch, preset, phase, tout)["loss"].item()

    def richardson(f, step):
        # central difference D(s) = (f(s) - f(-s)) / 2s has error O(s^2); (4 D(s/2) - D(s)) / 3 is O(s^4)
        d1 = (f(step) - f(-step)) / (2 * step)
        d2 = (f(step / 2) - f(-step / 2)) / step
        return (4 * d2 - d1) / 3

    def compare(label, ga, gn):
        err = abs(ga - gn)
        ok = err <= rtol * abs(ga) and abs(ga) > 1e-9
        print(f"  fd {label}: autograd {ga:+.12e} fd {gn:+.12e} rel {err / max(abs(ga), 1e-300):.1e} "
              f"{'ok' if ok else 'FAIL'}")
        assert ok, (label, ga, gn)

    elems = [
        ("mindspore", "gd", "bert.embeddings.word_embeddings.weight", (0, 3)),  # padding row
        ("mindspore", "gd", "bert.embeddings.word_embeddings.weight", (int(batch["input_ids"][0, 2]), 5)),
        ("mindspore", "gd", "bert.encoder.layer.0.attention.self.key.weight", (7, 11)),
        ("mindspore", "gd", "bert.encoder.layer.1.output.LayerNorm.weight", (4,)),
        ("mindspore", "gd", "fit_dense.weight", (10, 20)),
        ("paper", "td1", "bert.encoder.layer.1.intermediate.dense.bias", (13,)),
        ("paper", "td1", "bert.embeddings.token_type_embeddings.weight", (1, 2)),
        ("paper", "td2", "classifier.weight", (2, 17)),
        ("paper", "td2", "bert.encoder.layer.1.output.dense.weight", (3, 30)),
        ("mindspore", "td2", "bert.pooler.dense.weight", (9, 1)),
    ]
    for preset_name, phase, pname, idx in elems:
        preset, (TP, tout) = setup(preset_name)
        SP = {n: t.to(F64) for n, t in student32.items()}
        SP[pname] = SP[pname].clone().requires_grad_(True)
        distill_losses(SP, TP, scfg, tcfg, batch, preset, phase, tout)["loss"].backward()
        ga = SP[pname].grad[idx].item()
        e = torch.zeros(student32[pname].shape, dtype=F64)
        e[idx] = 1.0
        gn = richardson(lambda t: loss_at(preset, TP, tout, phase, {pname: t * e}), h)
        compare(f"{preset_name:9s} {phase:3s} {pname}{list(idx)}", ga, gn)

    gen = torch.Generator().manual_seed(SEED + 1)
    for preset_name in PRESETS:
        preset, (TP, tout) = setup(preset_name)
        for phase in PHASES:
            names = phase_param_names(list(student32), phase)
            direction = {n: torch.randn(student32[n].shape, generator=gen, dtype=F64) for n in names}
            SP = {n: t.to(F64) for n, t in student32.items()}
            for n in names:
                SP[n] = SP[n].clone().requires_grad_(True)
            distill_losses(SP, TP, scfg, tcfg, batch, preset, phase, tout)["loss"].backward()
            ga = sum((SP[n].grad * direction[n]).sum().item() for n in names if SP[n].grad is not None)
            hd = 1e-4  # all parameters move at once: a smaller step
            gn = richardson(lambda t: loss_at(preset, TP, tout, phase, {n: t * d for n, d in direction.items()}), hd)
            compare(f"{preset_name:9s} {phase:3s} directional derivative (all params)", ga, gn)

    # ft: the teacher's hard-label cross-entropy, every teacher parameter trainable
    def ft_loss_at(preset, shift):
        Q = {n: t.to(F64) for n, t in teacher32.items()}
        for n, d in shift.items():
            Q[n] = Q[n] + d
        with torch.no_grad():
            return ft_losses(Q, tcfg, batch, preset)["loss"].item()

    def ft_autograd(preset):
        TQ = {n: t.to(F64).clone().requires_grad_(True) for n, t in teacher32.items()}
        ft_losses(TQ, tcfg, batch, preset)["loss"].backward()
        return TQ

    ft_elems = [
        ("mindspore", "classifier.weight", (1, 7)),
        ("mindspore", "bert.embeddings.word_embeddings.weight", (int(batch["input_ids"][1, 3]), 9)),
        ("paper", "bert.encoder.layer.5.attention.self.query.weight", (3, 40)),
        ("paper", "bert.encoder.layer.0.output.LayerNorm.bias", (12,)),
        ("paper", "bert.pooler.dense.bias", (5,)),
    ]
    for preset_name, pname, idx in ft_elems:
        preset = PRESETS[preset_name]
        ga = ft_autograd(preset)[pname].grad[idx].item()
        e = torch.zeros(teacher32[pname].shape, dtype=F64)
        e[idx] = 1.0
        gn = richardson(lambda t: ft_loss_at(preset, {pname: t * e}), h)
        compare(f"{preset_name:9s} ft  {pname}{list(idx)}", ga, gn)

    gen_ft = torch.Generator().manual_seed(SEED + 2)
    for preset_name in PRESETS:
        preset = PRESETS[preset_name]
        direction = {n: torch.randn(t.shape, generator=gen_ft, dtype=F64) for n, t in teacher32.items()}
        TQ = ft_autograd(preset)
        ga = sum((TQ[n].grad * direction[n]).sum().item() for n in direction)
        gn = richardson(lambda t: ft_loss_at(preset, {n: t * d for n, d in direction.items()}), 1e-4)
        compare(f"{preset_name:9s} ft  directional derivative (all teacher params)", ga, gn)


# --------------------------------------------------------------------------------------------
# LR schedules and loss scale
# --------------------------------------------------------------------------------------------
def lr_polynomial(s, lr0, end_lr, W, D, power=1.0):
    if W > 0 and s < W:
        return lr0 * s / W
    return (lr0 - end_lr) * (1.0 - min(s, D) / D) ** power + end_lr


def lr_warmup_linear(s, lr0, W, D):
    p = s / D
    w = W / D
    mult = p / w if p < w else max((p - 1.0) / (w - 1.0), 0.0)
    return lr0 * mult + 0.0  # + 0.0 turns the -0.0 at p == 1 into +0.0


def make_schedule():
    cases = {
        "polynomial": dict(kind="polynomial", lr0=5e-5, end_lr=1e-14, warmup_steps=4, decay_steps=40),
        "polynomial_nowarmup": dict(kind="polynomial", lr0=5e-5, end_lr=1e-14, warmup_steps=0, decay_steps=40),
        "warmup_linear": dict(kind="warmup_linear", lr0=3e-5, warmup_steps=4, decay_steps=40),
        "constant": dict(kind="constant", lr0=5e-5),
    }
    steps = list(range(0, 41))
    tensors = {}
    for name, c in cases.items():
        if c["kind"] == "polynomial":
            vals = [lr_polynomial(s, c["lr0"], c["end_lr"], c["warmup_steps"], c["decay_steps"]) for s in steps]
        elif c["kind"] == "warmup_linear":
            vals = [lr_warmup_linear(s, c["lr0"], c["warmup_steps"], c["decay_steps"]) for s in steps]
        else:
            vals = [c["lr0"] for _ in steps]
        tensors[name] = torch.tensor(vals, dtype=F64)
    meta = {name: json.dumps(c, sort_keys=True) for name, c in cases.items()}
    meta["steps"] = json.dumps({"first": 0, "last": 40})
    return tensors, meta


def make_loss_scale():
    seq = [False, False, False, False, True, False, False, False, True, True, False, False, False, False]
    init_scale, factor, window = 8.0, 2.0, 3
    scale = init_scale
    cur_iter, last_overflow, step = 1, 0, 0
    rows = {k: [] for k in ("overflow", "scale_before", "scale_after", "step_after",
                            "cur_iter_after", "last_overflow_after")}
    for overflow in seq:
        rows["overflow"].append(int(overflow))
        rows["scale_before"].append(scale)
        if overflow:
            scale = max(scale / factor, 1.0)
        should_inc = (cur_iter - last_overflow) >= window
        if overflow or should_inc:
            last_overflow = cur_iter
        if should_inc and not overflow:
            scale *= factor
        cur_iter += 1
        if not overflow:
            step += 1
        rows["scale_after"].append(scale)
        rows["step_after"].append(step)
        rows["cur_iter_after"].append(cur_iter)
        rows["last_overflow_after"].append(last_overflow)
    tensors = {
        "overflow": torch.tensor(rows["overflow"], dtype=torch.int32),
        "scale_before": torch.tensor(rows["scale_before"], dtype=F64),
        "scale_after": torch.tensor(rows["scale_after"], dtype=F64),
        "step_after": torch.tensor(rows["step_after"], dtype=torch.int32),
        "cur_iter_after": torch.tensor(rows["cur_iter_after"], dtype=torch.int32),
        "last_overflow_after": torch.tensor(rows["last_overflow_after"], dtype=torch.int32),
    }
    meta = {"init_scale": "8.0", "factor": "2", "window": "3", "cur_iter_start": "1",
            "last_overflow_iter_start": "0", "step_start": "0"}
    return tensors, meta


# --------------------------------------------------------------------------------------------
def main():
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(repo, "tests", "fixtures", "tiny"))
    ap.add_argument("--config-dir", default=None,
                    help="directory holding teacher.json / student.json (default: --out)")
    ap.add_argument("--skip-fd-check", action="store_true")
    args = ap.parse_args()
    out_dir = args.out
    cfg_dir = args.config_dir or out_dir
    if not os.path.exists(os.path.join(cfg_dir, "teacher.json")):
        cfg_dir = os.path.join(repo, "tests", "fixtures", "tiny")
    os.makedirs(out_dir, exist_ok=True)

    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tcfg = load_config(os.path.join(cfg_dir, "teacher.json"))
    scfg = load_config(os.path.join(cfg_dir, "student.json"))
    for c in (tcfg, scfg):
        assert c["hidden_dropout_prob"] == 0.0 and c["attention_probs_dropout_prob"] == 0.0
    assert tcfg["vocab_size"] == scfg["vocab_size"]
    assert tcfg["num_labels"] == scfg["num_labels"]

    rng = np.random.default_rng(SEED)
    teacher = init_params(rng, param_shapes(tcfg), QK_STD["teacher"])
    student = init_params(rng, param_shapes(scfg, with_fit_dense_to=tcfg["hidden_size"]), QK_STD["student"])
    batch = make_batch(rng, scfg)

    written = []

    def save(fname, tensors, meta=None):
        path = os.path.join(out_dir, fname)
        save_safetensors(path, tensors, meta)
        written.append(path)

    w = {"teacher." + n: t for n, t in teacher.items()}
    w.update({"student." + n: t for n, t in student.items()})
    save("weights.safetensors", w, {"seed": str(SEED), "dtype": "float32"})
    save("batch.safetensors", batch, {"seed": str(SEED)})

    print("losses (float64):")
    for preset_name in PRESETS:
        for phase in PHASES:
            out, meta = run_phase(student, teacher, scfg, tcfg, batch, preset_name, phase)
            parts = "  ".join(f"{k}={out[k].item():.12e}" for k in ("loss", "loss.att", "loss.rep", "loss.cls")
                              if k in out)
            print(f"  {preset_name:9s} {phase:3s} {parts}")
            save(f"expected_{preset_name}_{phase}.safetensors", out, meta)
        SP = {n: t.to(F64) for n, t in student.items()}
        with torch.no_grad():
            _, _, logits = bert_forward(SP, scfg, batch, PRESETS[preset_name])
        save(f"expected_{preset_name}_eval.safetensors", {"logits": logits.clone()},
             {"preset": preset_name, "phase": "eval"})
        out, meta = run_ft(teacher, tcfg, batch, preset_name)
        print(f"  {preset_name:9s} ft  loss.ce={out['loss.ce'].item():.12e}")
        save(f"expected_{preset_name}_ft.safetensors", out, meta)
        TP = {n: t.to(F64) for n, t in teacher.items()}
        with torch.no_grad():
            _, _, logits = bert_forward(TP, tcfg, batch, PRESETS[preset_name])
        save(f"expected_{preset_name}_eval_teacher.safetensors", {"logits": logits.clone()},
             {"preset": preset_name, "phase": "eval_teacher"})

    # Regression heads (num_labels 1, as STS-B): the classifiers replaced by one-output ones and
    # float targets, from their own RNG stream so that every file above stays byte-identical.
    rrng = np.random.default_rng(SEED + 1)
    reg = {}
    for who, cfg in (("teacher", tcfg), ("student", scfg)):
        w = rrng.normal(0.0, HEAD_STD, size=(1, cfg["hidden_size"])).astype(np.float32)
        b = rrng.normal(0.0, 0.02, size=(1,)).astype(np.float32)
        reg[f"{who}.classifier.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        reg[f"{who}.classifier.bias"] = torch.from_numpy(b)
    reg["label_ids"] = torch.from_numpy(rrng.uniform(0.0, 5.0, size=4).astype(np.float32))
    save("regression.safetensors", reg, {"seed": str(SEED + 1)})
    rbatch = dict(batch, label_ids=reg["label_ids"])
    rteacher = dict(teacher, **{n[len("teacher."):]: t for n, t in reg.items() if n.startswith("teacher.")})
    rstudent = dict(student, **{n[len("student."):]: t for n, t in reg.items() if n.startswith("student.")})
    rtcfg, rscfg = dict(tcfg, num_labels=1), dict(scfg, num_labels=1)
    for preset_name in PRESETS:
        out, meta = run_phase(rstudent, rteacher, rscfg, rtcfg, rbatch, preset_name, "td2", regression=True)
        print(f"  {preset_name:9s} td2 regression loss.cls={out['loss.cls'].item():.12e}")
        save(f"expected_{preset_name}_td2_regression.safetensors", out, dict(meta, head="regression"))
        out, meta = run_ft(rteacher, rtcfg, rbatch, preset_name, regression=True)
        print(f"  {preset_name:9s} ft  regression loss.mse={out['loss.mse'].item():.12e}")
        save(f"expected_{preset_name}_ft_regression.safetensors", out, dict(meta, head="regression"))

    sched, smeta = make_schedule()
    save("expected_schedule.safetensors", sched, smeta)
    ls, lmeta = make_loss_scale()
    save("expected_loss_scale.safetensors", ls, lmeta)

    if not args.skip_fd_check:
        print("finite-difference self-check (central differences, float64):")
        finite_difference_check(student, teacher, scfg, tcfg, batch)

    print("files:")
    total = 0
    for p in written:
        size = os.path.getsize(p)
        total += size
        with open(p, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        print(f"  {os.path.relpath(p, repo) if p.startswith(repo) else p}  {size:>9d} B  sha256 {digest}")
    print(f"  total {total} B ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    sys.exit(main())
