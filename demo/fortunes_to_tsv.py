#!/usr/bin/env python3
"""Turns Debian's `fortunes` topic files into a topic-classification task and a GD corpus.

Each fortune (the text between `%` lines) of the chosen topic files becomes one example whose
label is its file's name. Every fifth fortune of a topic (by position) goes to the dev split, the
rest to train, so the split is deterministic. Fortunes are whitespace-normalised; attributions
(lines starting with `--`) are dropped so the topic must be read from the text itself.

The general-distillation corpus is plain text: every fortune of the other topic files, one
document per fortune, separated by blank lines (what `tbc data pretrain` reads).

The corpus is capped at MAX_DOCS fortunes (default 3000, spread evenly over the files) so the
demo's general distillation stays around a hundred steps.

Usage: fortunes_to_tsv.py FORTUNES_DIR OUT_DIR topic1,topic2,... [MAX_DOCS]
"""
import os
import sys


def fortunes(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    for chunk in text.split("\n%\n"):
        lines = [l for l in chunk.strip("%\n").splitlines() if not l.strip().startswith("--")]
        s = " ".join(" ".join(lines).split())
        if 20 <= len(s) <= 600:
            yield s


def main():
    src, out, topics = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    max_docs = int(sys.argv[4]) if len(sys.argv) > 4 else 3000
    os.makedirs(out, exist_ok=True)
    train, dev = [], []
    for topic in topics:
        for i, s in enumerate(fortunes(os.path.join(src, topic))):
            (dev if i % 5 == 4 else train).append((topic, s.replace("\t", " ")))
    # Interleave topics so every batch of the (unshuffled) TFRecord holds a mix of labels.
    def interleave(rows):
        by = {t: [r for r in rows if r[0] == t] for t in topics}
        out_rows, i = [], 0
        while any(i < len(v) for v in by.values()):
            for t in topics:
                if i < len(by[t]):
                    out_rows.append(by[t][i])
            i += 1
        return out_rows
    for name, rows in (("train.tsv", interleave(train)), ("dev.tsv", interleave(dev))):
        with open(os.path.join(out, name), "w", encoding="utf-8") as f:
            f.write("label\tsentence\n")
            for label, s in rows:
                f.write(f"{label}\t{s}\n")
    others = sorted(
        n for n in os.listdir(src)
        if n not in topics and "." not in n and os.path.isfile(os.path.join(src, n))
    )
    pool = [s for n in others for s in fortunes(os.path.join(src, n))]
    step = max(1, len(pool) // max_docs)
    chosen = pool[::step][:max_docs]
    with open(os.path.join(out, "corpus.txt"), "w", encoding="utf-8") as f:
        for s in chosen:
            f.write(s + "\n\n")
    docs = len(chosen)
    print(f"{len(train)} train / {len(dev)} dev examples over {len(topics)} topics "
          f"({', '.join(topics)}); GD corpus: {docs} fortunes from {len(others)} other files")


if __name__ == "__main__":
    main()
