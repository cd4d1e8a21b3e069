"""training/length_baseline.py: the target length predicted from the source length alone."""

import json
import subprocess
import sys

from helpers import REPO, tokenizer_for

WORDS = "a dog runs on the green grass near two small children".split()


def write_split(folder, split, pairs):
    for index, lang in enumerate(("en", "de")):
        (folder / f"{split}.{lang}").write_text("".join(pair[index] + "\n" for pair in pairs), encoding="utf-8")


def run_baseline(folder, *test_splits, tokenizer=None):
    """length_baseline.py with `folder` as training and test folder and `tokenizer` (default: one of WORDS)."""
    if tokenizer is None:
        tokenizer = folder / "tokenizer"
        tokenizer_for(WORDS * 3, vocab_size=120).save_pretrained(tokenizer)
    command = [sys.executable, "training/length_baseline.py", "--train_folder", folder, "--test_folder", folder]
    command += ["--tokenizer_name", tokenizer] + (["--test_splits", *test_splits] if test_splits else [])
    return subprocess.run(list(map(str, command)), cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_most_frequent_target_length_of_each_source_length(tmp_path):
    # In training a source of n words has 2n target words twice as often as n + 1: the baseline must say 2n.
    # test_b has a source length that training lacks (11 words): the baseline falls back to the source length.
    train = [(" ".join(WORDS[:n]), " ".join(WORDS[:n] * 2)) for n in range(1, 8) for _ in range(2)]
    train += [(" ".join(WORDS[:n]), " ".join(WORDS[: n + 1])) for n in range(1, 8)]
    test_a = [(" ".join(WORDS[:n]), " ".join(WORDS[:n] * 2)) for n in (2, 5)] + [("a dog", "a dog runs")]
    test_b = [(" ".join(WORDS), " ".join(WORDS))]
    for split, pairs in (("train", train), ("test_a", test_a), ("test_b", test_b)):
        write_split(tmp_path, split, pairs)

    result = run_baseline(tmp_path, "test_a", "test_b")
    assert result.returncode == 0, result.stderr[-3000:]

    first, *rows = map(json.loads, result.stdout.splitlines())
    # 21 pairs, each word one token, </s> counted: sources 3 x (28 + 7) / 21 = 5 tokens, targets
    # (2 x (2 x 28 + 7) + (28 + 14)) / 21 = 8
    assert first["train_pairs"] == 21 and first["mean_source_tokens"] == 5.0 and first["mean_target_tokens"] == 8.0
    reports = {row["test_set"]: row["length_prediction"] for row in rows}
    assert reports["test_a"]["exact"] == round(2 / 3, 4) and reports["test_a"]["within_2"] == 1.0
    assert reports["test_b"]["exact"] == 1.0  # source and reference have the same 11 words, </s> in both


def test_a_missing_split_is_one_line_that_names_it(tmp_path):
    write_split(tmp_path, "train", [("a dog", "a dog")])
    result = run_baseline(tmp_path, "test_2016_flickr")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "test_2016_flickr" in result.stderr


def test_a_missing_tokenizer_is_one_line_that_names_it(tmp_path):
    missing = tmp_path / "no_tokenizer"
    result = run_baseline(tmp_path, tokenizer=missing)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --tokenizer_name {missing}")
