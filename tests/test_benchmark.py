"""training/benchmark.py in-process, on tiny models and a few Multi30k sentences, and benchmark_report.py on its rows.

Checks the shape of what it reports (every system, every field, ratios that follow from the rows, BLEU with
trained models, tables and figures), never how fast anything is: timings on a shared machine prove nothing.
"""

import contextlib
import importlib.util
import io
import json
import math
import statistics

import pytest
import torch
from helpers import REPO, load_script, read_pairs, tiny_marian, tiny_model, tokenizer_for
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from glat_hf.metrics import corpus_bleu, decode_ids
from glat_hf.modeling_glat import LENGTH_PRIOR_WEIGHT

SYSTEMS = [
    "AR greedy",
    "AR beam 4",
    "GLAT",
    "GLAT NPD m=3",
    "GLAT NPD m=7",
    "GLAT NPD m=3 + AR rerank",
    "GLAT NPD m=7 + AR rerank",
    "GLAT+CTC",
    "GLAT Mask-Predict 4 it.",
    "GLAT Mask-Predict 10 it.",
    "GLAT NPD m=7 + 4 it. + AR rerank",
]
TRAIN_SYSTEMS = {"GLAT training step (2 passes)", "NAT training step", "AR training step"}
DECODE_FIELDS = {"kind", "system", "engine", "variant", "device", "batch_size", "latency_ms", "sentences_per_s"}
DECODE_FIELDS |= {"peak_mem_mb"}
DECODE_FIELDS |= {"speedup_vs_ar_greedy", "speedup_vs_ar_beam", "bleu", "repetition_ratio", "output_tokens"}
TINY = "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2"
TINY += ",encoder_ffn_dim=64,decoder_ffn_dim=64"
SENTENCES, LATENCY_SENTENCES, BATCH, TURN = 12, 3, 8, 2
SMALL = f"--num_sentences {SENTENCES} --latency_sentences {LATENCY_SENTENCES} --batch_size {BATCH} --repeats 2"
SMALL = (SMALL + " --warmup 1 --threads 1 --train_batch_size 6 --train_steps 1").split()
FIGURES = ("speedup.png", "bleu_vs_speedup.png", "bleu_by_length.png")
# CI installs the extra bench; without it the runs leave --ctranslate2 out and its checks are skipped
CT2 = importlib.util.find_spec("ctranslate2") is not None
CT2_FLAG = ["--ctranslate2"] if CT2 else []
needs_ct2 = pytest.mark.skipif(not CT2, reason="CTranslate2 is not installed (pip install glat-hf[bench])")
ORT = importlib.util.find_spec("onnxruntime") is not None  # the extra onnx, which CI installs too
ORT_FLAG = ["--onnxruntime"] if ORT else []
needs_ort = pytest.mark.skipif(not ORT, reason="onnxruntime is not installed (pip install glat-hf[onnx])")
GLAT_SYSTEMS = [name for name in SYSTEMS if not name.startswith("AR")] + ["NAT"]
CT2_SYSTEMS = {(name, variant, size) for name in SYSTEMS[:2] for variant in ("fp32", "int8") for size in (1, BATCH)}


@pytest.fixture(scope="module")
def benchmark():
    return load_script("training/benchmark.py")


@pytest.fixture(scope="module")
def report():
    return load_script("training/benchmark_report.py")


def run_main(module, argv):
    """(what main returns, what it printed)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        returned = module.main([str(arg) for arg in argv])
    return returned, printed.getvalue()


@pytest.fixture(scope="module")
def quick(benchmark, tmp_path_factory):
    """--quick with random models: (rows file, rows returned, printed, every timed pass as (id of its run, the
    sentences of each of its batches))."""
    output = tmp_path_factory.mktemp("quick") / "rows.json"
    flags = ["--config_overrides", TINY, "--vocab_size", 300, "--tokenizer_pairs", 300, "--turn_sentences", TURN]
    passes, timed_pass = [], benchmark.timed_pass

    def recording(decode, batches, device):
        passes.append((id(decode.__self__), [len(batch.indices) for batch in batches]))
        return timed_pass(decode, batches, device)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(benchmark, "timed_pass", recording)
        engines = ["--engine_threads", "ctranslate2=2"] if CT2 else []  # torch's: SMALL's --threads 1
        argv = ["--quick", *flags, "--bf16", *CT2_FLAG, *engines, *SMALL, "--output", output]
        returned, printed = run_main(benchmark, argv)
    return output, returned, printed, passes


@pytest.fixture(scope="module")
def trained(benchmark, tmp_path_factory, multi30k_dir):
    """Tiny models saved to folders, as trained ones are, in three variants: (folder, rows file)."""
    folder = tmp_path_factory.mktemp("trained")
    sources, targets = read_pairs(multi30k_dir, count=300)
    tokenizer = tokenizer_for(sources + targets, vocab_size=400)
    vocab = len(tokenizer)
    torch.manual_seed(0)
    models = {"glat": tiny_model(vocab), "ctc": tiny_model(vocab, use_ctc=True), "nat": tiny_model(vocab)}
    models["ar"] = tiny_marian(vocab)
    flags = []
    for kind, model in models.items():
        model.save_pretrained(folder / kind)
        tokenizer.save_pretrained(folder / kind)
        flags += [f"--{kind}_model", folder / kind]
    output, predictions = folder / "rows.json", folder / "predictions"
    flags += [
        "--int8",
        "--bf16",
        "--no_training_cost",
        "--output",
        output,
        "--predictions",
        predictions,
        *CT2_FLAG,
        *ORT_FLAG,
    ]
    run_main(benchmark, [*flags, *SMALL])
    return folder, output


def decode_rows(rows, variant="fp32", engines=("transformers", "torch")):
    chosen = [
        row for row in rows if row["kind"] == "decode" and row["variant"] == variant and row["engine"] in engines
    ]
    return {(row["system"], row["batch_size"]): row for row in chosen}


def check_rows(rows, systems, variant="fp32"):
    table = decode_rows(rows, variant)
    assert set(table) == {(name, size) for name in systems for size in (1, BATCH)}
    for (name, size), row in table.items():
        assert DECODE_FIELDS <= set(row), f"{name}: missing {DECODE_FIELDS - set(row)}"
        assert row["device"] == "cpu" and row["engine"] == ("transformers" if name.startswith("AR") else "torch")
        assert row["latency_ms"] > 0 and row["peak_mem_mb"] >= 0 and len(row["latency_runs_ms"]) == 2
        assert row["latency_ms"] == pytest.approx(statistics.median(row["latency_runs_ms"]), rel=1e-9)
        # speed-up = AR latency / this latency, at the same batch size; the throughput follows from the latency.
        for field, baseline in (("speedup_vs_ar_greedy", "AR greedy"), ("speedup_vs_ar_beam", "AR beam 4")):
            assert row[field] == pytest.approx(table[(baseline, size)]["latency_ms"] / row["latency_ms"], rel=1e-9)
        sentences_per_batch = 1 if size == 1 else SENTENCES / math.ceil(SENTENCES / BATCH)
        assert row["sentences_per_s"] == pytest.approx(1000 * sentences_per_batch / row["latency_ms"], rel=1e-9)
        assert row["num_sentences"] == (LATENCY_SENTENCES if size == 1 else SENTENCES)
        assert row["output_tokens"] > 0
    assert table[("AR greedy", 1)]["speedup_vs_ar_greedy"] == 1.0
    assert table[("AR beam 4", BATCH)]["speedup_vs_ar_beam"] == 1.0
    return table


def check_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_quick_random_models_report_every_system_speed_only(quick):
    output, returned, printed, _ = quick
    rows = json.loads(output.read_text())
    assert rows == json.loads(json.dumps(returned))
    table = check_rows(rows, SYSTEMS)
    assert all(row["turn_sentences"] == TURN for row in table.values())
    assert all(row["bleu"] is None and row["repetition_ratio"] is None for row in table.values())

    train = {(row["system"], row["variant"]): row for row in rows if row["kind"] == "train"}
    assert set(train) == {(name, variant) for name in TRAIN_SYSTEMS for variant in ("fp32", "bf16")}  # --bf16
    for (_, variant), row in train.items():
        nat = train["NAT training step", variant]  # the ratio within a variant
        assert row["tokens_per_s"] == pytest.approx(row["target_tokens"] / (row["step_ms"] / 1000), rel=1e-9)
        assert row["ratio_vs_nat"] == pytest.approx(row["step_ms"] / nat["step_ms"], rel=1e-9)
        assert row["target_tokens"] == nat["target_tokens"] > 0 and row["batch_size"] == 6
        assert row["step_ms"] == pytest.approx(statistics.median(row["step_runs_ms"]), rel=1e-9)
    assert all(name in printed for name in [*SYSTEMS, *TRAIN_SYSTEMS])  # a line a row as it goes


def test_systems_take_turns_every_turn_sentences(quick):
    """At batch size 1 each system decodes TURN sentences back to back, then the next one; a batch of BATCH > TURN
    sentences is a turn of its own. Every system decodes every sentence once a repeat."""
    passes = quick[3]
    runs = list(dict.fromkeys(run for run, _ in passes))
    turns = [[1] * TURN, [1] * (LATENCY_SENTENCES - TURN), [BATCH], [SENTENCES - BATCH]]  # 3 sentences, 2 batches
    timed = passes[-len(runs) * len(turns) * 2 :]  # the two repeats (--repeats 2), after warm-up and memory passes
    assert [sizes for _, sizes in timed] == [sizes for sizes in turns for _ in runs] * 2
    assert [run for run, _ in timed] == runs * len(turns) * 2


@needs_ct2
def test_quick_ctranslate2_adds_its_ar_rows_and_the_speedup_over_its_int8_greedy(quick):
    rows = [row for row in json.loads(quick[0].read_text()) if row["kind"] == "decode"]
    ct2 = {(row["system"], row["variant"], row["batch_size"]): row for row in rows if row["engine"] == "ctranslate2"}
    assert set(ct2) == CT2_SYSTEMS
    transformers = decode_rows(rows)
    for (_, _, size), row in ct2.items():
        assert DECODE_FIELDS <= set(row) and row["latency_ms"] > 0 and row["output_tokens"] > 0
        assert row["bleu"] is None and row["trained"] is False  # random models: speed only
        # no --int8: CTranslate2's int8 is held to transformers' fp32
        baseline = transformers[("AR greedy", size)]["latency_ms"]
        assert row["speedup_vs_ar_greedy"] == pytest.approx(baseline / row["latency_ms"], rel=1e-9)
    for row in rows:  # every row, at its batch size
        int8_greedy = ct2[("AR greedy", "int8", row["batch_size"])]["latency_ms"]
        assert row["speedup_vs_ct2_int8_greedy"] == pytest.approx(int8_greedy / row["latency_ms"], rel=1e-9)
    assert "[ctranslate2 int8] AR beam 4, batch size 8" in quick[2]
    assert {row["threads"] for row in ct2.values()} == {2}  # --engine_threads ctranslate2=2
    assert {row["threads"] for row in rows if row["engine"] != "ctranslate2"} == {1}  # --threads 1


@pytest.mark.parametrize("spec", ["ctranslate2=0", "onnxruntime=two", "marian=1", "ctranslate2"])
def test_engine_threads_are_checked_before_anything_runs(benchmark, spec, capsys):
    with pytest.raises(SystemExit) as error:
        benchmark.parse_args(["--quick", "--engine_threads", spec])
    assert error.value.code == 2 and "--engine_threads" in capsys.readouterr().err


def test_report_prints_the_tables_and_the_speedup_figure_of_random_rows(report, quick, tmp_path):
    written, printed = run_main(report, [quick[0], "--figures", tmp_path])
    figures = ["speedup.png", "speedup_vs_ct2.png"] if CT2 else ["speedup.png"]
    assert written == [tmp_path / name for name in figures]  # no BLEU without trained models
    for path in written:
        check_png(path)
    table = printed.split("Training cost")[0]
    width = report.SYSTEM_WIDTH
    assert max(map(len, SYSTEMS)) <= width, "a system name wider than the report's column shifts its row"
    engines = [("transformers" if name.startswith("AR") else "torch") for name in SYSTEMS]
    assert all(f"\n{name:<{width}} {engine:<23} fp32" in table for name, engine in zip(SYSTEMS, engines))
    if CT2:
        assert "xct2i8" in table.splitlines()[2]
        assert all(
            f"\n{name:<{width}} {'ctranslate2':<23} {variant:<7} |" in table for name, variant, _ in CT2_SYSTEMS
        )
    training = printed.split("Training cost")[1]
    assert all(f"\n{name:<30} {variant:<7} |" in training for name in TRAIN_SYSTEMS for variant in ("fp32", "bf16"))


def test_trained_models_add_bleu_repetition_and_the_nat_row(benchmark, trained, multi30k_dir):
    folder, output = trained
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

    # The translations are the model's own, in the order of the sentences (batches are sorted by length), and BLEU
    # is theirs against the references; output_tokens counts the tokens of the timed batches' outputs.
    test_sources, references = read_pairs(multi30k_dir, split="test_2016_flickr", count=SENTENCES)
    tokenizer = AutoTokenizer.from_pretrained(folder / "glat")
    for name, kind, kwargs in (("GLAT NPD m=3", "glat", {"length_beam_size": 3}), ("AR greedy", "ar", {})):
        model = AutoModelForSeq2SeqLM.from_pretrained(folder / kind).eval()
        generated = []
        for text in test_sources:  # one at a time, cut as the benchmark cuts them (the CTC model holds 32 tokens)
            inputs = tokenizer([text], return_tensors="pt", truncation=True, max_length=32)
            generated.append(model.generate(**inputs, **kwargs))
        expected = [" ".join(decode_ids(tokenizer, ids)[0].split()) for ids in generated]
        lengths = [sum(t not in tokenizer.all_special_ids for t in ids[0].tolist()) for ids in generated]
        assert decode_rows(rows)[(name, BATCH)]["output_tokens"] == pytest.approx(sum(lengths) / len(lengths))
        written = (folder / "predictions" / f"{benchmark.slug(name)}.fp32.txt").read_text(encoding="utf-8")
        written = written.split("\n")[:-1]
        if kind == "glat":  # GLAT copies its source, so its random translations differ; the AR's need not
            assert len(set(expected)) > SENTENCES // 2, "the order check needs translations that differ"
        assert written == expected, name
        assert decode_rows(rows)[(name, BATCH)]["bleu"] == pytest.approx(corpus_bleu(written, references)["score"])
    ct2_files = 4 if CT2 else 0  # AR greedy and beam 4 of CTranslate2, fp32 and int8
    ort_files = 2 * len(GLAT_SYSTEMS) if ORT else 0  # every GLAT system on ONNX Runtime, fp32 and int8
    assert len(list((folder / "predictions").glob("*.txt"))) == 3 * len(SYSTEMS + ["NAT"]) + ct2_files + ort_files
    if CT2:  # the trained AR model's, through CTranslate2; with --int8, int8 is held to transformers' int8
        ct2 = decode_rows(rows, "int8", engines=("ctranslate2",))
        assert set(ct2) == {(name, size) for name in SYSTEMS[:2] for size in (1, BATCH)}
        assert all(0.0 <= row["bleu"] <= 100.0 for row in ct2.values())
        baseline = decode_rows(rows, "int8")[("AR greedy", BATCH)]["latency_ms"]
        assert ct2[("AR greedy", BATCH)]["speedup_vs_ar_greedy"] == pytest.approx(
            baseline / ct2[("AR greedy", BATCH)]["latency_ms"]
        )
        assert (folder / "predictions" / "ar_greedy.int8.ctranslate2.txt").is_file()


@needs_ort
def test_onnxruntime_rows_translate_as_pytorch_in_fp32_and_carry_their_speedups(benchmark, trained):
    """Every GLAT system on ONNX Runtime, fp32 and int8; in fp32 its translations are PyTorch's, word for word
    (its NPD is reranked by CTranslate2's conversion of the AR model, which scores as the PyTorch model does, or
    without --ctranslate2 by the PyTorch model)."""
    folder, output = trained
    rows = json.loads(output.read_text())
    torch_rows = decode_rows(rows)
    for variant in ("fp32", "int8"):
        table = decode_rows(rows, variant, engines=("onnxruntime",))
        assert set(table) == {(name, size) for name in GLAT_SYSTEMS for size in (1, BATCH)}
        for (name, size), row in table.items():
            assert DECODE_FIELDS <= set(row) and row["latency_ms"] > 0 and row["trained"] is True
            if "AR rerank" in name:
                assert row["reranker_engine"] == ("ctranslate2" if CT2 else "transformers")
                assert torch_rows[(name, size)]["reranker_engine"] == "transformers"
            else:
                assert "reranker_engine" not in row
            # NPD ranked by GLAT itself records the length prior it ranked with: the trained model's generation config
            assert row.get("length_prior_weight") == (
                LENGTH_PRIOR_WEIGHT if "NPD" in name and "AR" not in name else None
            )
            # with --int8, int8 rows are held to transformers' int8 AR; fp32 to fp32
            baseline = decode_rows(rows, variant)[("AR greedy", size)]["latency_ms"]
            assert row["speedup_vs_ar_greedy"] == pytest.approx(baseline / row["latency_ms"], rel=1e-9)
            if variant == "fp32":
                assert row["bleu"] == pytest.approx(torch_rows[(name, size)]["bleu"]), name
                written = [
                    folder / "predictions" / f"{benchmark.slug(name)}.fp32{end}.txt" for end in ("", ".onnxruntime")
                ]
                assert written[0].read_text(encoding="utf-8") == written[1].read_text(encoding="utf-8"), name
    assert "[onnxruntime int8] GLAT+CTC, batch size 8" in " ".join(map(benchmark.summary, rows))


def test_report_draws_the_three_figures_of_trained_rows(report, trained, tmp_path):
    written, printed = run_main(report, [trained[1], "--figures", tmp_path])
    figures = [FIGURES[0], "speedup_vs_ct2.png", *FIGURES[1:]] if CT2 else FIGURES
    assert written == [tmp_path / name for name in figures]
    for path in written:
        check_png(path)
    engines = {name: "transformers" if name.startswith("AR") else "torch" for name in SYSTEMS}
    width = report.SYSTEM_WIDTH
    assert all(
        f"\n{name:<{width}} {engines[name]:<23} {variant:<7} |" in printed
        for name in SYSTEMS
        for variant in ("fp32", "int8", "bf16")
    )
    if ORT and CT2:  # ONNX Runtime's GLAT, reranked by CTranslate2's AR model
        assert f"\n{'GLAT NPD m=7 + AR rerank':<{width}} {'onnxruntime+ctranslate2':<23} int8    |" in printed
    assert "Training cost" not in printed


def test_report_reads_the_committed_cpu_results(report):
    _, printed = run_main(report, [REPO / "results" / "benchmark_cpu.json"])
    width = report.SYSTEM_WIDTH
    assert (
        "GLAT training step (2 passes)" in printed and f"\n{'GLAT':<{width}} {'onnxruntime':<23} int8    |" in printed
    )


def test_benchmark_script_stays_short():
    assert len((REPO / "training" / "benchmark.py").read_text().splitlines()) <= 500
