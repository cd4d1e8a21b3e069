"""Interrupted training: SIGKILL a train.py run mid-way, rerun it with
--resume_from_checkpoint true, and get the uninterrupted run's model bit for bit.

Bit-exact holds on CPU because everything random is either restored from the checkpoint or derived
from (seed, step, epoch): Trainer restores the torch/numpy/python generators (rng_state.pth), from
which each step draws its dropout seed (replayed in both glancing passes) and its glancing
positions; λ is a function of the step; the training order is seeded by (seed, epoch), also with
group_by_length (glat_hf.trainer.SeededLengthGroupedSampler); and the same CPU kernels with the same
thread count add in the same order.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glat_hf.checkpoints import resolve_resume_checkpoint
from glat_hf.trainer import SeededLengthGroupedSampler

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "training" / "train.py"

SAMPLES, BATCH, MAX_STEPS, SAVE_STEPS = 32, 8, 12, 3  # 4 steps an epoch; checkpoints at 3, 6, 9, 12
ARGS = [
    "--do_train",
    "--max_steps",
    MAX_STEPS,
    "--save_steps",
    SAVE_STEPS,
    "--config_overrides",
    "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,"
    "decoder_attention_heads=2,encoder_ffn_dim=64,decoder_ffn_dim=64",
    "--vocab_size",
    300,
    "--max_train_samples",
    SAMPLES,
    "--max_source_length",
    32,
    "--max_target_length",
    32,
    "--per_device_train_batch_size",
    BATCH,
    "--learning_rate",
    "1e-3",
    "--logging_steps",
    1,
    "--seed",
    0,
    "--train_sampling_strategy",
    "group_by_length",  # the recipes' sampler: its order must survive the resume too
    "--disable_tqdm",
    "true",
    "--log_level",
    "info",
]


def start(output_dir: Path, *extra) -> subprocess.Popen:
    # One thread: the same sums in every run.
    env = dict(
        os.environ,
        GLAT_DATA_DIR=os.environ.get("GLAT_DATA_DIR", str(REPO.parent / "shared" / "data")),
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
    )
    command = [sys.executable, str(TRAIN), "--output_dir", str(output_dir), *map(str, ARGS), *map(str, extra)]
    log = open(output_dir.parent / f"{output_dir.name}.log", "w")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, output_dir: Path, timeout=240) -> str:
    process.wait(timeout=timeout)
    output = (output_dir.parent / f"{output_dir.name}.log").read_text()
    assert process.returncode == 0, f"train.py into {output_dir} failed (exit {process.returncode}):\n{output[-5000:]}"
    return output


def complete_checkpoints(output_dir: Path) -> list[int]:
    """Steps of the checkpoints whose trainer_state.json (written last by Trainer) is readable."""
    steps = []
    for folder in output_dir.glob("checkpoint-*"):
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        steps.append(int(folder.name.split("-")[1]))
    return sorted(steps)


def step_logs(output_dir: Path) -> dict[int, dict]:
    return {
        entry["step"]: entry for entry in json.loads((output_dir / "training_log.json").read_text()) if "loss" in entry
    }


def test_sigkill_then_resume_gives_the_uninterrupted_model(multi30k_dir, tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    reference = start(uninterrupted)  # runs beside the others: same results, less waiting
    victim = start(interrupted)
    # Kill once a checkpoint in the middle of the second epoch is saved (step 6 = epoch 1, batch 2):
    # resuming there must skip batches of an epoch whose order was drawn after the first one.
    deadline = time.monotonic() + 240
    while victim.poll() is None and not [step for step in complete_checkpoints(interrupted) if step >= 5]:
        assert time.monotonic() < deadline, "no checkpoint after 240 s"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, (
        f"the run ended (exit {victim.returncode}) before it could be killed:\n"
        + (tmp_path / "interrupted.log").read_text()[-3000:]
    )
    assert not (interrupted / "model.safetensors").exists(), "the killed run got to its final save"
    # Its arguments are there from the start: rows of its checkpoints carry the seed.
    assert json.loads((interrupted / "training_args.json").read_text())["seed"] == 0
    resumed_from = max(complete_checkpoints(interrupted))
    assert resumed_from < MAX_STEPS

    # A kill while Trainer writes a checkpoint leaves a folder without trainer_state.json (Trainer writes
    # it last). Make the next checkpoint such a half-written one: resuming must skip it.
    half_written = interrupted / f"checkpoint-{resumed_from + SAVE_STEPS}"
    if not half_written.exists():
        half_written.mkdir()
        weights = (interrupted / f"checkpoint-{resumed_from}" / "model.safetensors").read_bytes()
        (half_written / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    output = finish(start(interrupted, "--resume_from_checkpoint", "true"), interrupted)
    finish(reference, uninterrupted)

    assert f"Skipping {half_written}" in output
    assert f"global step {resumed_from}" in output, "the resumed run did not continue from its last checkpoint"
    assert json.loads((interrupted / "trainer_state.json").read_text())["global_step"] == MAX_STEPS

    # Same λ (and, as the batches and dropout masks are the same, the same loss) at every step after the resume.
    before, after = step_logs(uninterrupted), step_logs(interrupted)
    assert sorted(after) == sorted(before) == list(range(1, MAX_STEPS + 1))
    for step in range(resumed_from + 1, MAX_STEPS + 1):
        assert after[step]["glancing_ratio"] == before[step]["glancing_ratio"], f"λ differs at step {step}"
        assert after[step]["loss"] == before[step]["loss"], f"loss differs at step {step}: other batches or masks"
    assert before[MAX_STEPS]["glancing_ratio"] < before[1]["glancing_ratio"]  # λ anneals: the check means something

    expected, got = (load_file(folder / "model.safetensors") for folder in (uninterrupted, interrupted))
    assert sorted(got) == sorted(expected)
    different = [name for name in expected if not torch.equal(got[name], expected[name])]
    assert not different, f"{len(different)} of {len(expected)} tensors differ after the resume, e.g. {different[:3]}"


def test_length_grouped_order_depends_on_seed_and_epoch_only():
    """The group_by_length order of an epoch is the same whatever the global generator did before."""
    lengths = [(7 * index) % 23 + 1 for index in range(64)]
    sampler = SeededLengthGroupedSampler(4, lengths, seed=3)
    sampler.set_epoch(2)
    torch.manual_seed(0)
    first = list(sampler)
    torch.rand(100)  # other draws, e.g. the steps trained before a resume
    assert list(sampler) == first and sorted(first) == list(range(64))
    sampler.set_epoch(3)
    assert list(sampler) != first  # each epoch its own order


def test_resuming_from_a_half_written_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4, "log_hist')  # cut off
    with pytest.raises(FileNotFoundError, match=r"checkpoint-4: no readable trainer_state\.json"):
        resolve_resume_checkpoint(str(tmp_path), str(tmp_path / "checkpoint-4"), True, False)
    with pytest.raises(FileNotFoundError, match="none saved completely"):
        resolve_resume_checkpoint(str(tmp_path), "true", True, False)
