#!/usr/bin/env python
"""Train, evaluate and run GLAT (or NAT-base, or an autoregressive Marian baseline) on parallel text.

    python training/train.py --output_dir outputs/glat --do_train --do_eval --do_predict --predict_with_generate
    accelerate launch --multi_gpu --num_processes 2 training/train.py ...   # data parallel (gloo on CPU)
    python training/train.py training/recipes/demo.json [--max_steps 100 ...]   # a recipe, optionally overridden

The flags are those of transformers' examples/pytorch/translation/run_translation.py where they apply,
every Seq2SeqTrainingArguments flag, GLAT's glancing flags (glat_hf.GlatTrainingArguments) and the
model flags below. The steps read top to bottom: parse -> data -> tokenizer -> model -> trainer ->
train / evaluate / predict -> summary.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import chain
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import PartialState
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    EvalPrediction,
    GenerationConfig,
    HfArgumentParser,
    MarianConfig,
    MarianMTModel,
    set_seed,
)
from transformers.trainer import TRAINER_STATE_NAME

from glat_hf import GlatConfig, GlatForConditionalGeneration, GlatTrainer, GlatTrainingArguments, train_tokenizer
from glat_hf.configuration_glat import DECODER_INPUTS, PRESETS, preset_sizes
from glat_hf.data import data_dir, load_parallel_folder, read_translation_jsonl
from glat_hf.metrics import compute_translation_metrics, corpus_bleu, decode_ids
from glat_hf.trainer import ExactResumeSeq2SeqTrainer

# model_cards/ lives beside training/ in the repository, not in the installed package (neither does this script).
sys.path.append(str(Path(__file__).resolve().parents[1]))
from model_cards import write_model_card  # noqa: E402

logger = logging.getLogger("glat_hf.train")

MODEL_TYPES = ("glat", "nat", "ar")
SPLITS = ("train", "validation", "test")
# Split names when the data comes from a Multi30k-style folder, and from JSON lines / the Hub.
FOLDER_SPLITS = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
DEFAULT_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


# ------------------------------------------------------------------------------------------ arguments
@dataclass
class ModelArguments:
    """Which model to train and how it is built."""

    model_type: str = field(
        default="glat",
        metadata={"help": "glat | nat (GLAT's model trained with --glancing none) | ar (MarianMTModel baseline).",
                  "choices": list(MODEL_TYPES)},
    )
    preset: str = field(
        default="multi30k",
        metadata={"help": f"Model sizes (GlatConfig.from_preset): one of {sorted(PRESETS)}.", "choices": sorted(PRESETS)},
    )
    config_overrides: str | None = field(
        default=None,
        metadata={"help": 'Override config fields of a new model, e.g. "d_model=128,encoder_layers=2,dropout=0.2".'},
    )
    decoder_input: str | None = field(
        default=None, metadata={"help": f"GLAT decoder input: one of {DECODER_INPUTS} (default soft_copy)."}
    )
    use_ctc: bool = field(default=False, metadata={"help": "GLAT+CTC: CTC loss over upsampled decoder positions."})
    upsample_ratio: int | None = field(default=None, metadata={"help": "CTC decoder positions per source token (2)."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved model folder to start from instead of a new model."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "A saved tokenizer folder; otherwise one is trained on the training text."}
    )
    vocab_size: int = field(default=8000, metadata={"help": "Size of the joint BPE vocabulary when one is trained."})
    length_beam_size: int | None = field(
        default=None,
        metadata={"help": "GLAT: length candidates decoded at eval/predict (noisy parallel decoding); "
                          "stored in the saved generation config."},
    )
    reranker_name_or_path: str | None = field(
        default=None,
        metadata={"help": "GLAT: an autoregressive model folder (same tokenizer) that reranks the NPD candidates "
                          "in the final evaluate/predict (evaluations during training use the model's own scores)."},
    )

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"--model_type must be one of {MODEL_TYPES}, got {self.model_type!r}.")
        if self.preset not in PRESETS:
            raise ValueError(f"Unknown preset {self.preset!r}: choose one of {sorted(PRESETS)}.")
        if self.decoder_input is not None and self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"--decoder_input must be one of {DECODER_INPUTS}, got {self.decoder_input!r}.")
        if self.model_name_or_path and self.config_overrides:
            raise ValueError("--config_overrides applies to a new model; it cannot be combined with --model_name_or_path.")
        if self.model_type == "ar" and (self.use_ctc or self.decoder_input or self.upsample_ratio):
            raise ValueError("--use_ctc, --decoder_input and --upsample_ratio are GLAT flags; not for --model_type ar.")
        if self.model_type == "ar" and (self.length_beam_size or self.reranker_name_or_path):
            raise ValueError("--length_beam_size and --reranker_name_or_path are GLAT decoding flags; "
                             "an ar model decodes with beam search (--generation_num_beams).")


@dataclass
class DataTrainingArguments:
    """Where the parallel text comes from and how it is cut."""

    source_lang: str = field(default="en", metadata={"help": "Source language code."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hugging Face Hub dataset (needs internet)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Its configuration, e.g. de-en."})
    train_file: str | None = field(default=None, metadata={"help": 'JSON lines of {"translation": {src: .., tgt: ..}}.'})
    validation_file: str | None = field(default=None, metadata={"help": "JSON lines, as --train_file."})
    test_file: str | None = field(default=None, metadata={"help": "JSON lines, as --train_file."})
    data_folder: str | None = field(
        default=None,
        metadata={"help": "A folder of {split}.{lang}[.gz] line-aligned text files; default $GLAT_DATA_DIR/multi30k "
                          "when no other source is given."},
    )
    train_split: str | None = field(default=None, metadata={"help": "Training split (default train)."})
    validation_split: str | None = field(
        default=None, metadata={"help": "Evaluation split (default val in a folder, validation on the Hub)."}
    )
    test_split: str | None = field(
        default=None, metadata={"help": "Prediction split (default test_2016_flickr in a folder, test on the Hub)."}
    )
    max_source_length: int = field(default=128, metadata={"help": "Truncate sources to this many tokens."})
    max_target_length: int = field(
        default=128, metadata={"help": "Truncate targets to this many tokens; also GLAT's number of length classes."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use the first N evaluation pairs."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use the first N prediction pairs."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train into a non-empty output_dir (no longer a TrainingArguments flag in transformers v5)."},
    )

    def __post_init__(self):
        if self.source_lang == self.target_lang:
            raise ValueError(f"--source_lang and --target_lang must differ, both are {self.source_lang!r}.")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise ValueError(f"--{name} must be at least 2 (one token and </s>), got {getattr(self, name)}.")


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataTrainingArguments, GlatTrainingArguments]:
    """Parse the command line; a first argument ending in .json is a recipe whose values the rest may override.

    On a machine without CUDA `use_cpu` is forced on: without it, a multi-process launch on CPU runs
    independent, unsynchronised trainings (ENVIRONMENT.md). `ddp_find_unused_parameters` defaults to False.
    """
    classes = (ModelArguments, DataTrainingArguments, GlatTrainingArguments)
    parser = HfArgumentParser(classes)
    defaults = {"ddp_find_unused_parameters": False}
    if argv and argv[0].endswith(".json"):
        recipe = json.loads(Path(argv[0]).read_text())
        recipe = {key: value for key, value in recipe.items() if not key.startswith("_")}  # "_comment" keys
        known = {f.name for cls in classes for f in fields(cls)}
        unknown = sorted(set(recipe) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown argument(s) {unknown}.")
        defaults.update(recipe)
        argv = argv[1:]
    parser.set_defaults(**defaults)
    if not torch.cuda.is_available():
        argv = [*argv, "--use_cpu", "true"]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return model_args, data_args, training_args


def launcher_processes() -> int | None:
    """Processes that `accelerate launch --num_processes N` asked for, read from the parent's command line (Linux)."""
    try:
        command = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    if not any("accelerate" in part for part in command[:3]):
        return None
    for index, part in enumerate(command):
        match = re.fullmatch(r"--num[_-]processes(?:=(\d+))?", part)
        if match:
            value = match.group(1) or (command[index + 1] if index + 1 < len(command) else "")
            return int(value) if value.isdigit() else None
    return None


def check_world_size(training_args) -> int:
    """Fail early, naming the cause, when the processes that train are not the ones the launcher asked for."""
    expected = int(os.environ.get("WORLD_SIZE", 1))
    actual = training_args.world_size
    if actual != expected:
        raise RuntimeError(
            f"world size mismatch: the launcher set WORLD_SIZE={expected} but training runs {actual} process(es). "
            "On CPU launch with `accelerate launch --multi_gpu --num_processes N --num_machines 1 "
            "--mixed_precision no --dynamo_backend no` or `torchrun --nproc_per_node N`."
        )
    asked = launcher_processes()
    if asked is not None and asked != actual:
        raise RuntimeError(
            f"world size mismatch: `accelerate launch` asked for {asked} processes but only {actual} runs "
            "(`accelerate launch --cpu --num_processes N` starts ONE process). Use `accelerate launch --multi_gpu "
            "--num_processes N --num_machines 1 --mixed_precision no --dynamo_backend no` instead."
        )
    return actual


def setup_logging(training_args) -> None:
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)]
    )
    level = training_args.get_process_log_level()
    logger.setLevel(logging.INFO if training_args.process_index == 0 else level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def checkpoint_is_complete(folder: str | os.PathLike) -> bool:
    """Whether Trainer finished saving `folder`: it writes trainer_state.json last, after weights, optimizer and RNG states."""
    try:
        json.loads((Path(folder) / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint-N folder of output_dir that was saved completely (None if there is none).

    Trainer writes a checkpoint in place, so a run killed while saving (SIGKILL, out of memory,
    preemption) leaves a newest folder without a readable trainer_state.json. Resuming from it would
    fail, so it is skipped with a warning and the one before is used.
    """
    if not os.path.isdir(output_dir):
        return None
    steps = sorted(
        (int(match.group(1)), name)
        for name in os.listdir(output_dir)
        if (match := re.fullmatch(r"checkpoint-(\d+)", name)) and os.path.isdir(os.path.join(output_dir, name))
    )
    for _, name in reversed(steps):
        folder = os.path.join(output_dir, name)
        if checkpoint_is_complete(folder):
            return folder
        logger.warning(f"Skipping {folder}: it has no readable {TRAINER_STATE_NAME}, so its saving was interrupted.")
    return None


def resolve_checkpoint(data_args, training_args) -> str | None:
    """The checkpoint to resume from (`--resume_from_checkpoint PATH|true`), with run_translation's output_dir rules.

    A non-empty output_dir is refused unless --overwrite_output_dir, or unless it holds a checkpoint,
    which training then resumes (as run_translation does). `true` and the automatic resume take the
    newest checkpoint that was saved completely (see `last_complete_checkpoint`).
    """
    output_dir = training_args.output_dir
    requested = training_args.resume_from_checkpoint
    if requested is not None and requested.lower() in ("true", "last"):
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise FileNotFoundError(
                f"--resume_from_checkpoint {requested}: no checkpoint-* folder in {output_dir} (or none saved completely)."
            )
        return last
    if requested is not None and requested.lower() not in ("false", "none", ""):
        if not os.path.isdir(requested):
            raise FileNotFoundError(f"--resume_from_checkpoint {requested}: no such folder.")
        if not checkpoint_is_complete(requested):
            raise FileNotFoundError(
                f"--resume_from_checkpoint {requested}: no readable {TRAINER_STATE_NAME}, so its saving was "
                "interrupted; resume from an earlier checkpoint."
            )
        return requested
    if training_args.do_train and os.path.isdir(output_dir) and not data_args.overwrite_output_dir:
        last = last_complete_checkpoint(output_dir)
        if last is not None:
            logger.info(f"Checkpoint found: resuming training from {last}. Pass --overwrite_output_dir to start anew.")
            return last
        if os.listdir(output_dir):
            raise FileExistsError(
                f"Output directory {output_dir} exists and is not empty; pass --overwrite_output_dir to train into it."
            )
    return None


# ----------------------------------------------------------------------------------------------- data
def needed_splits(training_args, tokenizer_needed: bool) -> list[str]:
    splits = []
    if training_args.do_train or tokenizer_needed:
        splits.append("train")
    if training_args.do_eval or (training_args.do_train and training_args.eval_strategy != "no"):
        splits.append("validation")
    if training_args.do_predict:
        splits.append("test")
    return splits


def default_data_folder() -> Path:
    """$GLAT_DATA_DIR/multi30k, with an error naming every way to give data when it is missing."""
    hint = (
        "No data source found: pass --train_file/--validation_file/--test_file (JSON lines), --data_folder "
        "(a folder of {split}.{lang}[.gz] files) or --dataset_name, or set GLAT_DATA_DIR to a folder holding multi30k/"
    )
    try:
        folder = data_dir() / "multi30k"
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{hint} ({error}).") from None
    if not folder.is_dir():
        raise FileNotFoundError(f"{hint} ({folder} does not exist).")
    return folder


def split_names(data_args, from_folder: bool) -> dict[str, str]:
    names = FOLDER_SPLITS if from_folder else DEFAULT_SPLITS
    return {split: getattr(data_args, f"{split}_split") or names[split] for split in SPLITS}


def load_raw_datasets(data_args, splits: list[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Raw {"translation": {src, tgt}} datasets keyed train/validation/test, and each one's name in the source."""
    src, tgt = data_args.source_lang, data_args.target_lang
    files = {"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file}
    raw = datasets.DatasetDict()
    if data_args.dataset_name:
        names = split_names(data_args, from_folder=False)
        hub = datasets.load_dataset(data_args.dataset_name, data_args.dataset_config_name)
        for split in splits:
            if names[split] not in hub:
                raise ValueError(f"{data_args.dataset_name} has no split {names[split]!r} (it has {list(hub)}).")
            raw[split] = hub[names[split]]
            example = raw[split][0]["translation"] if len(raw[split]) else {src: "", tgt: ""}
            missing = [lang for lang in (src, tgt) if lang not in example]
            if missing:
                raise ValueError(f"{data_args.dataset_name}: language(s) {missing} not in the data (it has {sorted(example)}).")
    elif any(files.values()):
        names = {split: files[split] or "" for split in SPLITS}
        for split in splits:
            if not files[split]:
                reason = {"train": "--do_train (or to train a tokenizer)", "validation": "--do_eval or --eval_strategy",
                          "test": "--do_predict"}[split]  # fmt: skip
                raise ValueError(f"No {split} data: {reason} needs --{split}_file (JSON lines).")
            raw[split] = read_translation_jsonl(files[split], src, tgt)
    else:
        folder = Path(data_args.data_folder) if data_args.data_folder else default_data_folder()
        names = split_names(data_args, from_folder=True)
        loaded = load_parallel_folder(folder, src, tgt, splits=[names[split] for split in splits])
        for split in splits:
            raw[split] = loaded[names[split]]
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples, "test": data_args.max_predict_samples}
    for split in splits:
        if limits[split] is not None:
            raw[split] = raw[split].select(range(min(limits[split], len(raw[split]))))
    return raw, names


def column(dataset: datasets.Dataset, lang: str) -> list[str]:
    """One language's sentences of a translation dataset, in order."""
    return dataset.flatten()[f"translation.{lang}"]


def tokenize_datasets(raw, tokenizer, data_args, training_args) -> datasets.DatasetDict:
    """Tokenize sources and targets (batched map; labels end in </s> and are padded later by the collator)."""
    src, tgt = data_args.source_lang, data_args.target_lang

    def preprocess(batch):
        pairs = batch["translation"]
        model_inputs = tokenizer([pair[src] for pair in pairs], max_length=data_args.max_source_length, truncation=True)
        labels = tokenizer(text_target=[pair[tgt] for pair in pairs], max_length=data_args.max_target_length, truncation=True)
        model_inputs["labels"] = labels["input_ids"]
        return model_inputs

    tokenized = datasets.DatasetDict()
    for split, dataset in raw.items():
        with training_args.main_process_first(desc=f"tokenize {split}"):
            tokenized[split] = dataset.map(
                preprocess,
                batched=True,
                num_proc=data_args.preprocessing_num_workers,
                remove_columns=dataset.column_names,
                desc=f"Tokenizing {split}",
            )
    return tokenized


# ------------------------------------------------------------------------------------------ tokenizer
def saved_tokenizer(model_args, checkpoint: str | None) -> str | None:
    """The folder to load the tokenizer from: --tokenizer_name, else the model's or the checkpoint's, if they have one."""
    if model_args.tokenizer_name:
        return model_args.tokenizer_name
    for folder in (model_args.model_name_or_path, checkpoint):
        if folder and (Path(folder) / "tokenizer.json").is_file():
            return folder
    return None


def load_or_train_tokenizer(model_args, data_args, training_args, raw, checkpoint: str | None):
    """A saved tokenizer (see `saved_tokenizer`), else a joint BPE trained on the training text.

    Only the main process of each machine trains it and saves it to output_dir; the others wait and load it.
    """
    folder = saved_tokenizer(model_args, checkpoint)
    if folder:
        logger.info(f"Loading the tokenizer from {folder}")
        return AutoTokenizer.from_pretrained(folder)
    if "train" not in raw:
        raise ValueError("No tokenizer: pass --tokenizer_name (or --model_name_or_path), or training data to train one.")
    with training_args.main_process_first(desc="train the tokenizer"):
        if training_args.local_process_index == 0:
            texts = chain(column(raw["train"], data_args.source_lang), column(raw["train"], data_args.target_lang))
            length = max(256, data_args.max_source_length + 1, data_args.max_target_length)
            tokenizer = train_tokenizer(texts, vocab_size=model_args.vocab_size, model_max_length=length)
            tokenizer.save_pretrained(training_args.output_dir)
            logger.info(f"Trained a BPE tokenizer of {len(tokenizer)} tokens, saved to {training_args.output_dir}")
        else:
            tokenizer = AutoTokenizer.from_pretrained(training_args.output_dir)
    return tokenizer


# ---------------------------------------------------------------------------------------------- model
def parse_config_overrides(text: str | None, config) -> dict:
    """"k=v,k2=v2" as a dict, each value typed like the config's current value (as run_clm's --config_overrides)."""
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"--config_overrides: {item!r} is not key=value.")
        if not hasattr(config, key):
            raise ValueError(f"--config_overrides: unknown key {key!r}; {type(config).__name__} has no such field.")
        current = getattr(config, key)
        try:
            if isinstance(current, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                overrides[key] = value.lower() in ("true", "1", "yes")
            elif isinstance(current, int):
                overrides[key] = int(value)
            elif isinstance(current, float):
                overrides[key] = float(value)
            else:
                overrides[key] = value
        except ValueError as error:
            raise ValueError(f"--config_overrides: {key}={value!r} is not a {type(current).__name__} ({error}).") from None
    return overrides


def build_model(model_args, data_args, tokenizer):
    """A new GLAT (glat / nat) or MarianMTModel (ar) from the preset and overrides, or a saved model."""
    if model_args.model_name_or_path:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_args.model_name_or_path)
        is_glat = isinstance(model, GlatForConditionalGeneration)
        if is_glat != (model_args.model_type != "ar"):
            raise ValueError(
                f"--model_type {model_args.model_type} but {model_args.model_name_or_path} holds a {type(model).__name__}."
            )
        if model.get_input_embeddings().weight.shape[0] != len(tokenizer):
            raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but the model's vocabulary differs; use its tokenizer.")
        return model

    src_len, tgt_len = data_args.max_source_length, data_args.max_target_length
    positions = max(256, src_len + 1, tgt_len)  # the encoder prepends <length>
    glat_options = {}
    if model_args.model_type != "ar":
        if model_args.decoder_input:
            glat_options["decoder_input"] = model_args.decoder_input
        if model_args.use_ctc:
            glat_options["use_ctc"] = True
            ratio = model_args.upsample_ratio or 2
            glat_options["upsample_ratio"] = ratio
            positions = max(positions, ratio * src_len)
        elif model_args.upsample_ratio:
            raise ValueError("--upsample_ratio needs --use_ctc.")
    base = dict(preset_sizes(model_args.preset), vocab_size=len(tokenizer), max_position_embeddings=positions)
    special = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)

    if model_args.model_type == "ar":
        base.update(special, decoder_start_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                    forced_eos_token_id=tokenizer.eos_token_id, activation_function="relu", scale_embedding=True)  # fmt: skip
        config = MarianConfig(**base)
        config = MarianConfig(**{**base, **parse_config_overrides(model_args.config_overrides, config)})
        model = MarianMTModel(config)
        model.generation_config = GenerationConfig(
            max_length=tgt_len, num_beams=1, pad_token_id=config.pad_token_id, eos_token_id=config.eos_token_id,
            decoder_start_token_id=config.decoder_start_token_id, forced_eos_token_id=config.eos_token_id,
            bad_words_ids=[[config.pad_token_id]],
        )  # fmt: skip
        return model

    base.update(glat_options, max_target_length=tgt_len)
    config = GlatConfig.from_preset(model_args.preset, **base)
    config = GlatConfig.from_preset(model_args.preset, **{**base, **parse_config_overrides(model_args.config_overrides, config)})
    return GlatForConditionalGeneration(config)


# --------------------------------------------------------------------------------------------- trainer
class MetricsOnFirst:
    """compute_metrics on the first `count` predictions only (the evaluated dataset's size).

    Seq2SeqTrainer gathers predictions across processes with `gather`, not `gather_for_metrics`, so a
    multi-process evaluation also returns the samples repeated to even out the last batches; they
    come after the real ones, which stay in order. Set `count` before evaluating another dataset.
    """

    def __init__(self, compute_metrics, count: int | None):
        self.compute_metrics, self.count = compute_metrics, count

    def __call__(self, eval_prediction: EvalPrediction) -> dict:
        predictions = eval_prediction.predictions
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        labels = eval_prediction.label_ids
        return self.compute_metrics(EvalPrediction(predictions=predictions[: self.count], label_ids=labels[: self.count]))


def build_trainer(model_args, training_args, model, tokenizer, tokenized):
    """GlatTrainer for glat / nat (nat: --glancing none), a Seq2SeqTrainer for ar (both resume exactly)."""
    is_ar = model_args.model_type == "ar"
    if not is_ar and training_args.label_smoothing_factor:
        raise ValueError("For GLAT, label smoothing is a model setting: use --config_overrides label_smoothing=X "
                         "(default 0.1) instead of --label_smoothing_factor.")  # fmt: skip
    if model_args.model_type == "nat" and training_args.glancing != "none":
        logger.info("--model_type nat: training without glancing (--glancing none).")
        training_args.glancing = "none"
    collator = DataCollatorForSeq2Seq(tokenizer, model=model if is_ar else None, label_pad_token_id=-100)
    trainer_class = ExactResumeSeq2SeqTrainer if is_ar else GlatTrainer
    return trainer_class(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train") if training_args.do_train else None,
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=MetricsOnFirst(compute_translation_metrics(tokenizer), len(tokenized.get("validation", ())))
        if training_args.predict_with_generate
        else None,
    )


def generation_kwargs(model_args, training_args) -> dict:
    """Keyword arguments for the final evaluate/predict: GLAT's NPD length beam and the AR reranker."""
    kwargs = {}
    if model_args.length_beam_size:
        kwargs["length_beam_size"] = model_args.length_beam_size
    if model_args.reranker_name_or_path:
        reranker = AutoModelForSeq2SeqLM.from_pretrained(model_args.reranker_name_or_path)
        kwargs["reranker"] = reranker.to(training_args.device).eval()
    return kwargs


# ------------------------------------------------------------------------------------ run and report
@contextmanager
def inputs_in_order(trainer):
    """Evaluate in input order: with --train_sampling_strategy group_by_length, Trainer also groups (shuffles)
    evaluation batches by length, which would scramble generated_predictions.txt."""
    strategy = trainer.args.train_sampling_strategy
    trainer.args.train_sampling_strategy = "random"  # evaluation samplers are then sequential
    try:
        yield
    finally:
        trainer.args.train_sampling_strategy = strategy


def predict(trainer, tokenized, raw, data_args, training_args, gen_kwargs) -> tuple[dict, list[str]]:
    """Translate the test split; write generated_predictions.txt and BLEU against the raw references."""
    if trainer.compute_metrics is not None:
        trainer.compute_metrics.count = len(tokenized["test"])
    with inputs_in_order(trainer):
        output = trainer.predict(tokenized["test"], metric_key_prefix="predict", **gen_kwargs)
    metrics = dict(output.metrics, predict_samples=len(tokenized["test"]))
    hypotheses = []
    if training_args.predict_with_generate:
        hypotheses = decode_ids(trainer.processing_class, output.predictions[: len(tokenized["test"])])
        bleu = corpus_bleu(hypotheses, column(raw["test"], data_args.target_lang))
        metrics.update(predict_bleu=bleu["score"], predict_bleu_signature=bleu["signature"])
        if trainer.is_world_process_zero():
            path = Path(training_args.output_dir) / "generated_predictions.txt"
            path.write_text("".join(text.replace("\n", " ") + "\n" for text in hypotheses), encoding="utf-8")
    trainer.log_metrics("predict", metrics)
    trainer.save_metrics("predict", metrics)
    return metrics, hypotheses


def print_summary(results: dict, raw, names, hypotheses, data_args, output_dir) -> None:
    src, tgt = data_args.source_lang, data_args.target_lang
    lines = ["", "=" * 80, "Summary"]
    for prefix, split in (("eval", "validation"), ("predict", "test")):
        if f"{prefix}_bleu" in results:
            lines.append(f"  BLEU on {names[split] or split}: {results[f'{prefix}_bleu']:.2f}"
                         + (f"  ({results['predict_bleu_signature']})" if prefix == "predict" else ""))  # fmt: skip
    if hypotheses:
        sources, references = column(raw["test"], src)[:5], column(raw["test"], tgt)[:5]
        lines.append(f"  Examples ({names['test']}):")
        for source, hypothesis, reference in zip(sources, hypotheses, references):
            lines += [f"    {src}: {source}", f"    ->  {hypothesis}", f"    ref: {reference}", ""]
    lines += [f"  Model saved to {os.path.abspath(output_dir)}", "=" * 80]
    print("\n".join(lines), flush=True)


def write_card(model_args, data_args, training_args, names) -> None:
    """README.md in output_dir: model_cards/ reads the folder; this passes what only the run knows (data, decoding).

    A failure costs the card, not the finished run: it is logged with the command that writes the card again.
    """
    files = [data_args.train_file, data_args.validation_file, data_args.test_file]
    if data_args.dataset_name:
        dataset, splits = data_args.dataset_name, names
    elif any(files):
        dataset = Path(next(filter(None, files))).resolve().parent.name
        splits = {split: Path(name).name.split(".")[0] for split, name in names.items() if name}
    else:
        dataset, splits = Path(data_args.data_folder).name if data_args.data_folder else "multi30k", names
    decoding = {"length_beam_size": model_args.length_beam_size, "reranker": model_args.reranker_name_or_path,
                "num_beams": training_args.generation_num_beams}  # fmt: skip
    try:
        path = write_model_card(
            training_args.output_dir, source_lang=data_args.source_lang, target_lang=data_args.target_lang,
            dataset=dataset, validation_split=splits.get("validation"), test_split=splits.get("test"),
            model_type=model_args.model_type, training_args=training_args, decoding=decoding,
            data_folder=data_args.data_folder or (Path(data_args.train_file).parent if data_args.train_file else None),
            distilled=False if not (data_args.data_folder or data_args.dataset_name or any(files)) else None,
        )  # fmt: skip
        logger.info(f"Model card written to {path}")
    except Exception as error:
        logger.warning(f"No model card written ({error}); write it with "
                       f"`python model_cards/model_card.py write {training_args.output_dir}`.", exc_info=True)  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    setup_logging(training_args)
    world_size = check_world_size(training_args)
    if training_args.process_index == 0:
        print(f"[train.py] world size {world_size}, device {training_args.device}", flush=True)
    checkpoint = resolve_checkpoint(data_args, training_args)
    PartialState().wait_for_everyone()  # every process checked output_dir before anything is written to it
    os.makedirs(training_args.output_dir, exist_ok=True)
    set_seed(training_args.seed)

    tokenizer_needed = saved_tokenizer(model_args, checkpoint) is None
    raw, names = load_raw_datasets(data_args, needed_splits(training_args, tokenizer_needed))
    tokenizer = load_or_train_tokenizer(model_args, data_args, training_args, raw, checkpoint)
    model = build_model(model_args, data_args, tokenizer)
    if model_args.length_beam_size:  # saved with the model, used by every evaluation
        model.generation_config.length_beam_size = model_args.length_beam_size
    tokenized = tokenize_datasets(raw, tokenizer, data_args, training_args)
    trainer = build_trainer(model_args, training_args, model, tokenizer, tokenized)
    logger.info(f"{type(model).__name__}: {model.num_parameters() / 1e6:.1f}M parameters; "
                f"splits {dict((split, len(d)) for split, d in raw.items())}")  # fmt: skip

    results = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()  # model (safetensors), config, generation config, tokenizer
        metrics = dict(train_result.metrics, train_samples=len(tokenized["train"]))
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    gen_kwargs = generation_kwargs(model_args, training_args) if training_args.do_eval or training_args.do_predict else {}
    if training_args.do_eval:
        metrics = trainer.evaluate(metric_key_prefix="eval", **gen_kwargs)
        metrics["eval_samples"] = len(tokenized["validation"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)

    hypotheses = []
    if training_args.do_predict:
        metrics, hypotheses = predict(trainer, tokenized, raw, data_args, training_args, gen_kwargs)
        results.update(metrics)

    if trainer.is_world_process_zero():
        if not training_args.do_train:  # the model is unchanged; keep its tokenizer beside the results
            tokenizer.save_pretrained(training_args.output_dir)
        log_path = Path(training_args.output_dir) / "training_log.json"
        log_path.write_text(json.dumps(trainer.state.log_history, indent=2))
        print_summary(results, raw, names, hypotheses, data_args, training_args.output_dir)
        if training_args.do_train:  # the folder holds the trained model
            write_card(model_args, data_args, training_args, names)
    trainer.end()  # every process: ends the process group of a multi-process run
    return results


if __name__ == "__main__":
    main()
