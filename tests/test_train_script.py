"""training/train.py and training/average_checkpoints.py end to end, on a tiny model and real Multi30k pairs.

Every run is a subprocess (`python training/train.py ...` or `accelerate launch ...`), offline, reading
Multi30k through GLAT_DATA_DIR, as a user would run them.
"""

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_script
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForSeq2SeqLM

import glat_hf  # noqa: F401  (registers "glat" with the Auto classes)

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "training" / "train.py"
AVERAGE = REPO / "training" / "average_checkpoints.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"

TRAIN_SAMPLES, EVAL_SAMPLES, PREDICT_SAMPLES, BATCH = 200, 40, 30, 8
TINY = [
    "--config_overrides",
    "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64",
    *f"--vocab_size 500 --max_train_samples {TRAIN_SAMPLES} --max_eval_samples {EVAL_SAMPLES} --max_predict_samples "
    f"{PREDICT_SAMPLES} --max_source_length 48 --max_target_length 48 --per_device_train_batch_size {BATCH} "
    "--per_device_eval_batch_size 16 --learning_rate 1e-3 --logging_steps 1 --seed 0 --disable_tqdm true".split(),
]
# 20 steps, a checkpoint and an evaluation every 10, NPD over 2 lengths.
CHECKPOINTED = "--max_steps 20 --save_steps 10 --eval_strategy steps --eval_steps 10 --length_beam_size 2".split()
TWO_CPU_PROCESSES = "--num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no".split()
FULL_RUN = ["--do_train", "--do_eval", "--do_predict", "--predict_with_generate"]


def run(args, multi30k_dir, launcher=(sys.executable,), check=True, data_dir=None):
    env = dict(os.environ, GLAT_DATA_DIR=str(data_dir or multi30k_dir.parent), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [*map(str, launcher), str(TRAIN), *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, f"train.py failed (exit {result.returncode}):\n{output[-6000:]}"
    return result.returncode, output


def train_log(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "training_log.json").read_text())


def step_logs(output_dir: Path, key: str) -> dict[int, dict]:
    return {entry["step"]: entry for entry in train_log(output_dir) if key in entry}


@pytest.fixture(scope="module")
def glat_run(tmp_path_factory, multi30k_dir):
    """One 1-process GLAT run: 20 steps, a checkpoint every 10, evaluate, predict; shared by several tests."""
    output_dir = tmp_path_factory.mktemp("glat") / "run"
    _, output = run(
        [
            "--output_dir",
            output_dir,
            *FULL_RUN,
            *TINY,
            *CHECKPOINTED,
        ],
        multi30k_dir,
    )
    return output_dir, output


def test_glat_run_trains_evaluates_predicts_and_saves(glat_run, multi30k_dir):
    output_dir, output = glat_run
    assert "world size 1" in output
    results = json.loads((output_dir / "all_results.json").read_text())
    assert "eval_bleu" in results and results["eval_samples"] == EVAL_SAMPLES
    predict = json.loads((output_dir / "predict_results.json").read_text())
    assert isinstance(predict["predict_bleu"], float) and predict["predict_bleu_signature"].startswith("nrefs:1")
    lines = (output_dir / "generated_predictions.txt").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == PREDICT_SAMPLES
    assert "Summary" in output and "->" in output and str(output_dir) in output
    card = ModelCard.load(output_dir / "README.md")  # the model card (model_cards/), written after predict
    assert card.data.eval_results[0].metric_value == round(predict["predict_bleu"], 2)
    assert card.data.language == ["en", "de"] and "non-autoregressive" in card.data.tags and "λ schedule" in card.text

    model = AutoModelForSeq2SeqLM.from_pretrained(output_dir)
    assert type(model).__name__ == "GlatForConditionalGeneration"
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "tokenizer.json").is_file()
    assert model.generation_config.length_beam_size == 2  # --length_beam_size survives save/load
    assert model.config.max_target_length == 48 and model.config.d_model == 32

    logs = step_logs(output_dir, "loss")
    assert sorted(logs) == list(range(1, 21))
    for key in ("glancing_ratio", "glanced_fraction", "first_pass_accuracy", "length_accuracy"):
        assert all(key in entry for entry in logs.values()), key
    assert logs[1]["glancing_ratio"] == pytest.approx(0.5) and logs[20]["glancing_ratio"] < 0.32  # 0.5 -> 0.3
    assert [entry["step"] for entry in train_log(output_dir) if "eval_bleu" in entry][:2] == [10, 20]


def test_resume_continues_from_checkpoint(glat_run, multi30k_dir, tmp_path):
    """Resuming from checkpoint-10 into a fresh folder ends at step 20 with the same λ (and losses) step by step."""
    uninterrupted, _ = glat_run
    resumed = tmp_path / "resumed"
    run(
        [
            "--output_dir",
            resumed,
            *FULL_RUN,
            *TINY,
            *CHECKPOINTED,
            "--resume_from_checkpoint",
            uninterrupted / "checkpoint-10",
        ],
        multi30k_dir,
    )
    assert json.loads((resumed / "trainer_state.json").read_text())["global_step"] == 20
    before, after = step_logs(uninterrupted, "loss"), step_logs(resumed, "loss")
    assert sorted(after) == list(range(1, 21))  # the history up to step 10 comes with the checkpoint
    for step in range(11, 21):
        assert after[step]["glancing_ratio"] == before[step]["glancing_ratio"]
        assert after[step]["loss"] == before[step]["loss"]  # resumption is exact (tests/test_resume.py)


def test_average_last_two_checkpoints(glat_run, tmp_path):
    run_dir, _ = glat_run
    output = tmp_path / "averaged"
    result = subprocess.run(
        [sys.executable, str(AVERAGE), str(run_dir), "--last", "2", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    first, second = (load_file(run_dir / f"checkpoint-{step}" / "model.safetensors") for step in (10, 20))
    model = AutoModelForSeq2SeqLM.from_pretrained(output)
    averaged = model.state_dict()
    for name in first:
        assert torch.allclose(averaged[name], (first[name] + second[name]) / 2, atol=1e-6), name
    assert (output / "tokenizer.json").is_file() and model.generation_config.length_beam_size == 2

    best = subprocess.run(
        [sys.executable, str(AVERAGE), str(run_dir), "--best", "1", "--output", str(tmp_path / "best")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert best.returncode == 0, best.stderr
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "best") is not None


def test_average_best_without_scores_is_a_clear_error(multi30k_dir, tmp_path):
    run(["--output_dir", tmp_path, "--do_train", *TINY, "--max_steps", 4, "--save_steps", 2], multi30k_dir)
    result = subprocess.run(
        [sys.executable, str(AVERAGE), str(tmp_path), "--best", "2"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "no checkpoint has an eval_bleu" in result.stderr


def test_two_process_cpu_run(multi30k_dir, tmp_path):
    """accelerate launch --multi_gpu on CPU: two gloo ranks share the data (an epoch takes half the steps)."""
    launcher = (ACCELERATE, "launch", "--multi_gpu", *TWO_CPU_PROCESSES, "--main_process_port", 29533)
    max_steps = 10
    _, output = run(
        ["--output_dir", tmp_path, *FULL_RUN, *TINY, "--max_steps", max_steps], multi30k_dir, launcher=launcher
    )
    assert "world size 2" in output
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert state["global_step"] == max_steps
    assert state["epoch"] == pytest.approx(max_steps / math.ceil(TRAIN_SAMPLES / (2 * BATCH)))
    assert "eval_bleu" in json.loads((tmp_path / "eval_results.json").read_text())
    assert len((tmp_path / "generated_predictions.txt").read_text(encoding="utf-8").splitlines()) == PREDICT_SAMPLES
    assert AutoModelForSeq2SeqLM.from_pretrained(tmp_path) is not None


def test_cpu_launch_with_two_processes_is_refused(multi30k_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2` starts one process: the script says so instead of training."""
    launcher = (ACCELERATE, "launch", "--cpu", *TWO_CPU_PROCESSES)
    code, output = run(
        ["--output_dir", tmp_path, "--do_train", *TINY, "--max_steps", 2], multi30k_dir, launcher=launcher, check=False
    )
    assert code != 0 and "world size mismatch" in output
    assert not (tmp_path / "model.safetensors").exists()


def test_nat_trains_without_glancing(multi30k_dir, tmp_path):
    schedule = ["--lr_scheduler_type", "warmup_stable_decay", "--lr_decay_fraction", 0.5]  # the recipes' schedule
    run(
        ["--output_dir", tmp_path, "--do_train", "--model_type", "nat", *TINY, "--max_steps", 4, *schedule],
        multi30k_dir,
    )
    logs = step_logs(tmp_path, "loss")
    assert len(logs) == 4
    assert all("glancing_ratio" not in entry and "glanced_fraction" not in entry for entry in logs.values())
    assert all("length_accuracy" in entry for entry in logs.values())
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert (
        "# NAT-base" in card
        and "warmup_stable_decay schedule (held, then a cosine decay over the last 2 steps)" in card
    )
    assert json.loads((tmp_path / "training_args.json").read_text())["lr_scheduler_kwargs"] == {"num_decay_steps": 2}


def test_ar_baseline_and_reranked_glat_prediction(glat_run, multi30k_dir, tmp_path):
    """An ar run trains a MarianMTModel; it then reranks a saved GLAT model's NPD candidates (predict only)."""
    glat_dir, _ = glat_run
    ar_dir = tmp_path / "ar"
    run(
        [
            "--output_dir",
            ar_dir,
            *FULL_RUN,
            "--model_type",
            "ar",
            "--tokenizer_name",
            glat_dir,
            *TINY,
            "--max_steps",
            4,
            "--generation_num_beams",
            2,
            "--label_smoothing_factor",
            0.1,
        ],
        multi30k_dir,
    )
    config = json.loads((ar_dir / "config.json").read_text())
    assert config["model_type"] == "marian" and config["architectures"] == ["MarianMTModel"]
    assert type(AutoModelForSeq2SeqLM.from_pretrained(ar_dir)).__name__ == "MarianMTModel"
    assert "eval_bleu" in json.loads((ar_dir / "all_results.json").read_text())
    assert "marian" in ModelCard.load(ar_dir / "README.md").data.tags

    reranked = tmp_path / "reranked"
    run(
        [
            "--output_dir",
            reranked,
            "--do_predict",
            "--predict_with_generate",
            "--model_name_or_path",
            glat_dir,
            "--reranker_name_or_path",
            ar_dir,
            "--length_beam_size",
            3,
            "--max_predict_samples",
            PREDICT_SAMPLES,
        ],
        multi30k_dir,
    )
    lines = (reranked / "generated_predictions.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == PREDICT_SAMPLES
    assert "predict_bleu" in json.loads((reranked / "predict_results.json").read_text())


@pytest.mark.parametrize(
    "args, data_dir, message",
    [
        (["--config_overrides", "d_model=32,not_a_field=3"], None, "not_a_field isn't in the original config"),
        (["--config_overrides", "d_model=lots"], None, "invalid literal for int() with base 10: 'lots'"),
        (["--target_lang", "cs"], None, "train.cs"),
        (["--preset", "gpt5"], None, "gpt5"),
        ([], "empty", "holds no multi30k/ folder"),
    ],
    ids=["unknown-override", "mistyped-override", "missing-language", "unknown-preset", "no-data"],
)
def test_wrong_input_is_a_clear_error(args, data_dir, message, multi30k_dir, tmp_path):
    if data_dir:
        data_dir = tmp_path / data_dir
        data_dir.mkdir()
    code, output = run(
        ["--output_dir", tmp_path / "out", "--do_train", "--max_steps", 1, *args],
        multi30k_dir,
        check=False,
        data_dir=data_dir,
    )
    assert code != 0 and message in output, output[-3000:]


def test_non_empty_output_dir_needs_overwrite(multi30k_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    code, output = run(["--output_dir", tmp_path, "--do_train", "--max_steps", 1], multi30k_dir, check=False)
    assert code != 0 and "overwrite_output_dir" in output
    code, output = run(
        ["--output_dir", tmp_path / "new", "--do_train", "--resume_from_checkpoint", "true"], multi30k_dir, check=False
    )
    assert code != 0 and "no checkpoint" in output


def train_commands_of_the_results() -> list[list[str]]:
    """The arguments of each distinct train.py command in results/*.json (a row's command joins its steps with &&)."""
    commands = []
    for path in sorted((REPO / "results").glob("multi30k_*.json")):
        for row in json.loads(path.read_text()):
            step = []
            for word in [*shlex.split(row.get("command", "")), "&&"]:
                if word != "&&":
                    step.append(word)
                    continue
                if step[1:2] == ["training/train.py"] and step[2:] not in commands:
                    commands.append(step[2:])
                step = []
    return commands


def test_the_results_train_commands_still_parse(monkeypatch):
    """Each result row's training command runs with today's train.py and recipes: a recipe that changes a default
    must not silently change (or break) what an earlier row's command trains; those rows state the old value."""
    monkeypatch.chdir(REPO)
    train = load_script("training/train.py")
    commands = train_commands_of_the_results()
    assert len(commands) > 20
    for arguments in commands:
        train.parse_arguments(arguments)


@pytest.mark.parametrize("recipe", sorted((REPO / "training" / "recipes").glob("*.json")), ids=lambda path: path.stem)
def test_recipes_parse(recipe):
    """Every recipe is a valid argument file, and command-line flags after it override it."""
    train = load_script("training/train.py")
    model_args, data_args, training_args = train.parse_arguments([str(recipe), "--max_steps", "7"])
    assert training_args.max_steps == 7 and training_args.use_cpu == (not torch.cuda.is_available())
    assert training_args.output_dir and model_args.model_type in ("glat", "nat", "ar")
    if model_args.model_type != "ar":
        assert training_args.label_smoothing_factor == 0
