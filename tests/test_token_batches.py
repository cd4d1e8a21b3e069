"""Token batches (`max_tokens`, fairseq's --max-tokens) and evaluation in input order, in
ExactResumeSeq2SeqTrainer: the batch bound, one pass over the data an epoch, an order drawn from
(seed, epoch) alone, sharding across processes, exact resumption, and the argument errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from helpers import read_pairs, tiny_model, tokenizer_for
from transformers import DataCollatorForSeq2Seq
from transformers.testing_utils import CaptureLogger

from glat_hf import GlatTrainer, GlatTrainingArguments
from glat_hf.trainer import ExactResumeSeq2SeqTrainer, TokenBatchSampler
from glat_hf.trainer import logger as trainer_logger

REPO = Path(__file__).resolve().parents[1]
LENGTHS = [(7 * index) % 37 + 1 for index in range(300)] + [40, 40, 1]


def batches_of(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


# ---------------------------------------------------------------- the sampler alone


@pytest.mark.parametrize("max_tokens", [40, 97, 512])
def test_batches_never_exceed_max_tokens_and_hold_every_pair_once(max_tokens):
    sampler = TokenBatchSampler(LENGTHS, max_tokens, seed=0)
    for epoch in range(3):
        batches = batches_of(sampler, epoch)
        assert len(batches) == len(sampler)
        assert all(len(batch) * max(LENGTHS[i] for i in batch) <= max_tokens for batch in batches)
        assert sorted(i for batch in batches for i in batch) == list(range(len(LENGTHS)))
    # Greedy packing of sorted lengths: no batch could take the next pair, so there are few batches.
    assert len(sampler) <= 2 * sum(LENGTHS) / max_tokens + 2


def test_batches_are_cut_from_the_pairs_sorted_by_length():
    sampler = TokenBatchSampler(LENGTHS, 160, seed=0)
    ranges = sorted(
        (min(LENGTHS[i] for i in batch), max(LENGTHS[i] for i in batch)) for batch in batches_of(sampler, 0)
    )
    assert all(low >= previous_high for (_, previous_high), (low, _) in zip(ranges, ranges[1:]))
    assert batches_of(sampler, 0) != sorted(batches_of(sampler, 0), key=lambda batch: LENGTHS[batch[0]])  # shuffled


def test_order_depends_only_on_seed_and_epoch():
    torch.manual_seed(0)
    first = batches_of(TokenBatchSampler(LENGTHS, 128, seed=3), 2)
    torch.rand(100)  # other draws from the global generator, e.g. the steps trained before a resume
    again = TokenBatchSampler(LENGTHS, 128, seed=3)
    assert batches_of(again, 2) == first
    assert batches_of(again, 3) != first  # each epoch its own order
    assert batches_of(again, 2) == first  # and back
    assert batches_of(TokenBatchSampler(LENGTHS, 128, seed=4), 2) != first
    # Equal lengths trade places between epochs, so the batch sizes (and their count) stay.
    assert sorted(map(len, batches_of(again, 3))) == sorted(map(len, first))
    assert {frozenset(b) for b in batches_of(again, 3)} != {frozenset(b) for b in first}


@pytest.mark.parametrize("processes", [2, 3, 5])
def test_shards_give_every_process_as_many_batches_and_every_pair_once(processes):
    sampler = TokenBatchSampler(LENGTHS, 100, seed=0, num_shards=processes)
    assert len(sampler) % processes == 0
    sampler.set_epoch(1)
    shards = [list(BatchSamplerShard(sampler, processes, rank)) for rank in range(processes)]
    assert len({len(shard) for shard in shards}) == 1
    assert all(len(shard) == len(BatchSamplerShard(sampler, processes, 0)) for shard in shards)
    assert sorted(i for shard in shards for batch in shard for i in batch) == list(range(len(LENGTHS)))
    assert all(len(b) * max(LENGTHS[i] for i in b) <= 100 for shard in shards for b in shard)


def test_a_pair_longer_than_max_tokens_is_an_error():
    with pytest.raises(ValueError, match="Pair 300 has 40 tokens, more than max_tokens=39"):
        TokenBatchSampler(LENGTHS, 39, seed=0)


# ---------------------------------------------------------------- in the trainer


@pytest.fixture(scope="module")
def pairs(multi30k_dir):
    sources, targets = read_pairs(multi30k_dir, count=48)
    tokenizer = tokenizer_for(sources + targets, vocab_size=300)
    features = [tokenizer(s, text_target=t, truncation=True, max_length=30) for s, t in zip(sources, targets)]
    return tokenizer, Dataset.from_list([dict(feature) for feature in features])


def make_trainer(pairs, output_dir, trainer_class=GlatTrainer, eval_dataset=None, **overrides):
    tokenizer, dataset = pairs
    arguments = dict(
        output_dir=str(output_dir),
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
        save_strategy="no",
        learning_rate=3e-3,
        logging_steps=1,
        max_tokens=120,
    )
    torch.manual_seed(0)
    return trainer_class(
        model=tiny_model(vocab_size=len(tokenizer), dropout=0.1).train(),
        args=GlatTrainingArguments(**{**arguments, **overrides}),
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        processing_class=tokenizer,
    )


def test_trainer_batches_hold_at_most_max_tokens_padded(pairs, tmp_path):
    trainer = make_trainer(pairs, tmp_path, max_tokens=120)
    dataloader = trainer.get_train_dataloader()
    rows, sizes = 0, set()
    for batch in dataloader:
        assert batch["input_ids"].numel() <= 120 and batch["labels"].numel() <= 120
        rows += len(batch["input_ids"])
        sizes.add(len(batch["input_ids"]))
    assert rows == len(pairs[1]) and len(sizes) > 1  # every pair once, in batches of varying sizes
    assert len(dataloader) == trainer._update_steps_per_epoch  # what Trainer counts as the epoch


def test_trainer_names_the_argument_when_a_pair_is_too_long(pairs, tmp_path):
    longest = max(max(len(row["input_ids"]), len(row["labels"])) for row in pairs[1])
    trainer = make_trainer(pairs, tmp_path, max_tokens=longest - 1)
    with pytest.raises(ValueError, match=rf"GlatTrainingArguments\.max_tokens is {longest - 1}, but training pair"):
        trainer.get_train_dataloader()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(max_tokens=0), "max_tokens must be a positive"),
        (dict(train_sampling_strategy="sequential"), "train_sampling_strategy must be one of"),
        (dict(auto_find_batch_size=True), "auto_find_batch_size"),
        (dict(accelerator_config={"split_batches": True}), "split_batches"),
        (dict(accelerator_config={"dispatch_batches": True}), "dispatch_batches"),
    ],
)
def test_incompatible_arguments_are_named(overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        GlatTrainingArguments(output_dir="unused", report_to=[], use_cpu=True, **{"max_tokens": 64, **overrides})
    assert "GlatTrainingArguments.max_tokens" in str(error.value) and "--" not in str(error.value)


def test_a_sentence_batch_size_beside_max_tokens_is_reported_as_unused():
    with CaptureLogger(trainer_logger) as captured:
        GlatTrainingArguments(
            output_dir="unused", report_to=[], use_cpu=True, max_tokens=64, per_device_train_batch_size=32
        )
    assert "per_device_train_batch_size (32) is not used" in captured.out
    with CaptureLogger(trainer_logger) as captured:
        GlatTrainingArguments(output_dir="unused", report_to=[], use_cpu=True, max_tokens=64)
    assert captured.out == ""


def step_losses(trainer) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resumed_run_trains_on_the_same_batches(pairs, tmp_path, accumulation):
    """A run resumed inside its second epoch logs the uninterrupted run's losses exactly (same batches,
    same glancing draws and dropout masks, restored from the checkpoint)."""
    options = dict(gradient_accumulation_steps=accumulation, save_strategy="steps")
    batches = len(make_trainer(pairs, tmp_path / "count", **options).get_train_dataloader())
    steps_per_epoch = -(-batches // accumulation)
    assert steps_per_epoch >= 3
    max_steps, resume_at = 2 * steps_per_epoch + 2, steps_per_epoch + 2  # resume inside epoch 1
    uninterrupted = make_trainer(
        pairs, tmp_path / "uninterrupted", max_steps=max_steps, save_steps=resume_at, **options
    )
    uninterrupted.train()
    resumed = make_trainer(pairs, tmp_path / "resumed", max_steps=max_steps, save_steps=resume_at, **options)
    resumed.train(resume_from_checkpoint=str(tmp_path / "uninterrupted" / f"checkpoint-{resume_at}"))
    before = step_losses(uninterrupted)
    after = {step: loss for step, loss in step_losses(resumed).items() if step > resume_at}  # not the checkpoint's log
    assert sorted(after) == list(range(resume_at + 1, max_steps + 1))
    assert {step: before[step] for step in after} == after
    assert len(set(before.values())) > max_steps // 2  # the losses differ from step to step: the check means something


def test_evaluation_and_prediction_keep_input_order_under_group_by_length(pairs, tmp_path):
    tokenizer, dataset = pairs
    trainer = make_trainer(
        pairs,
        tmp_path,
        trainer_class=ExactResumeSeq2SeqTrainer,
        eval_dataset=dataset,
        max_tokens=None,
        train_sampling_strategy="group_by_length",
        per_device_eval_batch_size=5,
    )
    for dataloader in (trainer.get_eval_dataloader(), trainer.get_test_dataloader(dataset)):
        assert isinstance(dataloader.batch_sampler.sampler, torch.utils.data.SequentialSampler)
        seen = [row[row != tokenizer.pad_token_id].tolist() for batch in dataloader for row in batch["input_ids"]]
        assert seen == dataset["input_ids"]


# ---------------------------------------------------------------- two processes


TRAIN = REPO / "training" / "train.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"
TWO_PROCESSES = [
    *(ACCELERATE, "launch", "--multi_gpu", "--num_processes", 2, "--num_machines", 1, "--mixed_precision", "no"),
    *("--dynamo_backend", "no", "--main_process_port", 29541),
]
TINY_RUN = [
    "--config_overrides",
    "d_model=32,encoder_layers=1,decoder_layers=1,encoder_attention_heads=2,decoder_attention_heads=2,"
    "encoder_ffn_dim=64,decoder_ffn_dim=64",
    *("--vocab_size", 300, "--max_train_samples", 40, "--max_source_length", 32, "--max_target_length", 32),
    *("--learning_rate", "1e-3", "--logging_steps", 1, "--seed", 0, "--disable_tqdm", "true", "--log_level", "info"),
    *("--do_train", "--gradient_accumulation_steps", 2, "--max_steps", 8, "--save_steps", 1),
]


def launch(output_dir: Path, multi30k_dir: Path, *extra) -> str:
    # One thread a process: the same sums in every run.
    env = dict(os.environ, GLAT_DATA_DIR=str(multi30k_dir.parent), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [*TWO_PROCESSES, TRAIN, "--output_dir", output_dir, *TINY_RUN, *extra]
    result = subprocess.run(list(map(str, command)), cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"train.py failed (exit {result.returncode}):\n{output[-6000:]}"
    return output


@pytest.mark.parametrize(
    "batching",
    [("--max_tokens", 160), ("--train_sampling_strategy", "group_by_length", "--per_device_train_batch_size", 4)],
    ids=["max_tokens", "group_by_length"],
)
def test_two_processes_resume_inside_an_epoch_on_the_same_batches(batching, multi30k_dir, tmp_path):
    """On two processes each takes every other batch; a run resumed inside its second epoch must still
    get that epoch's batches (the epoch has to reach the sampler through accelerate's wrappers)."""
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    output = launch(uninterrupted, multi30k_dir, *batching)
    assert "world size 2" in output
    steps_per_epoch = int(output.split("Num update steps per epoch = ")[1].split()[0])
    resume_at = steps_per_epoch + 1
    assert steps_per_epoch >= 2 and resume_at < 8, (
        f"{steps_per_epoch} steps an epoch: resume inside epoch 1 of 8 steps"
    )
    resumed.mkdir()
    shutil.copytree(uninterrupted / f"checkpoint-{resume_at}", resumed / f"checkpoint-{resume_at}")
    output = launch(resumed, multi30k_dir, *batching, "--resume_from_checkpoint", "true")
    assert f"global step {resume_at}" in output

    def losses(folder):
        log = json.loads((folder / "training_log.json").read_text())
        return {entry["step"]: entry["loss"] for entry in log if "loss" in entry}

    before = losses(uninterrupted)
    after = {step: loss for step, loss in losses(resumed).items() if step > resume_at}
    assert sorted(after) == list(range(resume_at + 1, 9))
    assert {step: before[step] for step in after} == after
