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

The text round trip (--text): AutoTokenizer.from_pretrained(MODEL_DIR) on the raw rows of a TSV
against the features `tbc data glue` wrote for the same TSV (a TFRecord, read here without
TensorFlow), row by row: input_ids, token_type_ids, attention_mask. Then the model's accuracy on
both feature sets and how many predictions agree. Fails on any differing row or prediction.
  python tests/reference/check_hf_export.py out/demo/student_hf --text out/demo/data/dev.tsv \
      --features out/demo/data/dev.tfrecord --skip-header --label-column 0 --text-columns 1 \
      --labels computers,politics,science,love
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
    ap.add_argument("batch", nargs="?")
    ap.add_argument("logits", nargs="?")
    ap.add_argument("--text", help="TSV of raw rows (the text round trip)")
    ap.add_argument("--features", help="the TFRecord `tbc data glue` wrote from --text")
    ap.add_argument("--skip-header", action="store_true")
    ap.add_argument("--label-column", type=int, default=0)
    ap.add_argument("--text-columns", default="1", help="one column, or two for pairs: 1 or 1,2")
    ap.add_argument("--labels", help="label names in id order, comma-separated")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument(
        "--tol64",
        type=float,
        default=None,
        help="also gate the float64 run (use ~1e-12 against float64 reference logits: it catches "
        "a wrong hidden_act or layer_norm_eps that float32 round-off hides)",
    )
    args = ap.parse_args()
    if args.text:
        return text_round_trip(args)
    if not (args.batch and args.logits):
        ap.error("give BATCH and LOGITS, or --text and --features")

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


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def fields(buf):
    """(field number, wire type, value) of a protobuf message; value is bytes for type 2."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(buf, i)
        elif wire == 2:
            n, i = varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif wire == 5:
            v, i = buf[i : i + 4], i + 4
        elif wire == 1:
            v, i = buf[i : i + 8], i + 8
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, wire, v


def int64_features(record):
    """The int64_list features of one tf.train.Example."""
    out = {}
    for num, _, features in fields(record):  # Example.features = 1
        if num != 1:
            continue
        for fnum, _, entry in fields(features):  # Features.feature = 1 (map entry)
            if fnum != 1:
                continue
            name, feature = None, b""
            for enum, _, v in fields(entry):
                if enum == 1:
                    name = v.decode()
                elif enum == 2:
                    feature = v
            for knum, _, lst in fields(feature):  # Feature.int64_list = 3
                if knum != 3:
                    continue
                values = []
                for vnum, wire, v in fields(lst):
                    if vnum != 1:
                        continue
                    if wire == 2:  # packed
                        j = 0
                        while j < len(v):
                            x, j = varint(v, j)
                            values.append(x - (1 << 64) if x >= 1 << 63 else x)
                    else:
                        values.append(v - (1 << 64) if v >= 1 << 63 else v)
                out[name] = values
    return out


def tfrecords(path):
    """The records of a TFRecord file (framing: u64 length, u32 crc, data, u32 crc)."""
    import struct

    with open(path, "rb") as f:
        data = f.read()
    i = 0
    while i < len(data):
        (n,) = struct.unpack_from("<Q", data, i)
        yield data[i + 12 : i + 12 + n]
        i += 12 + n + 4


def text_round_trip(args):
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not args.features:
        print("FAIL: --text needs --features (the TFRecord tbc wrote from it)")
        return 1
    cols = [int(c) for c in args.text_columns.split(",")]
    labels = args.labels.split(",") if args.labels else None
    rows = []
    with open(args.text, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip()]
    for line in lines[1 if args.skip_header else 0 :]:
        cells = line.split("\t")
        texts = [cells[c] for c in cols]
        label = cells[args.label_column]
        rows.append((texts, labels.index(label) if labels else int(label)))
    feats = [int64_features(r) for r in tfrecords(args.features)]
    if len(feats) != len(rows):
        print(f"FAIL: {len(rows)} TSV rows but {len(feats)} records")
        return 1
    seq = len(feats[0]["input_ids"])

    tok = AutoTokenizer.from_pretrained(args.model_dir)
    print(f"transformers {transformers.__version__}: {type(tok).__name__} from {args.model_dir}")
    print(f"  do_lower_case={getattr(tok, 'do_lower_case', '?')}; {len(rows)} rows, seq {seq}")
    enc = tok(
        [r[0][0] for r in rows],
        [r[0][1] if len(r[0]) > 1 and r[0][1] else None for r in rows] if len(cols) > 1 else None,
        max_length=seq,
        padding="max_length",
        truncation=True,
    )
    same = 0
    first_diff = None
    for i, f in enumerate(feats):
        ours = (f["input_ids"], f["segment_ids"], f["input_mask"])
        theirs = (enc["input_ids"][i], enc["token_type_ids"][i], enc["attention_mask"][i])
        if list(ours) == [list(t) for t in theirs]:
            same += 1
        elif first_diff is None:
            first_diff = (i, rows[i][0], tok.convert_ids_to_tokens(f["input_ids"]),
                          tok.convert_ids_to_tokens(enc["input_ids"][i]))
    print(f"token ids identical on {same} of {len(rows)} rows")
    if first_diff:
        i, text, ours, theirs = first_diff
        print(f"  first difference, row {i}: {text}\n  tbc:          {ours}\n  transformers: {theirs}")

    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, trust_remote_code=True)
    model.eval()
    gold = torch.tensor([r[1] for r in rows])

    def predict(ids, types, mask):
        out = []
        with torch.no_grad():
            for s in range(0, len(ids), 64):
                logits = model(
                    input_ids=torch.tensor(ids[s : s + 64]),
                    token_type_ids=torch.tensor(types[s : s + 64]),
                    attention_mask=torch.tensor(mask[s : s + 64]),
                ).logits
                out.append(logits.argmax(-1))
        return torch.cat(out)

    p_tbc = predict([f["input_ids"] for f in feats], [f["segment_ids"] for f in feats],
                    [f["input_mask"] for f in feats])
    p_hf = predict(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"])
    acc_tbc = (p_tbc == gold).float().mean().item()
    acc_hf = (p_hf == gold).float().mean().item()
    agree = (p_tbc == p_hf).sum().item()
    print(f"accuracy on tbc's features: {acc_tbc:.6f}")
    print(f"accuracy through AutoTokenizer on the raw text: {acc_hf:.6f}")
    print(f"predictions agree on {agree} of {len(rows)} rows")
    if same != len(rows) or agree != len(rows):
        print("FAIL")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
