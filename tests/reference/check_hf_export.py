#!/usr/bin/env python3
"""Checks a tbc Hugging Face export with transformers itself.

Loads MODEL_DIR with AutoModelForSequenceClassification(trust_remote_code=True), runs it on a
batch (safetensors with input_ids, input_mask, segment_ids) and compares its logits with the
expected ones (safetensors with `logits`). Prints the max relative error
max|got - want| / max|want| and exits 1 when it is above --tol (default 1e-5).

Also reported: the same in float64 (gated only with --tol64; against float64 reference logits
a correct export gives ~1e-15, a wrong hidden_act/layer_norm_eps ~1e-7), what plain
BertForSequenceClassification gives with the same weights (it lacks TinyBERT's ReLU), and
whether AutoTokenizer loads the directory. Missing/unexpected keys at load time fail the check.

Inputs for the tiny fixture are written by the runtime test:
  TBC_HF_EXPORT_OUT=/tmp/hfx cargo test -p runtime --test hf_export
  python tests/reference/check_hf_export.py /tmp/hfx/model /tmp/hfx/batch.safetensors /tmp/hfx/logits.safetensors
Needs: torch, safetensors, transformers.
"""

import argparse
import os
import sys

import torch
from safetensors.torch import load_file


def max_rel(got, want):
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("batch")
    ap.add_argument("logits")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument(
        "--tol64",
        type=float,
        default=None,
        help="also gate the float64 run (use ~1e-12 against float64 reference logits: it catches "
        "a wrong hidden_act or layer_norm_eps that float32 round-off hides)",
    )
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    batch = load_file(args.batch)
    want = load_file(args.logits)["logits"]
    inputs = dict(
        input_ids=batch["input_ids"].long(),
        attention_mask=batch["input_mask"].long(),
        token_type_ids=batch["segment_ids"].long(),
    )

    model, info = AutoModelForSequenceClassification.from_pretrained(
        args.model_dir, trust_remote_code=True, output_loading_info=True
    )
    model.eval()
    bad_keys = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")
    print(f"loaded {type(model).__name__} from {args.model_dir}")
    with torch.no_grad():
        got = model(**inputs).logits
    if got.shape != want.shape:
        print(f"FAIL: logits shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        return 1
    err32 = max_rel(got, want)
    with torch.no_grad():
        got64 = model.double()(**inputs).logits
    err64 = max_rel(got64, want)

    plain = BertForSequenceClassification.from_pretrained(args.model_dir).eval()
    with torch.no_grad():
        plain_logits = plain(**inputs).logits
    err_plain = max_rel(plain_logits, want)

    tok_note = "no tokenizer files"
    if os.path.exists(os.path.join(args.model_dir, "vocab.txt")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model_dir)
        enc = tok("the movie was good", "not bad")
        tok_note = f"{type(tok).__name__}: {tok.convert_ids_to_tokens(enc['input_ids'])}"

    print(f"max |want| = {want.abs().max().item():.6g}")
    print(f"max rel error, float32 (gated at {args.tol:g}): {err32:.3e}")
    print(f"max rel error, float64: {err64:.3e}")
    print(f"max rel error, plain BertForSequenceClassification (no ReLU): {err_plain:.3e}")
    print(f"tokenizer: {tok_note}")
    if bad_keys:
        print(f"FAIL: loading reported {bad_keys}")
        return 1
    if not err32 <= args.tol:
        print("FAIL")
        return 1
    if args.tol64 is not None and not err64 <= args.tol64:
        print(f"FAIL: float64 error above {args.tol64:g}")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
