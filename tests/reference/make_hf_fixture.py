#!/usr/bin/env python3
"""Makes tests/fixtures/hf/: a tiny checkpoint written by transformers itself, for runtime::hf.

  tiny_bertmodel_f16/config.json, model.safetensors
      a `BertModel` (the all-MiniLM-L6-v2 layout: names without the `bert.` prefix) saved by
      `save_pretrained(..., safe_serialization=True)` after `.half()`: a real HF directory in f16.
  tiny_bertmodel_f16.reference.safetensors
      the same values as f32 under tbc's names (`bert.` prefix), written with safetensors only.
      The loader must turn the directory into exactly these tensors.
  vocab.txt
      a 100-token WordPiece vocabulary for the tiny config (special tokens first), used by the
      export test so the exported directory loads with AutoTokenizer.

Shape of the tiny model: the student of tests/fixtures/tiny (vocab 100, hidden 32, 2 layers,
4 heads, intermediate 64, 32 positions). Deterministic: torch.manual_seed(0); the safetensors
writer sorts keys, so a second run gives the same bytes with the same torch/transformers.

Run: /path/to/venv/bin/python tests/reference/make_hf_fixture.py [--out tests/fixtures/hf]
Needs: torch, safetensors, transformers.
"""

import argparse
import os

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an and or but if then of to in on at by for with from up down over under "
    "good bad great fine poor nice awful film movie story plot actor scene music end "
    "is was are were be been being have has had do does did not no very really quite "
    "i you he she it we they this that these those my your his her its our their "
    "love hate like enjoy boring funny sad happy long short"
).split()


def vocab_tokens(n):
    toks = SPECIAL + WORDS + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    toks = list(dict.fromkeys(toks))
    assert len(toks) >= n, len(toks)
    return toks[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "fixtures", "hf"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        type_vocab_size=2,
    )
    torch.manual_seed(0)
    model = BertModel(cfg, add_pooling_layer=True).eval()
    # Non-trivial LayerNorm and bias values, so a swapped gamma/beta or weight/bias shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model = model.half()
    d = os.path.join(out, "tiny_bertmodel_f16")
    model.save_pretrained(d, safe_serialization=True)

    ref = {"bert." + k: v.float().contiguous() for k, v in model.state_dict().items()}
    save_file(ref, os.path.join(out, "tiny_bertmodel_f16.reference.safetensors"), metadata={"format": "pt"})

    with open(os.path.join(out, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab_tokens(cfg.vocab_size)) + "\n")

    for root, _, files in os.walk(out):
        for fn in sorted(files):
            p = os.path.join(root, fn)
            print(f"{os.path.relpath(p, out):55s} {os.path.getsize(p):8d} bytes")


if __name__ == "__main__":
    main()
