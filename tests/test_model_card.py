"""model_cards/: the README.md model card of an output folder, and the explicit push to the Hub.

The folders here are made the way train.py leaves them (save_pretrained, *_results.json, trainer_state.json,
training_log.json, training_args.json) but without training, so every model variant is cheap;
tests/test_train_script.py checks the card that a real train.py run writes.
"""

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_pairs, tiny_marian, tiny_model, tokenizer_for
from huggingface_hub import ModelCard
from transformers import GenerationConfig

from glat_hf import GlatConfig, GlatTrainingArguments
from model_cards import ModelCardError, build_model_card, push_to_hub, write_model_card
from model_cards.model_card import main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "model_cards" / "model_card.py"
PREDICT_BLEU, EVAL_BLEU, STEPS = 12.3456, 11.0987, 20
SIGNATURE = "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"
BENCHMARK = [  # as training/benchmark.py --output writes them (fewer keys)
    {
        "kind": "decode",
        "system": "AR greedy",
        "device": "cpu",
        "batch_size": 1,
        "latency_ms": 50.2,
        "sentences_per_s": 19.9,
        "speedup_vs_ar_greedy": 1.0,
        "bleu": None,
        "bleu_by_length": None,
    },
    {
        "kind": "decode",
        "system": "GLAT",
        "device": "cpu",
        "batch_size": 1,
        "latency_ms": 6.5,
        "sentences_per_s": 153.8,
        "speedup_vs_ar_greedy": 7.72,
        "bleu": None,
        "bleu_by_length": None,
    },
    {
        "kind": "train",
        "system": "GLAT training step (2 passes)",
        "variant": "fp32",
        "device": "cpu",
        "batch_size": 64,
        "step_ms": 120.5,
        "tokens_per_s": 9000.0,
        "ratio_vs_nat": 1.61,
        "step_runs_ms": [120.5, 121.0],
    },
]


@pytest.fixture(scope="module")
def tokenizer(multi30k_dir):
    sources, targets = read_pairs(multi30k_dir, count=100)
    return tokenizer_for(sources + targets, vocab_size=200)


def make_output_folder(folder: Path, tokenizer, kind: str = "glat", **glancing) -> Path:
    """A saved model with the files a train.py run (train, eval, predict) leaves beside it."""
    if kind == "ar":
        model = tiny_marian(vocab_size=len(tokenizer))
        model.generation_config = GenerationConfig(
            max_length=40, num_beams=1, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0
        )
    else:
        model = tiny_model(vocab_size=len(tokenizer), use_ctc=kind == "ctc")
        if kind != "ctc":  # CTC has no length predictor to beam over
            model.generation_config.length_beam_size = 2
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if kind == "nat":
        glancing["glancing"] = "none"
    args = GlatTrainingArguments(
        output_dir=str(folder),
        max_steps=STEPS,
        learning_rate=1e-3,
        per_device_train_batch_size=8,
        warmup_steps=2,
        seed=7,
        use_cpu=True,
        report_to="none",
        **glancing,
    )
    (folder / "training_args.json").write_text(json.dumps(args.to_dict(), indent=2))  # as train.py does
    results = {
        "train": {"train_samples": 200, "epoch": 0.8, "train_runtime": 12.0},
        "eval": {"eval_bleu": EVAL_BLEU, "eval_samples": 40, "eval_repetition_ratio": 0.04},
        "predict": {
            "predict_bleu": PREDICT_BLEU,
            "predict_bleu_signature": SIGNATURE,
            "predict_samples": 30,
            "predict_repetition_ratio": 0.0512,
        },
    }
    for stage, values in results.items():
        (folder / f"{stage}_results.json").write_text(json.dumps(values))
    (folder / "all_results.json").write_text(
        json.dumps({k: v for values in results.values() for k, v in values.items()})
    )
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": STEPS, "max_steps": STEPS, "epoch": 0.8}))
    log = [{"loss": 5.0, "step": step} for step in range(1, STEPS + 1)]
    if kind != "nat" and kind != "ar":
        for entry in log:
            entry.update(
                glancing_ratio=0.5 - 0.2 * (entry["step"] - 1) / STEPS, glanced_fraction=0.3, first_pass_accuracy=0.2
            )
    (folder / "training_log.json").write_text(json.dumps(log))
    return folder


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def write(folder, **options):
    options = {"source_lang": "en", "target_lang": "de", "dataset": "multi30k", **options}
    return ModelCard.load(write_model_card(folder, **options))


def test_glat_card_metadata_parses_with_huggingface_hub(tokenizer, tmp_path):
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    card = write(folder)
    data = card.data.to_dict()
    assert data["language"] == ["en", "de"] and data["license"] == "apache-2.0"
    assert {"translation", "non-autoregressive", "glat"} <= set(data["tags"])
    assert data["datasets"] == ["multi30k"] and data["pipeline_tag"] == "translation"
    (index,) = data["model-index"]
    (result,) = index["results"]  # the test set only: validation BLEU chose the checkpoint
    assert result["task"]["type"] == "translation"
    assert result["dataset"]["type"] == "multi30k" and result["dataset"]["split"] == "test_2016_flickr"
    (metric,) = result["metrics"]
    assert metric["type"] == "bleu" and metric["value"] == round(PREDICT_BLEU, 2)
    assert metric["args"]["signature"] == SIGNATURE
    assert card.data.eval_results[0].metric_value == round(PREDICT_BLEU, 2)
    body = card.text
    assert "| Multi30k | test_2016_flickr | 12.35 |" in body and "| Multi30k | val | 11.10 |" in body
    assert "NPD over 2 lengths" in body and "5.1%" in body  # decoding from the generation config, repetition
    assert "Qian" in body and "@inproceedings{qian-etal-2021-glancing" in body


def test_usage_section_runs(tokenizer, tmp_path):
    """The card's python block is runnable as written: from_pretrained, generate with NPD, the pipeline."""
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    card = write(folder)
    (usage,) = python_blocks(card.text)
    assert "AutoModelForSeq2SeqLM.from_pretrained" in usage and 'pipeline("glat-translation"' in usage
    assert "import glat_hf" in usage and "length_beam_size=5" in usage
    exec(compile(usage, "usage", "exec"), {})


def test_the_saved_length_prior_weight_is_stated(tokenizer, tmp_path):
    """A new model's generation config has NPD's length prior; one saved before the key existed ranks without."""
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    assert "log P(length | source); saved default: 0.05)" in write(folder).text
    saved = json.loads((folder / "generation_config.json").read_text())
    del saved["length_prior_weight"]
    (folder / "generation_config.json").write_text(json.dumps(saved))
    assert "log P(length | source); saved default: 0)" in write(folder).text


def test_training_settings_and_lambda_schedule(tokenizer, tmp_path):
    folder = make_output_folder(
        tmp_path / "glat",
        tokenizer,
        glance_selection="p_ref",
        glance_distance="levenshtein",
        glancing_ratio_start=0.6,
        glancing_ratio_end=0.2,
    )
    text = write(folder).text
    assert f"linear 0.6 → 0.2 over {STEPS} steps" in text
    assert "0.500 (step 1) → 0.310 (step 20)" in text  # λ as logged (training_log.json)
    assert "| selection of glanced positions | p_ref |" in text and "| distance d | levenshtein |" in text
    assert "| steps | 20 (0.8 epochs) |" in text and "0.001, linear schedule, 2 warmup steps" in text
    assert "| seed | 7 |" in text and "200 sentence pairs" in text
    assert "| knowledge distillation | not recorded |" in text
    assert "| length loss weight | 0.1 |" in text


def test_non_glanced_length_loss_weighting_is_stated(tokenizer, tmp_path):
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    config = GlatConfig.from_pretrained(folder)
    config.length_loss_weighting = "non_glanced"
    config.save_pretrained(folder)
    text = write(folder).text
    assert (
        "| length loss weight | 0.1 × the share of the batch's target tokens not glanced (the official code) |" in text
    )


def test_constant_schedule(tokenizer, tmp_path):
    folder = make_output_folder(tmp_path / "glat", tokenizer, glancing_schedule="constant")
    assert "| λ schedule | constant 0.5 |" in write(folder).text


def test_own_predictions_as_inputs_are_stated_where_used(tokenizer, tmp_path):
    row = "| pass 1's own words as inputs | in 50% of the sentences, at the most confident positions not glanced"
    assert row in write(make_output_folder(tmp_path / "own", tokenizer, glance_own_predictions=0.5)).text
    assert "own words as inputs" not in write(make_output_folder(tmp_path / "glat", tokenizer)).text


def test_warmup_stable_decay_states_its_decay(tokenizer, tmp_path):
    folder = make_output_folder(
        tmp_path / "glat",
        tokenizer,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"decay_type": "linear", "num_decay_steps": 5},  # as train.py saves them after training
    )
    text = write(folder).text
    assert "0.001, warmup_stable_decay schedule (held, then a linear decay over the last 5 steps), 2 warmup" in text
    assert "| λ schedule | linear 0.5 → 0.3 over" in text


def test_lambda_moved_with_the_learning_rate_decay_is_stated(tokenizer, tmp_path):
    folder = make_output_folder(
        tmp_path / "glat",
        tokenizer,
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"decay_type": "linear", "num_decay_steps": 5},
        glancing_schedule="decay",
        glancing_ratio_end=1.0,
    )
    text = write(folder).text
    assert "| λ schedule | 0.5, then linear 0.5 → 1 while the learning rate decays (the last 5 steps) |" in text


def test_speed_rows_from_a_benchmark_json(tokenizer, tmp_path):
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    text = write(folder).text
    assert "Not measured" in text and "python training/benchmark.py" in text
    benchmark = tmp_path / "benchmark.json"
    benchmark.write_text(json.dumps(BENCHMARK))
    text = write(folder, benchmark=benchmark).text
    assert "| system | device | batch | latency (ms) | sentences/s | speed-up vs AR greedy |\n|---|" in text
    assert (
        "| AR greedy | cpu | 1 | 50.2 | 19.9 | 1.00x |" in text and "| GLAT | cpu | 1 | 6.50 | 153.8 | 7.72x |" in text
    )
    assert "| system | variant | device | batch | step (ms) | target tokens/s | step time vs NAT |" in text
    assert "| GLAT training step (2 passes) | fp32 | cpu | 64 | 120.5 | 9000.0 | 1.61x |" in text
    assert "Not measured" not in text and "BLEU" not in text.split("## Speed")[1].split("## Limitations")[0]


def test_speedup_over_ctranslate2_gets_its_column_where_rows_have_it(tokenizer, tmp_path):
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    rows = [dict(row, engine="onnxruntime", speedup_vs_ct2_int8_greedy=6.25) for row in BENCHMARK[1:2]]
    rows += [dict(BENCHMARK[0], engine="ctranslate2", speedup_vs_ct2_int8_greedy=1.0)]
    benchmark = tmp_path / "benchmark.json"
    benchmark.write_text(json.dumps(rows))
    text = write(folder, benchmark=benchmark).text
    header = "| system | engine | device | batch | latency (ms) | sentences/s | speed-up vs AR greedy | speed-up vs "
    assert header + "CTranslate2 int8 AR greedy |\n|---" in text
    assert "| GLAT | onnxruntime | cpu | 1 | 6.50 | 153.8 | 7.72x | 6.25x |" in text
    assert "| AR greedy | ctranslate2 | cpu | 1 | 50.2 | 19.9 | 1.00x | 1.00x |" in text


@pytest.mark.parametrize("content", [{"rows": BENCHMARK}, [], [["GLAT", 6.5]], "not json {"])
def test_benchmark_of_another_shape_is_a_clear_error(content, tokenizer, tmp_path, capsys):
    """Only the list of rows that training/benchmark.py --output writes is read; anything else names the file."""
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    benchmark = tmp_path / "other.json"
    benchmark.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(ModelCardError, match=re.escape(str(benchmark))):
        build_model_card(folder, source_lang="en", target_lang="de", benchmark=benchmark)
    capsys.readouterr()  # the progress bars of make_output_folder
    assert (
        main(["write", str(folder), "--source_lang", "en", "--target_lang", "de", "--benchmark", str(benchmark)]) == 1
    )
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: --benchmark {benchmark}:") and not (folder / "README.md").exists()


@pytest.mark.parametrize("kind", ["nat", "ctc", "ar"])
def test_other_systems(kind, tokenizer, tmp_path):
    """NAT-base (glancing none), GLAT+CTC and the AR MarianMTModel: each card says what it is and its usage runs."""
    folder = make_output_folder(tmp_path / kind, tokenizer, kind=kind)
    card = write(folder)
    tags, text = set(card.data.tags), card.text
    assert card.data.eval_results[0].metric_value == round(PREDICT_BLEU, 2)
    (usage,) = python_blocks(text)
    if kind == "ar":
        assert "MarianMTModel" in text and "non-autoregressive" not in tags and {"autoregressive", "marian"} <= tags
        assert "### Glancing schedule" not in text and "num_beams=1" in usage
    else:
        assert "non-autoregressive" in tags
    if kind == "nat":
        assert "# NAT-base: en → de" in text
        assert "### Glancing schedule" not in text and "nat" in tags
    if kind == "ctc":
        assert "# GLAT+CTC: en → de" in text and "ctc" in tags and "λ schedule" in text
        assert "length_beam_size" not in usage  # CTC has no length predictor: NPD would raise
        assert "at most 2x the source length" in text and "length loss weight" not in text
    exec(compile(usage, "usage", "exec"), {})


def test_distilled_data_folder_is_recognised(tokenizer, tmp_path):
    """A --data_folder written by distill.py carries distill_results.json: the card says distilled, and by whom."""
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    distilled = tmp_path / "distilled" / "multi30k_en_de"
    distilled.mkdir(parents=True)
    (distilled / "distill_results.json").write_text(
        json.dumps({"teacher": "outputs/multi30k_en_de_ar", "num_beams": 4, "arguments": {"data_folder": None}})
    )
    card = ModelCard.load(
        write_model_card(folder, source_lang="en", target_lang="de", dataset=distilled.name, data_folder=distilled)
    )
    assert card.data.datasets == ["multi30k"] and "knowledge-distillation" in card.data.tags
    assert "| knowledge distillation | yes:" in card.text and "beam-4 translations by multi30k_en_de_ar" in card.text
    assert "which this model was not trained with" not in card.text


def test_cli_write_keeps_earlier_metadata(tokenizer, tmp_path, capsys):
    """Rewriting a card (here: to add a benchmark) keeps the languages, dataset and split it had."""
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    assert main(["write", str(folder)]) == 1
    assert "--source_lang and --target_lang" in capsys.readouterr().err
    assert (
        main(
            [
                "write",
                str(folder),
                "--source_lang",
                "en",
                "--target_lang",
                "de",
                "--dataset",
                "multi30k",
                "--test_split",
                "test_2017_flickr",
                "--distilled",
                "yes",
                "--repo_id",
                "someone/glat-tiny",
            ]
        )
        == 0
    )
    benchmark = tmp_path / "benchmark.json"
    benchmark.write_text(json.dumps(BENCHMARK))
    assert main(["write", str(folder), "--benchmark", str(benchmark)]) == 0
    card = ModelCard.load(folder / "README.md")
    assert card.data.language == ["en", "de"] and card.data.datasets == ["multi30k"]
    assert (
        card.data.eval_results[0].dataset_split == "test_2017_flickr" and card.data.model_name == "someone/glat-tiny"
    )
    assert "| GLAT | cpu |" in card.text
    assert main(["write", str(tmp_path / "missing"), "--source_lang", "en", "--target_lang", "de"]) == 1
    assert "no config.json" in capsys.readouterr().err


def test_push_offline_is_one_clear_message(tokenizer, tmp_path):
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "push", str(folder), "--repo_id", "someone/glat-tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cannot push to the Hub: offline (HF_HUB_OFFLINE=1)" in result.stderr
    assert "Traceback" not in result.stderr and not (folder / "README.md").exists()


def test_push_without_token_is_a_clear_error(tokenizer, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    with pytest.raises(ModelCardError, match="no Hugging Face token.*hf auth login"):
        push_to_hub(folder, "someone/glat-tiny")


class _Trap:
    def __reduce__(self):
        return (open, (os.environ["GLAT_TRAP_FILE"], "w"))  # creates the file when unpickled


def test_training_args_come_from_json_and_no_pickle_is_read(tokenizer, tmp_path, monkeypatch):
    """training_args.json is read; Trainer's pickled training_args.bin beside it is never unpickled."""
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    trap = tmp_path / "trapped"
    monkeypatch.setenv("GLAT_TRAP_FILE", str(trap))
    (folder / "training_args.bin").write_bytes(pickle.dumps(_Trap()))
    args = json.loads((folder / "training_args.json").read_text())
    (folder / "training_args.json").write_text(json.dumps(dict(args, learning_rate=0.25)))
    assert "| learning rate | 0.25, linear schedule" in write(folder).text and not trap.exists()
    pickle.loads((folder / "training_args.bin").read_bytes()).close()  # the trap does fire when unpickled for real
    assert trap.exists()


def test_training_args_object_is_the_fallback(tokenizer, tmp_path):
    """Without training_args.json the arguments object given is used; without either, the settings are left out."""
    folder = make_output_folder(tmp_path / "glat", tokenizer)
    (folder / "training_args.json").unlink()
    assert "records no training settings" in write(folder).text
    args = GlatTrainingArguments(
        output_dir=str(folder),
        max_steps=STEPS,
        learning_rate=3e-4,
        seed=11,
        use_cpu=True,
        report_to="none",
        glancing_schedule="constant",
        glancing_ratio_start=0.4,
    )
    text = write(folder, training_args=args).text
    assert "| seed | 11 |" in text and "3e-04" not in text and "0.0003, linear schedule" in text
    assert "| λ schedule | constant 0.4 |" in text


def test_model_card_py_is_short():
    """model_card.py gathers facts and renders template.md: the card's text lives in the template."""
    lines = SCRIPT.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300 and max(map(len, lines)) <= 119
    assert not any("sys.path" in line or "fmt: skip" in line for line in lines)
