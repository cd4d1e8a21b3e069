"""training/benchmark_streaming.py: glat-translate's peak memory and speed on files of many lines."""

import json

import pytest
import torch
from helpers import load_script, read_pairs, tiny_model, tokenizer_for


@pytest.fixture(scope="module")
def folder(multi30k_dir, tmp_path_factory):
    torch.manual_seed(0)
    sources, targets = read_pairs(multi30k_dir, count=200)
    tokenizer = tokenizer_for(sources + targets, vocab_size=300)
    path = tmp_path_factory.mktemp("stream") / "glat"
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_rows_for_each_size_streamed_and_whole(folder, multi30k_dir, tmp_path):
    script = load_script("training/benchmark_streaming.py")
    output = tmp_path / "rows.json"
    argv = [str(folder), "--lines", "40,1500", "--chunk_size", "16", "--batch_size", "8", "--whole_file"]
    rows = script.main(argv + ["--data_folder", str(multi30k_dir), "--output", str(output)])
    assert json.loads(output.read_text()) == rows
    assert [(row["lines"], row["chunk_size"]) for row in rows] == [(40, 16), (40, 40), (1500, 16), (1500, 1500)]
    for row in rows:
        assert row["complete"] and row["kind"] == "stream" and row["backend"] == "torch"
        assert row["seconds"] > 0 and row["lines_per_s"] == pytest.approx(row["lines"] / row["seconds"])
        assert row["peak_mem_mb"] >= 0 and row["input_mb"] > 0
        assert row["command"].startswith(f"glat-translate {folder} --batch_size 8 --chunk_size {row['chunk_size']}")
    assert rows[2]["input_mb"] > 30 * rows[0]["input_mb"]


def test_bad_line_counts_are_a_usage_error(folder):
    script = load_script("training/benchmark_streaming.py")
    for lines in ("ten", "0,10"):
        with pytest.raises(SystemExit) as raised:
            script.main([str(folder), "--lines", lines])
        assert raised.value.code == 2
