#!/usr/bin/env python
"""Train, evaluate and run GLAT (or NAT-base, or an autoregressive Marian baseline) on parallel text.

    python training/train.py --output_dir outputs/glat --do_train --do_eval --do_predict --predict_with_generate
    accelerate launch --multi_gpu --num_processes 2 training/train.py ...   # data parallel (gloo on CPU)
    python training/train.py training/recipes/demo.json [--max_steps 100 ...]   # a recipe, optionally overridden

The flags are those of transformers' examples/pytorch/translation/run_translation.py where they apply, every
Seq2SeqTrainingArguments flag, GLAT's glancing flags (glat_hf.GlatTrainingArguments) and the model flags
below. `main` walks the steps top to bottom: arguments -> output folder -> data -> tokenizer -> model ->
trainer -> train / evaluate / predict -> summary and model card.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from dataclasses import dataclass, fields
from itertools import chain
from pathlib import Path

import datasets
import torch
import transformers
from accelerate import PartialState
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, DataCollatorForSeq2Seq, HfArgumentParser, set_seed
from transformers.hf_argparser import HfArg

from glat_hf import GlatConfig, GlatForConditionalGeneration, GlatTrainer, GlatTrainingArguments, train_tokenizer
from glat_hf.baseline import marian_baseline, marian_baseline_config
from glat_hf.checkpoints import resolve_resume_checkpoint
from glat_hf.configuration_glat import DECODER_INPUTS, PRESETS
from glat_hf.data import column, load_translation_splits
from glat_hf.launch import check_world_size
from glat_hf.metrics import MetricsOnFirst, compute_translation_metrics, corpus_bleu, decode_ids
from glat_hf.tokenization import tokenize_translations
from glat_hf.trainer import ExactResumeSeq2SeqTrainer
from glat_hf.translation import check_vocabulary
from model_cards import write_model_card

logger = logging.getLogger("glat_hf.train")

MODEL_TYPES = ("glat", "nat", "ar")
SPLITS = ("train", "validation", "test")


@dataclass
class ModelArguments:
    """Which model to train and how it is built."""

    model_type: str = HfArg(
        default="glat",
        help="glat | nat (GLAT's model with --glancing none) | ar (MarianMTModel baseline).",
        metadata={"choices": list(MODEL_TYPES)},
    )
    preset: str = HfArg(
        default="multi30k",
        help=f"Model sizes (GlatConfig.from_preset): one of {sorted(PRESETS)}.",
        metadata={"choices": sorted(PRESETS)},
    )
    config_overrides: str | None = HfArg(default=None, help='New model\'s config fields, "d_model=128,dropout=0.2".')
    decoder_input: str | None = HfArg(default=None, help=f"GLAT decoder input: one of {DECODER_INPUTS}.")
    use_ctc: bool = HfArg(default=False, help="GLAT+CTC: CTC loss over upsampled decoder positions.")
    upsample_ratio: int | None = HfArg(default=None, help="CTC decoder positions per source token (2).")
    model_name_or_path: str | None = HfArg(default=None, help="A saved model folder to start from.")
    tokenizer_name: str | None = HfArg(
        default=None, aliases="--tokenizer", help="A tokenizer folder; else one is trained."
    )
    vocab_size: int = HfArg(default=8000, help="Size of the joint BPE vocabulary when one is trained.")
    length_beam_size: int | None = HfArg(default=None, help="GLAT: NPD length candidates at eval/predict (saved).")
    reranker_name_or_path: str | None = HfArg(
        default=None,
        aliases="--reranker",
        help="GLAT: an AR model folder (same tokenizer) that reranks NPD candidates.",
    )

    def __post_init__(self):
        if self.decoder_input is not None and self.decoder_input not in DECODER_INPUTS:
            raise ValueError(f"--decoder_input must be one of {DECODER_INPUTS}, got {self.decoder_input!r}.")
        if self.model_name_or_path and self.config_overrides:
            raise ValueError("--config_overrides applies to a new model; not with --model_name_or_path.")
        glat_only = self.use_ctc or self.decoder_input or self.upsample_ratio or self.length_beam_size
        if self.model_type == "ar" and (glat_only or self.reranker_name_or_path):
            raise ValueError(
                "--use_ctc, --decoder_input, --upsample_ratio, --length_beam_size and --reranker are "
                "GLAT flags; an ar model decodes with beam search (--generation_num_beams)."
            )
        if self.upsample_ratio and not self.use_ctc:
            raise ValueError("--upsample_ratio needs --use_ctc.")


@dataclass
class DataTrainingArguments:
    """Where the parallel text comes from and how it is cut."""

    source_lang: str = HfArg(default="en", help="Source language code.")
    target_lang: str = HfArg(default="de", help="Target language code.")
    dataset_name: str | None = HfArg(default=None, help="A Hugging Face Hub dataset (needs internet).")
    dataset_config_name: str | None = HfArg(default=None, help="Its configuration, e.g. de-en.")
    train_file: str | None = HfArg(default=None, help='JSON lines of {"translation": {src: .., tgt: ..}}.')
    validation_file: str | None = HfArg(default=None, help="JSON lines, as --train_file.")
    test_file: str | None = HfArg(default=None, help="JSON lines, as --train_file.")
    data_folder: str | None = HfArg(default=None, help="{split}.{lang}[.gz] files; default Multi30k (GLAT_DATA_DIR).")
    train_split: str | None = HfArg(default=None, help="Training split (default train).")
    validation_split: str | None = HfArg(default=None, help="Evaluation split (val in a folder).")
    test_split: str | None = HfArg(default=None, help="Prediction split (test_2016_flickr in a folder).")
    max_source_length: int = HfArg(default=128, help="Truncate sources to this many tokens.")
    max_target_length: int = HfArg(default=128, help="Truncate targets; also GLAT's number of length classes.")
    max_train_samples: int | None = HfArg(default=None, help="Use the first N training pairs.")
    max_eval_samples: int | None = HfArg(default=None, help="Use the first N evaluation pairs.")
    max_predict_samples: int | None = HfArg(default=None, help="Use the first N prediction pairs.")
    preprocessing_num_workers: int | None = HfArg(default=None, help="Processes for tokenization.")
    overwrite_output_dir: bool = HfArg(default=False, help="Train into a non-empty output_dir.")

    def __post_init__(self):
        if self.source_lang == self.target_lang:
            raise ValueError(f"--source_lang and --target_lang must differ, both are {self.source_lang!r}.")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise ValueError(f"--{name} must be at least 2 (one token and </s>), got {getattr(self, name)}.")


def parse_arguments(argv: list[str]):
    """The three argument dataclasses; a first argument ending in .json is a recipe that the rest may override.

    Without CUDA `use_cpu` is forced on: without it a multi-process launch on CPU runs independent,
    unsynchronised trainings.
    """
    classes = (ModelArguments, DataTrainingArguments, GlatTrainingArguments)
    parser = HfArgumentParser(classes)
    defaults = {"ddp_find_unused_parameters": False}
    if argv and argv[0].endswith(".json"):
        recipe = {key: value for key, value in json.loads(Path(argv[0]).read_text()).items() if key[0] != "_"}
        unknown = sorted(set(recipe) - {f.name for cls in classes for f in fields(cls)})
        if unknown:
            raise ValueError(f"{argv[0]}: unknown argument(s) {unknown}.")
        defaults.update(recipe)
        argv = argv[1:]
    parser.set_defaults(**defaults)
    if not torch.cuda.is_available():
        argv = [*argv, "--use_cpu", "true"]
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def saved_tokenizer(model_args, checkpoint: str | None) -> str | None:
    """--tokenizer_name, else the saved model's or the checkpoint's folder if it holds a tokenizer."""
    saved = (path for path in (model_args.model_name_or_path, checkpoint) if path)
    return model_args.tokenizer_name or next(
        (path for path in saved if (Path(path) / "tokenizer.json").is_file()), None
    )


def load_or_train_tokenizer(model_args, data_args, training_args, raw, checkpoint: str | None):
    """A saved tokenizer, else a joint BPE trained on the training text (by the main process of each machine;
    the others load what it saved)."""
    folder = saved_tokenizer(model_args, checkpoint)
    if folder:
        logger.info(f"Loading the tokenizer from {folder}")
        return AutoTokenizer.from_pretrained(folder)
    if "train" not in raw:
        raise ValueError(
            "No tokenizer: pass --tokenizer_name (or --model_name_or_path), or training data to train one."
        )
    with training_args.main_process_first(desc="train the tokenizer"):
        if training_args.local_process_index != 0:
            return AutoTokenizer.from_pretrained(training_args.output_dir)
        texts = chain(column(raw["train"], data_args.source_lang), column(raw["train"], data_args.target_lang))
        length = max(256, data_args.max_source_length + 1, data_args.max_target_length)
        tokenizer = train_tokenizer(texts, vocab_size=model_args.vocab_size, model_max_length=length)
        tokenizer.save_pretrained(training_args.output_dir)
        logger.info(f"Trained a BPE tokenizer of {len(tokenizer)} tokens, saved to {training_args.output_dir}")
        return tokenizer


def build_model(model_args, data_args, tokenizer):
    """A saved model, or a new GLAT (glat / nat) or MarianMTModel (ar) of the preset's sizes, then the overrides."""
    if model_args.model_name_or_path:
        model = AutoModelForSeq2SeqLM.from_pretrained(model_args.model_name_or_path)
        if isinstance(model, GlatForConditionalGeneration) != (model_args.model_type != "ar"):
            raise ValueError(
                f"--model_type {model_args.model_type} but {model_args.model_name_or_path} holds a "
                f"{type(model).__name__}."
            )
        check_vocabulary(model, tokenizer)
        return model
    source, target = data_args.max_source_length, data_args.max_target_length
    positions = max(256, source + 1, target)  # the encoder prepends <length>
    if model_args.model_type == "ar":
        config = marian_baseline_config(model_args.preset, tokenizer, positions)
    else:
        options = {"decoder_input": model_args.decoder_input} if model_args.decoder_input else {}
        if model_args.use_ctc:
            options.update(use_ctc=True, upsample_ratio=model_args.upsample_ratio or 2)
            positions = max(positions, options["upsample_ratio"] * source)
        config = GlatConfig.from_preset(
            model_args.preset,
            **options,
            vocab_size=len(tokenizer),
            max_position_embeddings=positions,
            max_target_length=target,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    if model_args.config_overrides:
        try:
            config.update_from_string(model_args.config_overrides)
        except ValueError as error:
            raise ValueError(
                f"--config_overrides {model_args.config_overrides!r}: {error} (expected key=value pairs, "
                f"separated by commas, of {type(config).__name__} fields)"
            ) from None
    if model_args.model_type == "ar":
        return marian_baseline(config, target)
    config.validate()
    return GlatForConditionalGeneration(config)


def main(argv: list[str] | None = None) -> dict:
    # Arguments, logging, and a check that the launcher started the processes it was asked for.
    model_args, data_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    log_format = "%(asctime)s - %(levelname)s - %(name)s - %(message)s"
    logging.basicConfig(format=log_format, datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(logging.INFO if training_args.process_index == 0 else log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    world_size = check_world_size(training_args)
    if training_args.process_index == 0:
        print(f"[train.py] world size {world_size}, device {training_args.device}", flush=True)
    if model_args.model_type == "nat" and training_args.glancing != "none":
        logger.info("--model_type nat: training without glancing (--glancing none).")
        training_args.glancing = "none"
    if model_args.model_type != "ar" and training_args.label_smoothing_factor:
        raise ValueError(
            "For GLAT, label smoothing is a model setting: use --config_overrides label_smoothing=X "
            "(default 0.1) instead of --label_smoothing_factor."
        )

    # The output folder: resume from its newest complete checkpoint, refuse to mix runs.
    output_dir, resume = training_args.output_dir, training_args.resume_from_checkpoint
    checkpoint = resolve_resume_checkpoint(output_dir, resume, training_args.do_train, data_args.overwrite_output_dir)
    PartialState().wait_for_everyone()  # every process checked output_dir before anything is written to it
    os.makedirs(output_dir, exist_ok=True)
    set_seed(training_args.seed)

    # Data: only the splits this run needs (the training text also when a tokenizer must be trained).
    evaluates = training_args.do_eval or (training_args.do_train and training_args.eval_strategy != "no")
    needed = {
        "train": training_args.do_train or not saved_tokenizer(model_args, checkpoint),
        "validation": evaluates,
        "test": training_args.do_predict,
    }
    raw, names = load_translation_splits(
        [split for split in SPLITS if needed[split]],
        data_args.source_lang,
        data_args.target_lang,
        files={"train": data_args.train_file, "validation": data_args.validation_file, "test": data_args.test_file},
        data_folder=data_args.data_folder,
        dataset_name=data_args.dataset_name,
        dataset_config_name=data_args.dataset_config_name,
        split_names={split: getattr(data_args, f"{split}_split") for split in SPLITS},
        max_samples={
            "train": data_args.max_train_samples,
            "validation": data_args.max_eval_samples,
            "test": data_args.max_predict_samples,
        },
    )

    # Tokenizer, model, and the tokenized splits (labels end in </s>; the collator pads them with -100).
    tokenizer = load_or_train_tokenizer(model_args, data_args, training_args, raw, checkpoint)
    model = build_model(model_args, data_args, tokenizer)
    if model_args.length_beam_size:  # saved with the model, used by every evaluation
        model.generation_config.length_beam_size = model_args.length_beam_size
    languages = (data_args.source_lang, data_args.target_lang)
    limits = (data_args.max_source_length, data_args.max_target_length, data_args.preprocessing_num_workers)
    with training_args.main_process_first(desc="tokenize"):
        tokenized = datasets.DatasetDict(
            {split: tokenize_translations(dataset, tokenizer, *languages, *limits) for split, dataset in raw.items()}
        )

    # Trainer: GlatTrainer (glancing; nat is --glancing none) or a Seq2SeqTrainer for ar; both resume exactly.
    is_ar = model_args.model_type == "ar"
    metrics = None
    if training_args.predict_with_generate:
        metrics = MetricsOnFirst(compute_translation_metrics(tokenizer), len(tokenized.get("validation", ())))
    trainer = (ExactResumeSeq2SeqTrainer if is_ar else GlatTrainer)(
        model=model,
        args=training_args,
        train_dataset=tokenized.get("train") if training_args.do_train else None,
        eval_dataset=tokenized.get("validation"),
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model if is_ar else None, label_pad_token_id=-100),
        compute_metrics=metrics,
    )
    sizes = {split: len(dataset) for split, dataset in raw.items()}
    logger.info(f"{type(model).__name__}: {model.num_parameters() / 1e6:.1f}M parameters; splits {sizes}")

    results = {}

    def record(prefix: str, metrics: dict) -> None:
        trainer.log_metrics(prefix, metrics)
        trainer.save_metrics(prefix, metrics)
        results.update(metrics)

    def save_arguments() -> None:  # training_args.json, plain JSON that the model card and the result rows read
        if trainer.is_world_process_zero():
            Path(output_dir).mkdir(parents=True, exist_ok=True)
            (Path(output_dir) / "training_args.json").write_text(training_args.to_json_string())

    if training_args.do_train:
        save_arguments()  # first, so that the checkpoints of a running or stopped run carry their arguments (seed)
        train_result = trainer.train(resume_from_checkpoint=checkpoint)
        save_arguments()  # again, as they ran: the trainer fills in the scheduler's arguments (lr_decay_fraction)
        trainer.save_model()  # model (safetensors), config, generation config, tokenizer
        trainer.save_state()
        record("train", dict(train_result.metrics, train_samples=len(tokenized["train"])))

    # The final evaluation and prediction decode with NPD and the AR reranker if asked for.
    gen_kwargs = {"length_beam_size": model_args.length_beam_size} if model_args.length_beam_size else {}
    if model_args.reranker_name_or_path and (training_args.do_eval or training_args.do_predict):
        reranker = AutoModelForSeq2SeqLM.from_pretrained(model_args.reranker_name_or_path)
        gen_kwargs["reranker"] = reranker.to(training_args.device).eval()
    if training_args.do_eval:
        eval_metrics = trainer.evaluate(metric_key_prefix="eval", **gen_kwargs)
        record("eval", dict(eval_metrics, eval_samples=len(tokenized["validation"])))

    hypotheses = []
    if training_args.do_predict:
        if metrics is not None:
            metrics.count = len(tokenized["test"])
        output = trainer.predict(tokenized["test"], metric_key_prefix="predict", **gen_kwargs)
        predict_metrics = dict(output.metrics, predict_samples=len(tokenized["test"]))
        if training_args.predict_with_generate:
            hypotheses = decode_ids(tokenizer, output.predictions[: len(tokenized["test"])])
            bleu = corpus_bleu(hypotheses, column(raw["test"], data_args.target_lang))
            predict_metrics.update(predict_bleu=bleu["score"], predict_bleu_signature=bleu["signature"])
            if trainer.is_world_process_zero():
                text = "".join(line.replace("\n", " ") + "\n" for line in hypotheses)
                (Path(training_args.output_dir) / "generated_predictions.txt").write_text(text, encoding="utf-8")
        record("predict", predict_metrics)

    if trainer.is_world_process_zero():
        output_dir = Path(output_dir)
        if not training_args.do_train:  # the model is unchanged; keep its tokenizer beside the results
            tokenizer.save_pretrained(output_dir)
        (output_dir / "training_log.json").write_text(json.dumps(trainer.state.log_history, indent=2))
        print_summary(results, raw, names, hypotheses, data_args, output_dir)
        if training_args.do_train:  # the folder holds the trained model; the card reads training_args.json
            write_card(model_args, data_args, training_args, names)
    trainer.accelerator.wait_for_everyone()  # no rank tears the group down while rank 0 still writes
    trainer.end()  # every process: ends the process group of a multi-process run
    return results


def print_summary(results: dict, raw, names, hypotheses, data_args, output_dir) -> None:
    src, tgt = data_args.source_lang, data_args.target_lang
    lines = ["", "=" * 80, "Summary"]
    for prefix, split in (("eval", "validation"), ("predict", "test")):
        if f"{prefix}_bleu" in results:
            signature = f"  ({results['predict_bleu_signature']})" if prefix == "predict" else ""
            lines.append(f"  BLEU on {names[split] or split}: {results[f'{prefix}_bleu']:.2f}{signature}")
    if hypotheses:
        lines.append(f"  Examples ({names['test']}):")
        for source, hypothesis, reference in zip(column(raw["test"], src)[:5], hypotheses, column(raw["test"], tgt)):
            lines += [f"    {src}: {source}", f"    ->  {hypothesis}", f"    ref: {reference}", ""]
    lines += [f"  Model saved to {os.path.abspath(output_dir)}", "=" * 80]
    print("\n".join(lines), flush=True)


def write_card(model_args, data_args, training_args, names) -> None:
    """README.md in output_dir. A failure costs the card, not the finished run: it is logged with the command
    that writes the card again."""
    files = [path for path in (data_args.train_file, data_args.validation_file, data_args.test_file) if path]
    folder = data_args.data_folder or (Path(files[0]).resolve().parent if files else None)
    splits = {split: Path(name).name.split(".")[0] for split, name in names.items()}
    decoding = {
        "length_beam_size": model_args.length_beam_size,
        "reranker": model_args.reranker_name_or_path,
        "num_beams": training_args.generation_num_beams,
    }
    try:
        path = write_model_card(
            training_args.output_dir,
            source_lang=data_args.source_lang,
            target_lang=data_args.target_lang,
            dataset=data_args.dataset_name or (Path(folder).name if folder else "multi30k"),
            validation_split=splits.get("validation"),
            test_split=splits.get("test"),
            model_type=model_args.model_type,
            training_args=training_args,
            decoding=decoding,
            data_folder=folder,
            distilled=None if folder or data_args.dataset_name else False,
        )
        logger.info(f"Model card written to {path}")
    except Exception as error:
        command = f"python model_cards/model_card.py write {training_args.output_dir}"
        logger.warning(f"No model card written ({error}); write it with `{command}`.", exc_info=True)


if __name__ == "__main__":
    main()
    # The DDP wrapper keeps gloo's process group (and its threads) alive in a reference cycle; freed only at
    # interpreter exit, its threads abort the process ('terminate called without an active exception').
    gc.collect()
    PartialState().destroy_process_group()
