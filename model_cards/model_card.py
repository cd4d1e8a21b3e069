#!/usr/bin/env python
"""Model cards for glat-hf output folders: a README.md that huggingface_hub.ModelCard reads, and the push.

    python model_cards/model_card.py write OUTPUT_DIR [--benchmark FILE] [--dataset multi30k] [--repo_id USER/NAME]
    python model_cards/model_card.py push OUTPUT_DIR --repo_id USER/NAME [--private]

The card is built from what a `training/train.py` output folder holds (config.json, generation_config.json,
*_results.json, training_args.bin, trainer_state.json, training_log.json, the safetensors header) plus what
the folder cannot know (languages, dataset, a benchmark JSON), given by the caller. Facts not given are
kept from the folder's existing README.md metadata, so rewriting a card to add a benchmark keeps them.
Writing a card never touches the network; pushing is a separate, explicit command.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import re
import struct
import sys
import zipfile
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE = Path(__file__).resolve().with_name("template.md")
DEFAULT_LICENSE = "apache-2.0"

GLAT_BIBTEX = """@inproceedings{qian-etal-2021-glancing,
    title = "Glancing Transformer for Non-Autoregressive Neural Machine Translation",
    author = "Qian, Lihua and Zhou, Hao and Bao, Yu and Wang, Mingxuan and Qiu, Lin and Zhang, Weinan and Yu, Yong and Li, Lei",
    booktitle = "Proceedings of the 59th Annual Meeting of the Association for Computational Linguistics and the 11th International Joint Conference on Natural Language Processing (Volume 1: Long Papers)",
    year = "2021",
    address = "Online",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/2021.acl-long.155",
    doi = "10.18653/v1/2021.acl-long.155",
    pages = "1993--2003"
}"""

MULTI30K_BIBTEX = """@inproceedings{elliott-etal-2016-multi30k,
    title = "{M}ulti30{K}: Multilingual {E}nglish-{G}erman Image Descriptions",
    author = "Elliott, Desmond and Frank, Stella and Sima{'}an, Khalil and Specia, Lucia",
    booktitle = "Proceedings of the 5th Workshop on Vision and Language",
    year = "2016",
    address = "Berlin, Germany",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W16-3210",
    doi = "10.18653/v1/W16-3210",
    pages = "70--74"
}"""

# What the card says about datasets it knows; any other dataset is described by its name only.
KNOWN_DATASETS = {
    "multi30k": {
        "name": "Multi30k",
        "validation": "val",
        "test": "test_2016_flickr",
        "limitation": "Trained on Multi30k only: about 29,000 short, simple descriptions of Flickr photos of everyday "
        "scenes. Expect much worse output on other domains (news, dialogue, technical text), on long sentences and "
        "on words that such captions do not use; the captions also carry the biases of their photos and annotators "
        "(e.g. in how people are described).",
        "citation": MULTI30K_BIBTEX,
    },
}

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech", "ro": "Romanian", "zh": "Chinese"}
EXAMPLES = {
    "en": "Two dogs are playing in the snow.",
    "de": "Zwei Hunde spielen im Schnee.",
    "fr": "Deux chiens jouent dans la neige.",
}

COUNT_RULES = {
    "adaptive": "S = λ·d(Y, Ŷ): more of the reference the worse the first pass (adaptive, paper eq. 2)",
    "fixed": "S = λ·T, a fixed share of the target (Tables 3-4 baseline)",
    "decreasing": "S = λ·T with λ annealed over training (decreasing, Table 3)",
}
SPEED_COLUMNS = {
    "system": "system",
    "device": "device",
    "batch_size": "batch",
    "latency_ms": "latency (ms)",
    "sentences_per_s": "sentences/s",
    "speedup_vs_ar_greedy": "speed-up vs AR greedy",
}


class ModelCardError(Exception):
    """A problem the user can fix (missing files, unknown languages, offline push): shown without a traceback."""


# ---------------------------------------------------------------------------------------------- reading
def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


class _Stub:
    """Stands in for every class named in a pickle, so reading training_args.bin runs none of their code."""

    def __init__(self, *args, **kwargs):
        self._stub_args = args

    def __setstate__(self, state):
        if isinstance(state, tuple):  # (dict, slots) pickles
            state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
        if isinstance(state, dict):
            self.__dict__.update(state)

    def __setitem__(self, key, value):  # dict subclasses fill themselves item by item
        self.__dict__[key] = value

    def append(self, value):  # list subclasses too
        self.__dict__.setdefault("_stub_items", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("_stub_items", []).extend(values)


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return type(name, (_Stub,), {"__module__": module})

    def persistent_load(self, pid):  # tensors: training arguments hold none
        return None


def _plain(value):
    """Stubs back to plain values: an enum or torch.device becomes its argument, a dataclass its fields."""
    if isinstance(value, _Stub):
        if "_stub_items" in vars(value):
            return _plain(value._stub_items)
        fields = {k: v for k, v in vars(value).items() if k != "_stub_args"}
        if fields:
            return {k: _plain(v) for k, v in fields.items()}
        return _plain(value._stub_args[0]) if len(value._stub_args) == 1 else None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def read_training_args(path: Path) -> dict | None:
    """The fields of a Trainer's training_args.bin, read without unpickling code.

    torch.load(weights_only=False) would run whatever the pickle names, and a card writer may be
    pointed at a downloaded folder; here every class is a stub and only the stored values are kept.
    """
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            payload = archive.read(name)
    except (zipfile.BadZipFile, StopIteration):
        payload = path.read_bytes()  # the legacy, non-zip torch.save format starts with the pickle itself
    try:
        args = _plain(_StubUnpickler(io.BytesIO(payload)).load())
    except Exception as error:  # an unreadable file costs the training section, not the card
        print(f"warning: could not read {path}: {error}", file=sys.stderr)
        return None
    return args if isinstance(args, dict) else None


def count_parameters(folder: Path) -> int | None:
    """Parameters stored in model.safetensors, from its header alone (tied weights are stored once)."""
    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    with path.open("rb") as file:
        (size,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(size))
    return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")


def read_results(folder: Path) -> dict:
    """all_results.json, overridden by the per-stage files (they are written last by each stage)."""
    results = {}
    for name in ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json"):
        results.update(read_json(folder / name) or {})
    return results


def read_benchmark(benchmark) -> dict | None:
    """Speed rows from a benchmark JSON (a path, a list of rows, or a dict holding one), as table cells."""
    if benchmark is None:
        return None
    source = None
    if isinstance(benchmark, (str, Path)):
        source = Path(benchmark).name
        try:
            benchmark = json.loads(Path(benchmark).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelCardError(f"--benchmark {benchmark}: no such file.") from None
        except json.JSONDecodeError as error:
            raise ModelCardError(f"--benchmark {benchmark}: not JSON ({error}).") from None
    rows = benchmark
    if isinstance(benchmark, dict):
        candidates = [benchmark.get(key) for key in ("speed", "rows", "results")] + list(benchmark.values())
        rows = next((candidate for candidate in candidates if _is_rows(candidate)), None)
    if not _is_rows(rows):
        raise ModelCardError("the benchmark JSON holds no rows: expected a list of objects like "
                             '{"system", "device", "batch_size", "latency_ms", "sentences_per_s", "speedup_vs_ar_greedy"}.')  # fmt: skip
    keys = [key for key in SPEED_COLUMNS if any(key in row for row in rows)]
    keys += [key for row in rows for key in row if key not in keys and not isinstance(row[key], (dict, list))]
    keys = list(dict.fromkeys(keys))
    cells = [[_cell(key, row.get(key)) for key in keys] for row in rows]
    return {"columns": [SPEED_COLUMNS.get(key, key) for key in keys], "rows": cells, "source": source}


def _is_rows(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def _cell(key: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if key.startswith("speedup"):
            return f"{value:.2f}x"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value).replace("|", "/")


def read_distillation(data_folder) -> dict | None:
    """What training/distill.py recorded (distill_results.json) in a folder of distilled data; None for other data."""
    return read_json(Path(data_folder) / "distill_results.json") if data_folder else None


def distilled_from(record: dict) -> str:
    """The dataset a distilled folder was made from: distill.py's input folder or file, default multi30k."""
    arguments = record.get("arguments") or {}
    if arguments.get("data_folder"):
        return Path(arguments["data_folder"]).name
    if arguments.get("train_file"):
        return Path(arguments["train_file"]).resolve().parent.name
    return "multi30k"


def previous_card_data(folder: Path) -> ModelCardData | None:
    """The metadata of the card already in the folder, if it has one that parses."""
    path = folder / "README.md"
    if not path.is_file():
        return None
    try:
        return ModelCard.load(path, ignore_metadata_errors=True).data
    except Exception:
        return None


# --------------------------------------------------------------------------------------------- describing
def describe_model(config: dict, model_type: str | None, args: dict | None) -> dict:
    """Which system the folder holds: title, tags and a paragraph, from config.json and the glancing mode."""
    if config.get("model_type") != "glat" or model_type == "ar":
        return {
            "kind": "ar",
            "title": "Autoregressive Transformer baseline (MarianMTModel)",
            "tags": ["autoregressive", "marian"],
            "text": "The autoregressive baseline of glat-hf: transformers' own `MarianMTModel` with the same sizes and "
            "tokenizer as the project's GLAT models, decoding left to right with beam search. It is the "
            "reference for quality and speed, the teacher for sequence-level distillation and the reranker "
            "for noisy parallel decoding (NPD) of the non-autoregressive models.",
        }
    glancing = (args or {}).get("glancing") or ("none" if model_type == "nat" else "glancing")
    ctc = bool(config.get("use_ctc"))
    base = ("GLAT" if glancing == "glancing" else "NAT-base" if glancing == "none"
            else "NAT with uniform sampling (Mask-Predict style)")  # fmt: skip
    title = f"{base}+CTC" if ctc and glancing != "uniform" else f"{base}, CTC" if ctc else base
    parallel = ("It predicts the target length from the encoder, then produces every target token at once in "
                "ONE parallel decoder pass (no causal mask, decoder input copied from the source).")  # fmt: skip
    if ctc:
        parallel = (f"Its decoder produces {config.get('upsample_ratio', 2)}x as many positions as the source has "
                    "tokens, all at once in ONE parallel pass, and is trained with CTC: the output merges "
                    "repeated tokens and drops `<blank>`s, so no length needs predicting.")  # fmt: skip
    texts = {
        "glancing": "GLAT, the Glancing Transformer (Qian et al., ACL 2021), is a non-autoregressive translation "
        f"model. {parallel} Training runs two passes: the first decodes without gradient and measures the "
        "distance d between its output and the reference; λ·d reference tokens are then shown (\"glanced\") "
        "in the decoder input of the second pass, which learns the rest. The model thus learns word "
        "dependencies gradually, and still decodes in a single pass.",
        "none": "NAT-base, the non-autoregressive baseline of Qian et al. (ACL 2021): the same model as GLAT, "
        f"trained without glancing (every position is learned from the copied source alone). {parallel}",
        "uniform": "A non-autoregressive model trained with Mask-Predict's uniform sampling instead of glancing "
        f"(the comparison of Qian et al., ACL 2021, Table 7): a uniformly drawn share of reference tokens "
        f"is shown in the decoder input, whatever the first pass predicted. {parallel}",
    }
    tags = ["non-autoregressive", "glat" if glancing == "glancing" else "nat"] + (["ctc"] if ctc else [])
    return {"kind": "glat", "title": title, "tags": tags, "text": texts[glancing], "glancing": glancing, "ctc": ctc}


def _millions(count: int | None) -> str:
    if count is None:
        return "unknown"
    return f"{count / 1e6:.1f}M" if count >= 100_000 else f"{count:,}"


def model_sizes(config: dict, parameters: int | None, is_glat: bool) -> list[tuple[str, str]]:
    rows = [
        ("parameters", _millions(parameters)),
        ("d_model", config.get("d_model")),
        ("layers (encoder + decoder)", f"{config.get('encoder_layers')} + {config.get('decoder_layers')}"),
        ("attention heads", config.get("encoder_attention_heads")),
        ("feed-forward size", config.get("encoder_ffn_dim")),
        ("vocabulary (joint BPE)", config.get("vocab_size")),
        ("max positions", config.get("max_position_embeddings")),
    ]
    if is_glat:
        rows += [("decoder input", config.get("decoder_input")), ("dropout", config.get("dropout"))]
        if config.get("use_ctc"):
            rows.append(("CTC upsample ratio", config.get("upsample_ratio")))
        else:
            rows.append(("length classes (max_target_length)", config.get("max_target_length")))
    else:
        rows.append(("dropout", config.get("dropout")))
    return [(name, value) for name, value in rows if value is not None]


def _g(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def training_rows(args: dict | None, config: dict, results: dict, state: dict | None, data: dict, is_glat: bool):
    """The settings table: data, steps, batch, optimizer, schedule, regularisation, time."""
    if not args:
        return []
    rows = [("data", data["text"]), ("knowledge distillation", data["distillation"])]
    steps = (state or {}).get("global_step") or args.get("max_steps")
    epoch = (state or {}).get("epoch") or results.get("epoch")
    if steps:
        rows.append(("steps", f"{steps:,}" + (f" ({epoch:.1f} epochs)" if epoch else "")))
    batch = f"{args.get('per_device_train_batch_size')} sentence pairs per device"
    if args.get("gradient_accumulation_steps", 1) > 1:
        batch += f" x {args['gradient_accumulation_steps']} accumulation steps"
    samples = results.get("train_samples")
    if samples and epoch and steps:
        batch += f"; about {round(samples * epoch / steps):,} pairs per optimizer step in all"
    if args.get("train_sampling_strategy") == "group_by_length":
        batch += " (length-grouped)"
    rows.append(("batch", batch))
    betas = f"β1 {_g(args.get('adam_beta1'))}, β2 {_g(args.get('adam_beta2'))}, ε {_g(args.get('adam_epsilon'))}"
    optimizer = f"{args.get('optim', 'adamw')} ({betas})"
    if args.get("weight_decay"):
        optimizer += f", weight decay {_g(args['weight_decay'])}"
    if args.get("max_grad_norm"):
        optimizer += f", gradient norm clipped at {_g(args['max_grad_norm'])}"
    rows.append(("optimizer", optimizer))
    warmup = args.get("warmup_steps") or 0
    warmup = f"{warmup:g} warmup steps" if warmup >= 1 else f"warmup ratio {warmup:g}" if warmup else "no warmup"
    rows.append(("learning rate", f"{_g(args.get('learning_rate'))}, {args.get('lr_scheduler_type')} schedule, {warmup}"))
    if is_glat:
        rows.append(("label smoothing", _g(config.get("label_smoothing"))))
        if not config.get("use_ctc"):  # CTC has no length predictor
            rows.append(("length loss weight", _g(config.get("length_loss_factor"))))
    else:
        rows.append(("label smoothing", _g(args.get("label_smoothing_factor", 0.0))))
    precision = "bf16" if args.get("bf16") else "fp16" if args.get("fp16") else "fp32"
    rows += [("precision", precision), ("seed", args.get("seed"))]
    if results.get("train_runtime"):
        rows.append(("training time", f"{results['train_runtime'] / 60:.1f} min"))
    return [(name, value) for name, value in rows if value is not None]


def glancing_section(args: dict | None, config: dict, state: dict | None, log: list | None, model: dict) -> dict | None:
    """λ schedule and glancing variant, with the λ actually logged; None for NAT-base and the AR model."""
    if model["kind"] != "glat" or model.get("glancing") == "none" or not args:
        return None
    start, end = args.get("glancing_ratio_start", 0.5), args.get("glancing_ratio_end", 0.3)
    total = args.get("glancing_anneal_steps") or (state or {}).get("max_steps") or args.get("max_steps")
    if args.get("glancing_schedule") == "constant":
        schedule = f"constant {_g(start)}"
    else:
        schedule = f"linear {_g(start)} → {_g(end)}" + (f" over {total:,} steps" if total else "")
    logged = [entry for entry in (log or []) if "glancing_ratio" in entry]
    rows = [("λ schedule", schedule)]
    if logged:
        first, last = logged[0], logged[-1]
        rows.append(("λ logged", f"{first['glancing_ratio']:.3f} (step {first['step']:,}) → "
                                  f"{last['glancing_ratio']:.3f} (step {last['step']:,})"))  # fmt: skip
        for key, name in (("glanced_fraction", "glanced share of target positions"),
                          ("first_pass_accuracy", "first-pass accuracy")):  # fmt: skip
            if key in first and key in last:
                rows.append((f"{name} (logged)", f"{first[key]:.3f} → {last[key]:.3f}"))
    if model["glancing"] == "uniform":
        text = ("Mask-Predict's uniform sampling: the number of reference tokens shown is drawn uniformly for each "
                "sentence and does not depend on λ or on the first pass (the λ values are logged but unused).")  # fmt: skip
    else:
        text = (f"λ, the glancing ratio: {schedule} (the paper, §4.1: linear 0.5 → 0.3 on WMT14, constant 0.5 on "
                "IWSLT16). It is derived from the training step, so a resumed run continues the schedule.")  # fmt: skip
        rows += [
            ("glanced tokens", COUNT_RULES.get(args.get("glance_count"), args.get("glance_count"))),
            ("distance d", args.get("glance_distance")),
            ("selection of glanced positions", args.get("glance_selection")),
        ]
    rows += [
        ("decoder input", config.get("decoder_input")),
        ("dropout in the two passes", "same masks" if args.get("glancing_same_dropout", True) else "independent masks"),
    ]
    if model.get("ctc"):
        rows.append(("reference for glancing", "the best CTC alignment of the target under pass 1 (Viterbi)"))
    return {"text": text, "rows": [(name, value) for name, value in rows if value is not None]}


def decoding_text(model: dict, decoding: dict) -> str:
    if model["kind"] == "ar":
        return f"beam {decoding.get('num_beams') or 1}"
    text = "one parallel pass" if model.get("ctc") else "argmax, one parallel pass"
    beam = decoding.get("length_beam_size") or 1
    if beam > 1 and not model.get("ctc"):
        text = f"NPD over {beam} lengths, one parallel pass"
    if (decoding.get("num_iterations") or 1) > 1:
        text += f", {decoding['num_iterations']} refinement iterations"
    if decoding.get("reranker"):
        text += f", reranked by {Path(str(decoding['reranker'])).name}"
    return text


def limitations(model: dict, config: dict, results: dict, data: dict, parameters: int | None, steps) -> list[str]:
    """What a user should know before relying on the model; model-specific numbers where the folder has them."""
    items = []
    repetition = results.get("predict_repetition_ratio", results.get("eval_repetition_ratio"))
    if model["kind"] == "glat":
        gap = ("Non-autoregressive: all target tokens are predicted at once, independently given the source and "
               "the length, so quality trails an autoregressive model of the same size, most on long sentences. "
               "The paper narrows the gap with sequence-level knowledge distillation")  # fmt: skip
        gap += {False: ", which this model was not trained with.",
                True: "; this model was trained on distilled targets."}.get(
            data["distilled"], " (whether this model's data was distilled is not recorded).")  # fmt: skip
        items.append(gap)
        if model.get("ctc"):
            ratio = config.get("upsample_ratio", 2)
            items.append(f"Output length is bounded by the CTC upsampling: at most {ratio}x the source length in "
                         f"tokens (before repeats and blanks are removed); sources are limited to "
                         f"{config.get('max_position_embeddings', 0) // ratio} tokens.")  # fmt: skip
        else:
            classes = config.get("max_target_length")
            items.append(f"The target length is one of {classes} classes predicted from the source "
                         f"(max_target_length), so no output is longer than {classes} tokens (counting `</s>`), "
                         "and a wrongly predicted length truncates or stretches the sentence; NPD "
                         "(`length_beam_size`) tries several lengths.")  # fmt: skip
        measured = "" if repetition is None else f" {repetition:.1%} of the evaluated output tokens repeat the one before."
        items.append("Parallel decoding tends to repeat tokens or drop words (the multi-modality problem of "
                      f"non-autoregressive translation).{measured}")  # fmt: skip
    else:
        items.append("Autoregressive decoding takes one decoder step per output token, so latency grows with the "
                     "output length; it is the quality and speed reference, not the fast model.")  # fmt: skip
    positions = config.get("max_position_embeddings")
    if positions and not model.get("ctc"):
        limit = positions - 1  # the pipeline's limit for both: GLAT's encoder prepends <length>
        items.append(f"Sources longer than {limit} tokens do not fit: the `glat-translation` pipeline truncates "
                     "them with a warning" + (", `generate` raises a `ValueError`." if model["kind"] == "glat" else "."))  # fmt: skip
    items.append(data.get("limitation") or f"Trained on {data['name']} only; quality on other domains is unknown.")
    if (parameters and parameters < 50e6) or (steps and steps < 100_000):
        trained = f"{steps:,}" if steps else "an unknown number of"
        items.append(f"A small model ({_millions(parameters)} parameters) trained for {trained} steps: a research "
                     "reproduction of the method, not a production translator.")  # fmt: skip
    items.append("BLEU is measured against a single reference on detokenized text (sacreBLEU); it does not "
                 "compare with the paper's tokenized BLEU, nor across test sets.")  # fmt: skip
    return items


# ------------------------------------------------------------------------------------------------ building
def _as_dict(training_args) -> dict | None:
    if training_args is None or isinstance(training_args, dict):
        return training_args
    return training_args.to_dict()


def build_model_card(
    output_dir,
    *,
    source_lang: str | None = None,
    target_lang: str | None = None,
    dataset: str | None = None,
    validation_split: str | None = None,
    test_split: str | None = None,
    model_type: str | None = None,
    training_args=None,
    decoding: dict | None = None,
    distilled: bool | None = None,
    data_description: str | None = None,
    data_folder=None,
    benchmark=None,
    repo_id: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The card of a saved model folder, as a huggingface_hub.ModelCard (nothing is written).

    `training_args` (a TrainingArguments or its dict) defaults to the folder's training_args.bin;
    `decoding` ({"length_beam_size", "num_iterations", "reranker", "num_beams"}) to its generation
    config; languages, dataset, split names, license and repo id to its existing README.md metadata.
    `distilled` (True/False/None = not recorded) says whether the targets were an AR teacher's output;
    a `data_folder` written by training/distill.py says so itself (its distill_results.json names the
    teacher and the data it was made from, which then is the card's dataset).
    """
    folder = Path(output_dir)
    config = read_json(folder / "config.json")
    if config is None:
        raise ModelCardError(f"{folder} has no config.json: not a saved model folder.")
    previous = previous_card_data(folder)
    previous_result = (previous.eval_results or [None])[0] if previous else None
    record = read_distillation(data_folder)
    if record is not None:
        if distilled is None:
            distilled = True
        if dataset is None or dataset == Path(data_folder).name:  # the folder's name describes the copy
            dataset = distilled_from(record)
        teacher = Path(str(record.get("teacher", "an AR teacher"))).name
        data_description = data_description or f"targets: beam-{record.get('num_beams', '?')} translations by {teacher}"

    languages = [source_lang, target_lang]
    if None in languages and previous and isinstance(previous.language, list) and len(previous.language) == 2:
        languages = [lang or old for lang, old in zip(languages, previous.language)]
    if None in languages:
        raise ModelCardError("the languages are unknown: pass --source_lang and --target_lang (e.g. en de).")
    src, tgt = languages
    if dataset is None and previous and previous.datasets:
        dataset = previous.datasets[0] if isinstance(previous.datasets, list) else previous.datasets
    known = KNOWN_DATASETS.get((dataset or "").lower(), {})
    dataset_title = known.get("name", dataset or "unspecified parallel data")
    if test_split is None and previous_result is not None and previous_result.dataset_type == (dataset or "custom"):
        test_split = previous_result.dataset_split
    splits = {"validation": validation_split or known.get("validation", "validation"),
              "test": test_split or known.get("test", "test")}  # fmt: skip
    license = license or (previous.license if previous and previous.license else DEFAULT_LICENSE)
    model_name = repo_id or (previous.model_name if previous and previous.model_name else folder.resolve().name)
    model_id = repo_id or str(folder)

    args = _as_dict(training_args) if training_args is not None else read_training_args(folder / "training_args.bin")
    generation = read_json(folder / "generation_config.json") or {}
    state = read_json(folder / "trainer_state.json")
    log = read_json(folder / "training_log.json") or (state or {}).get("log_history")
    results = read_results(folder)
    parameters = count_parameters(folder)
    model = describe_model(config, model_type, args)
    is_glat = model["kind"] == "glat"

    decoding = {key: value for key, value in (decoding or {}).items() if value is not None}
    decoding.setdefault("length_beam_size", generation.get("length_beam_size") or 1)
    decoding.setdefault("num_iterations", generation.get("num_iterations") or 1)
    decoding.setdefault("max_length", generation.get("max_length"))
    if not decoding.get("num_beams"):
        decoding["num_beams"] = (args or {}).get("generation_num_beams") or generation.get("num_beams") or 1

    pair = f"{LANGUAGE_NAMES.get(src, src)} → {LANGUAGE_NAMES.get(tgt, tgt)}"
    distillation = {True: "yes: trained on an autoregressive teacher's translations (sequence-level KD)",
                    False: "no: trained on the original references"}.get(distilled, "not recorded")  # fmt: skip
    train_samples = results.get("train_samples")
    data_text = f"{dataset_title}, {pair}" + (f", {train_samples:,} sentence pairs" if train_samples else "")
    if data_description:
        data_text += f" ({data_description})"
    data = {"name": dataset_title, "text": data_text, "distillation": distillation, "distilled": distilled,
            "limitation": known.get("limitation")}  # fmt: skip

    signature = results.get("predict_bleu_signature") or results.get("eval_bleu_signature")
    if signature is None and results.get("eval_bleu") is not None:
        signature = _default_bleu_signature()
    rows, eval_results = [], []
    for prefix, split in (("predict", "test"), ("eval", "validation")):
        if results.get(f"{prefix}_bleu") is None:
            continue
        bleu = round(float(results[f"{prefix}_bleu"]), 2)
        repetition = results.get(f"{prefix}_repetition_ratio")
        rows.append({
            "dataset": dataset_title, "split": splits[split], "bleu": f"{bleu:.2f}",
            "samples": f"{results[f'{prefix}_samples']:,}" if results.get(f"{prefix}_samples") else "",
            "repetition": f"{repetition:.1%}" if repetition is not None else "",
            "decoding": decoding_text(model, decoding),
        })  # fmt: skip
        if split == "test" or not eval_results:  # validation BLEU selected the model: reported only without a test set
            eval_results.append(EvalResult(
                task_type="translation", task_name=f"Translation {src}-{tgt}", dataset_type=dataset or "custom",
                dataset_name=f"{dataset_title} {src}-{tgt}", dataset_config=f"{src}-{tgt}", dataset_split=splits[split],
                metric_type="bleu", metric_name="sacreBLEU", metric_value=bleu, metric_args={"signature": signature},
            ))  # fmt: skip

    tags = ["translation", *model["tags"], "glat-hf"]
    if is_glat and "auto_map" in config:
        tags.append("custom_code")
    if distilled:
        tags.append("knowledge-distillation")
    card_data = ModelCardData(
        language=[src, tgt],
        license=license,
        library_name="transformers",
        pipeline_tag="translation",
        tags=tags,
        datasets=[dataset] if dataset else None,
        metrics=["bleu"],
        model_name=model_name,
        eval_results=eval_results or None,
    )
    summary = f"{model['title']} for {pair} translation, trained with glat-hf on {dataset_title}"
    if results.get("predict_bleu") is not None:
        summary += f": BLEU {results['predict_bleu']:.2f} on {splits['test']} (sacreBLEU)"
    summary += "."
    steps = (state or {}).get("global_step") or (args or {}).get("max_steps")
    citations = [GLAT_BIBTEX] + ([known["citation"]] if known.get("citation") else [])
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=f"{model['title']}: {src} → {tgt}" + (f" ({dataset_title})" if dataset else ""),
        summary=summary,
        model_description=model["text"],
        sizes=model_sizes(config, parameters, is_glat),
        is_glat=is_glat,
        use_ctc=bool(config.get("use_ctc")),
        upsample_ratio=config.get("upsample_ratio", 2),
        model_id=model_id,
        example=EXAMPLES.get(src, f"A sentence in {LANGUAGE_NAMES.get(src, src)}."),
        decoding=decoding,
        num_beams=decoding["num_beams"],
        training_rows=training_rows(args, config, results, state, data, is_glat),
        glancing=glancing_section(args, config, state, log, model),
        results=rows,
        bleu_signature=signature,
        speed=read_benchmark(benchmark),
        output_hint=str(folder),
        limitations=limitations(model, config, results, data, parameters, steps),
        citation="\n\n".join(citations),
    )
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))  # the template's optional blocks leave blank runs


def _default_bleu_signature() -> str:
    """The signature of glat_hf.metrics' BLEU (sacrebleu defaults), for results saved without one."""
    from sacrebleu.metrics import BLEU

    bleu = BLEU()
    bleu.corpus_score(["x"], [["x"]])  # the signature counts references: it exists once something was scored
    return str(bleu.get_signature())


def write_model_card(output_dir, **options) -> Path:
    """Build the card (see build_model_card for the options) and save it as OUTPUT_DIR/README.md."""
    card = build_model_card(output_dir, **options)
    path = Path(output_dir) / "README.md"
    card.save(path)
    return path


# ------------------------------------------------------------------------------------------------- pushing
def hub_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as set since."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def push_to_hub(output_dir, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Create the Hub repo (if needed) and upload the folder, checkpoints left out; returns the commit URL.

    Writes README.md first when the folder has none. Every foreseeable failure (offline, no token,
    refused token, Hub unreachable) is a ModelCardError with one line saying what to do.
    """
    folder = Path(output_dir)
    if not (folder / "config.json").is_file():
        raise ModelCardError(f"cannot push {folder} to the Hub: it has no config.json (not a saved model folder).")
    if hub_offline():
        raise ModelCardError("cannot push to the Hub: offline (HF_HUB_OFFLINE=1). Run the push on a machine with "
                             "internet access, without HF_HUB_OFFLINE set.")  # fmt: skip
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = token or get_token()
    if not token:
        raise ModelCardError("cannot push to the Hub: no Hugging Face token. Log in with `hf auth login` or set HF_TOKEN "
                             "(a token with write access).")  # fmt: skip
    if not (folder / "README.md").is_file():
        write_model_card(folder, repo_id=repo_id)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message="Upload model trained with glat-hf",
            # checkpoints stay local, and so do Trainer's pickles (training_args.bin): the Hub gets safetensors only
            ignore_patterns=["checkpoint-*", "checkpoint-*/**", "runs/**", "*.bin", "*.pt", "*.pth"],
        )  # fmt: skip
    except OfflineModeIsEnabled:
        raise ModelCardError("cannot push to the Hub: offline (huggingface_hub is in offline mode).") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            raise ModelCardError(f"cannot push to the Hub: the token was refused for {repo_id} (HTTP {status}); "
                                 "it needs write access to that namespace.") from None  # fmt: skip
        raise ModelCardError(f"cannot push to the Hub: {str(error).splitlines()[0]}") from None
    except OSError as error:  # no network, DNS failure, refused connection (httpx errors are not all OSErrors)
        raise ModelCardError(f"cannot push to the Hub: huggingface.co cannot be reached ({error}).") from None
    except Exception as error:
        if type(error).__module__.startswith("httpx"):
            raise ModelCardError(f"cannot push to the Hub: huggingface.co cannot be reached ({error}).") from None
        raise
    return str(getattr(commit, "commit_url", commit))


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write OUTPUT_DIR/README.md (no network)")
    write.add_argument("output_dir")
    write.add_argument("--benchmark", help="a benchmark JSON (training/benchmark.py) whose speed rows go in the card")
    write.add_argument("--source_lang")
    write.add_argument("--target_lang")
    write.add_argument("--dataset", help="the dataset: a Hub id, or a name such as multi30k")
    write.add_argument("--validation_split")
    write.add_argument("--test_split")
    write.add_argument("--model_type", choices=["glat", "nat", "ar"], help="default: from config.json and training_args.bin")
    write.add_argument("--distilled", choices=["yes", "no"], help="were the training targets an AR teacher's output?")
    write.add_argument("--data_description", help="a few words on the data, shown with the dataset")
    write.add_argument("--data_folder", help="the training data folder: distill.py's record there marks distilled data")
    write.add_argument("--repo_id", help="the Hub id the usage examples load from (default: the folder path)")
    write.add_argument("--license", help=f"default: the existing card's, else {DEFAULT_LICENSE}")
    push = commands.add_parser("push", help="upload OUTPUT_DIR to the Hub (needs internet and a token)")
    push.add_argument("output_dir")
    push.add_argument("--repo_id", required=True, help="USER/NAME or ORG/NAME")
    push.add_argument("--private", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "write":
            options = {key: getattr(args, key) for key in ("benchmark", "source_lang", "target_lang", "dataset",
                       "validation_split", "test_split", "model_type", "data_description", "data_folder", "repo_id",
                       "license")}  # fmt: skip
            options["distilled"] = {"yes": True, "no": False}.get(args.distilled)
            print(f"Model card written to {write_model_card(args.output_dir, **options)}")
        else:
            print(f"Pushed {args.output_dir} to https://huggingface.co/{args.repo_id}: "
                  f"{push_to_hub(args.output_dir, args.repo_id, private=args.private)}")  # fmt: skip
    except ModelCardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
