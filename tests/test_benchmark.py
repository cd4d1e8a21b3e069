"""training/benchmark.py in-process, on tiny models and a few Multi30k sentences.

Checks the shape of what it reports (every system, every field, ratios that follow from the rows, BLEU with
trained models, figures), never how fast anything is: timings on a shared machine prove nothing.
"""

import importlib.util
import json
import math
import statistics
import sys

import pytest
import torch

from glat_hf.metrics import corpus_bleu, decode_ids
from helpers import REPO, read_pairs, tiny_marian, tiny_model, tokenizer_for

SYSTEMS = [
    "AR greedy", "AR beam 4", "GLAT", "GLAT NPD m=3", "GLAT NPD m=7", "GLAT NPD m=3 + AR rerank",
    "GLAT NPD m=7 + AR rerank", "GLAT+CTC", "GLAT Mask-Predict 4 it.", "GLAT Mask-Predict 10 it.",
]  # fmt: skip
DECODE_FIELDS = {"system", "device", "batch_size", "latency_ms", "sentences_per_s", "peak_mem_mb",
                 "speedup_vs_ar_greedy", "speedup_vs_ar_beam", "bleu", "repetition_ratio", "output_tokens"}  # fmt: skip
TINY = "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2," \
       "encoder_ffn_dim=64,decoder_ffn_dim=64"  # fmt: skip
SENTENCES, LATENCY_SENTENCES, BATCH = 12, 3, 8
SMALL = ["--num_sentences", str(SENTENCES), "--latency_sentences", str(LATENCY_SENTENCES), "--batch_size", str(BATCH),
         "--repeats", "2", "--warmup", "1", "--threads", "1", "--train_batch_size", "6", "--train_steps", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", REPO / "training" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["benchmark"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def decode_rows(rows, variant="fp32"):
    return {(row["system"], row["batch_size"]): row for row in rows if row["kind"] == "decode" and row["variant"] == variant}


def check_rows(rows, systems, variant="fp32"):
    table = decode_rows(rows, variant)
    assert set(table) == {(name, size) for name in systems for size in (1, BATCH)}
    for (name, size), row in table.items():
        assert DECODE_FIELDS <= set(row), f"{name}: missing {DECODE_FIELDS - set(row)}"
        assert row["device"] == "cpu"
        assert row["latency_ms"] > 0 and row["peak_mem_mb"] >= 0 and len(row["latency_runs_ms"]) == 2
        assert row["latency_ms"] == pytest.approx(statistics.median(row["latency_runs_ms"]), rel=1e-9)
        # speed-up = AR latency / this latency, at the same batch size; the throughput follows from the latency.
        for field, baseline in (("speedup_vs_ar_greedy", "AR greedy"), ("speedup_vs_ar_beam", "AR beam 4")):
            assert row[field] == pytest.approx(table[(baseline, size)]["latency_ms"] / row["latency_ms"], rel=1e-9)
        sentences_per_batch = 1 if size == 1 else SENTENCES / math.ceil(SENTENCES / BATCH)
        assert row["sentences_per_s"] == pytest.approx(1000 * sentences_per_batch / row["latency_ms"], rel=1e-9)
        assert row["num_sentences"] == (LATENCY_SENTENCES if size == 1 else SENTENCES)
    assert table[("AR greedy", 1)]["speedup_vs_ar_greedy"] == 1.0 and table[("AR beam 4", BATCH)]["speedup_vs_ar_beam"] == 1.0
    return table


def check_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_models_report_every_system_speed_only(benchmark, tmp_path, capsys):
    output, figures = tmp_path / "rows.json", tmp_path / "figures"
    returned = benchmark.main(["--quick", "--config_overrides", TINY, "--vocab_size", "300", "--tokenizer_pairs", "300",
                               *SMALL, "--output", str(output), "--figures", str(figures)])  # fmt: skip
    rows = json.loads(output.read_text())
    assert rows == json.loads(json.dumps(returned))
    table = check_rows(rows, SYSTEMS)
    assert all(row["bleu"] is None and row["repetition_ratio"] is None for row in table.values())

    train = {row["system"]: row for row in rows if row["kind"] == "train"}
    assert set(train) == {"GLAT training step (2 passes)", "NAT training step", "AR training step"}
    nat = train["NAT training step"]
    for row in train.values():
        assert row["tokens_per_s"] == pytest.approx(row["target_tokens"] / (row["step_ms"] / 1000), rel=1e-9)
        assert row["ratio_vs_nat"] == pytest.approx(row["step_ms"] / nat["step_ms"], rel=1e-9)
        assert row["target_tokens"] == nat["target_tokens"] > 0 and row["batch_size"] == 6
    check_png(figures / "speedup.png")
    assert not (figures / "bleu_vs_speedup.png").exists()  # no BLEU without trained models

    printed = capsys.readouterr().out
    assert all(name in printed for name in SYSTEMS) and "Training cost" in printed


def test_trained_models_add_bleu_repetition_and_the_nat_row(benchmark, tmp_path, multi30k_dir):
    sources, targets = read_pairs(multi30k_dir, count=300)
    tokenizer = tokenizer_for(sources + targets, vocab_size=400)
    vocab = len(tokenizer)
    torch.manual_seed(0)
    folders = {"glat": tiny_model(vocab), "ctc": tiny_model(vocab, use_ctc=True), "nat": tiny_model(vocab),
               "ar": tiny_marian(vocab)}  # fmt: skip
    flags = []
    for kind, model in folders.items():
        model.save_pretrained(tmp_path / kind)
        tokenizer.save_pretrained(tmp_path / kind)
        flags += [f"--{kind}_model", str(tmp_path / kind)]
    output, figures, predictions = tmp_path / "rows.json", tmp_path / "figures", tmp_path / "predictions"
    benchmark.main([*flags, *SMALL, "--int8", "--bf16", "--no_training_cost", "--output", str(output),
                    "--figures", str(figures), "--predictions", str(predictions)])  # fmt: skip
    rows = json.loads(output.read_text())
    assert not [row for row in rows if row["kind"] == "train"]

    for variant in ("fp32", "int8", "bf16"):
        table = check_rows(rows, SYSTEMS + ["NAT"], variant)
        for (name, size), row in table.items():
            assert 0.0 <= row["bleu"] <= 100.0 and 0.0 <= row["repetition_ratio"] <= 1.0, name
            buckets = row["bleu_by_length"]
            assert sum(bucket["count"] for bucket in buckets) == SENTENCES
            other = table[(name, 1 if size == BATCH else BATCH)]  # both rows carry the quality of the batch pass
            assert all(row[key] == other[key] for key in ("bleu", "repetition_ratio", "bleu_by_length"))

    # The translations are the model's own, back in the order of the sentences (the batches are sorted by length),
    # and BLEU is theirs against the references.
    test_sources, references = read_pairs(multi30k_dir, split="test_2016_flickr", count=SENTENCES)
    for name, folder, kwargs in (("GLAT NPD m=3", "glat", {"length_beam_size": 3}), ("AR greedy", "ar", {})):
        model = benchmark.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / folder).eval()
        generated = [model.generate(**tokenizer([text], return_tensors="pt", truncation=True, max_length=32), **kwargs)
                     for text in test_sources]  # fmt: skip
        expected = [decode_ids(tokenizer, ids)[0] for ids in generated]
        lengths = [sum(t not in tokenizer.all_special_ids for t in ids[0].tolist()) for ids in generated]
        assert decode_rows(rows)[(name, BATCH)]["output_tokens"] == pytest.approx(sum(lengths) / len(lengths))
        written = (predictions / f"{benchmark.slug(name)}.fp32.txt").read_text(encoding="utf-8").split("\n")[:-1]
        if folder == "glat":  # GLAT copies its source, so its random translations differ; the AR's need not
            assert len(set(expected)) > SENTENCES // 2, "the order check needs translations that differ"
        assert written == expected, name
        assert decode_rows(rows)[(name, BATCH)]["bleu"] == pytest.approx(corpus_bleu(written, references)["score"])
    assert len(list(predictions.glob("*.txt"))) == 3 * len(SYSTEMS + ["NAT"])  # fp32, int8, bf16

    for name in ("speedup.png", "bleu_vs_speedup.png", "bleu_by_length.png"):
        check_png(figures / name)


def test_cpu_memory_sees_a_large_temporary_tensor(benchmark):
    memory = benchmark.CpuMemory()
    for _ in range(3):  # from the second time glibc serves the block from its heap, where malloc_trim lets it count
        with memory:
            block = torch.ones(16 * 2**20 // 4)  # 16 MiB, written
            del block
        assert memory.peak_mb >= 15
    small = [torch.ones(2**20 // 4) for _ in range(40)]  # 40 x 1 MiB, freed into the heap
    del small
    with memory:
        pass
    assert memory.peak_mb < 20
