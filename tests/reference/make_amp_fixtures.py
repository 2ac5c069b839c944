"""PyTorch autocast (AMP) runs of the tiny TinyBERT steps: what tbc's mixed precision is held to.

For every preset and phase of `make_fixtures.py` (gd, td1, td2, ft, eval, eval_teacher), runs the
same hand-written model in float32 under `torch.autocast("cpu", dtype=float16|bfloat16)` on the
committed weights and batch (`tests/fixtures/tiny/{weights,batch}.safetensors`): autocast rounds
the operands of every `matmul` to the 16-bit type and returns 16-bit results; everything else
(softmax, LayerNorm, GELU, the losses) follows type promotion back to float32. The backward pass
runs in the dtypes autocast recorded. The optimizer step is the reference's float64
`adam_step` applied to AMP's gradients (fp32 master weights; an f32 optimizer would differ by
~1e-7, far below the AMP error).

Writes `amp_errors.safetensors`: for every tensor of every float64 fixture
`expected_{preset}_{phase}.safetensors` (losses, gradients, parameters and Adam moments after the
step; eval logits), AMP's error against it as a float64 scalar named
`{fp16|bf16}/{preset}/{phase}/{tensor}`, by the Rust tests' `OutputComparer` rule: the norm-wise
relative error ‖amp − ref‖₂ / ‖ref‖₂, except for tensors that are round-off of an exact zero
(‖ref‖ < 1e-12 of the largest tensor of the same kind, e.g. the td2 attention key-bias
gradients), whose error is ‖amp − ref‖₂ / that largest norm. The Rust
parity test measures tbc's mixed-precision step against the same float64 fixtures and requires
its error to be at most twice AMP's.

Run: .venv/bin/python tests/reference/make_amp_fixtures.py [--out DIR]  (a few seconds)
"""

import argparse
import hashlib
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def f32_mode(on):
    """The reference module computes in `mf.F64` and the default dtype: float32 for AMP runs."""
    mf.F64 = torch.float32 if on else torch.float64
    torch.set_default_dtype(mf.F64)


def leaves(params, names):
    P = {n: t.detach().clone().float() for n, t in params.items()}
    for n in names:
        P[n].requires_grad_(True)
    return P


def optimizer_step(P32, names, preset_name):
    """The float64 reference optimizer on AMP's gradients."""
    f32_mode(False)
    P = {}
    for n in names:
        p = P32[n].detach().double().requires_grad_(True)
        if P32[n].grad is not None:
            p.grad = P32[n].grad.double()
        P[n] = p
    return mf.adam_step(P, names, preset_name)


def amp_phase(student, teacher, scfg, tcfg, batch, preset_name, phase, dtype):
    preset = mf.PRESETS[preset_name]
    names = mf.phase_param_names(list(student), phase)
    f32_mode(True)
    SP = leaves(student, names)
    TP = leaves(teacher, [])
    with torch.autocast("cpu", dtype=dtype):
        losses = mf.distill_losses(SP, TP, scfg, tcfg, batch, preset, phase)
    losses["loss"].backward()
    out = {k: v.detach().double() for k, v in losses.items()}
    out.update(optimizer_step(SP, names, preset_name))
    return out


def amp_ft(teacher, tcfg, batch, preset_name, dtype):
    preset = mf.PRESETS[preset_name]
    names = list(teacher)
    f32_mode(True)
    TP = leaves(teacher, names)
    with torch.autocast("cpu", dtype=dtype):
        # mf.ft_losses without its float64 cross-check against F.cross_entropy
        _, _, logits = mf.bert_forward(TP, tcfg, batch, preset)
        labels = batch["label_ids"].long()
        ce = -torch.log_softmax(logits, dim=-1).gather(1, labels.unsqueeze(1)).squeeze(1).mean()
        losses = {"loss": ce, "loss.ce": ce}
    losses["loss"].backward()
    out = {k: v.detach().double() for k, v in losses.items()}
    out.update(optimizer_step(TP, names, preset_name))
    return out


def amp_logits(params, cfg, batch, preset_name, dtype):
    f32_mode(True)
    P = leaves(params, [])
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype):
        _, _, logits = mf.bert_forward(P, cfg, batch, mf.PRESETS[preset_name])
    f32_mode(False)
    return {"logits": logits.double()}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    tiny = os.path.abspath(os.path.join(here, "..", "fixtures", "tiny"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=tiny)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    tcfg = mf.load_config(os.path.join(tiny, "teacher.json"))
    scfg = mf.load_config(os.path.join(tiny, "student.json"))
    w = load_file(os.path.join(tiny, "weights.safetensors"))
    teacher = {n[len("teacher."):]: t for n, t in w.items() if n.startswith("teacher.")}
    student = {n[len("student."):]: t for n, t in w.items() if n.startswith("student.")}
    batch = load_file(os.path.join(tiny, "batch.safetensors"))

    errors = {}
    for tag, dtype in AMP_DTYPES.items():
        for preset_name in mf.PRESETS:
            runs = {}
            for phase in mf.PHASES:
                runs[phase] = amp_phase(student, teacher, scfg, tcfg, batch, preset_name, phase, dtype)
            runs["ft"] = amp_ft(teacher, tcfg, batch, preset_name, dtype)
            runs["eval"] = amp_logits(student, scfg, batch, preset_name, dtype)
            runs["eval_teacher"] = amp_logits(teacher, tcfg, batch, preset_name, dtype)
            for phase, out in runs.items():
                ref = load_file(os.path.join(tiny, f"expected_{preset_name}_{phase}.safetensors"))
                kind = lambda n: n.split(".", 1)[0]  # noqa: E731
                max_norm = {}
                for name, r in ref.items():
                    if r.is_floating_point():
                        max_norm[kind(name)] = max(max_norm.get(kind(name), 0.0), r.norm().item())
                worst = 0.0
                for name, r in ref.items():
                    if not r.is_floating_point() or name == "lr":
                        continue
                    a = out[name]
                    assert a.dtype == torch.float64 and a.shape == r.shape, (phase, name)
                    ref_norm = r.norm().item()
                    diff = (a - r).norm().item()
                    if ref_norm < 1e-12 * max_norm[kind(name)]:
                        err = diff / max_norm[kind(name)]
                    else:
                        err = diff / ref_norm if ref_norm > 0 else diff
                    errors[f"{tag}/{preset_name}/{phase}/{name}"] = torch.tensor(err, dtype=torch.float64)
                    worst = max(worst, err)
                loss = f" loss={out['loss'].item():.8e}" if "loss" in out else ""
                print(f"  {tag} {preset_name:9s} {phase:12s} worst rel err {worst:.3e}{loss}")
    path = os.path.join(args.out, "amp_errors.safetensors")
    mf.save_safetensors(path, errors, {"torch": torch.__version__, "tensors": str(len(errors))})
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    print(f"  {os.path.relpath(path)}  {len(errors)} errors  {os.path.getsize(path)} B  sha256 {digest}")


if __name__ == "__main__":
    sys.exit(main())
