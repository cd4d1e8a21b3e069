#!/usr/bin/env python
"""The model card (README.md) of a training/train.py output folder, and its explicit push to the Hub.

    python model_cards/model_card.py write OUTPUT_DIR [--benchmark FILE] [--dataset multi30k] [--repo_id USER/NAME]
    python model_cards/model_card.py push OUTPUT_DIR --repo_id USER/NAME [--private]

This file gathers the folder's facts and renders template.md, which holds all of the card's text. Facts the folder
cannot know (languages, dataset, a benchmark) come from the caller, else from the folder's existing card.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from safetensors import safe_open

TEMPLATE = Path(__file__).resolve().with_name("template.md")
DEFAULT_LICENSE = "apache-2.0"
# Datasets whose name and split names the card knows; template.md adds their limitations and citation.
KNOWN_DATASETS = {"multi30k": {"name": "Multi30k", "validation": "val", "test": "test_2016_flickr"}}
# The columns of training/benchmark.py rows that the card shows, in this order, where some row fills them.
DECODE_COLUMNS = tuple(
    "system variant engine device batch_size latency_ms sentences_per_s speedup_vs_ar_greedy "
    "speedup_vs_ct2_int8_greedy bleu".split()
)
TRAIN_COLUMNS = tuple("system variant device batch_size step_ms tokens_per_s ratio_vs_nat".split())
# Checkpoints stay local, and so do Trainer's pickles: the Hub gets safetensors and JSON only.
OPTIONS = tuple(
    "source_lang target_lang dataset validation_split test_split model_type training_args "
    "decoding distilled data_folder data_description benchmark repo_id license".split()
)
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.bin", "*.pt", "*.pth"]


class ModelCardError(Exception):
    """A problem the user can fix (missing files, unknown languages, offline push): shown without a traceback."""


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_training_args(folder: Path, fallback=None) -> dict:
    """train.py's training_args.json (plain JSON: reading it runs no code), else the arguments object given."""
    if (folder / "training_args.json").is_file() or fallback is None:
        return read_json(folder / "training_args.json") or {}
    return fallback if isinstance(fallback, dict) else fallback.to_dict()


def count_parameters(folder: Path) -> int | None:
    """Parameters stored in model.safetensors (tied weights are stored once), without loading the tensors."""
    path = folder / "model.safetensors"
    if not path.is_file():
        return None
    with safe_open(path, framework="pt") as weights:
        return sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())


def read_results(folder: Path) -> dict:
    """all_results.json, overridden by the per-stage files (each stage writes its own last)."""
    stages = ("all_results.json", "train_results.json", "eval_results.json", "predict_results.json")
    return {key: value for name in stages for key, value in (read_json(folder / name) or {}).items()}


def read_benchmark(path) -> dict | None:
    """The rows `training/benchmark.py --output` writes, as the card's decoding and training-step tables."""
    if path is None:
        return None
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ModelCardError(f"--benchmark {path}: cannot be read as JSON ({error}).") from None
    if not (isinstance(rows, list) and rows and all(isinstance(row, dict) and "system" in row for row in rows)):
        example = '{"system": "GLAT", "batch_size": 1, "latency_ms": 6.5, ...}'
        raise ModelCardError(f"--benchmark {path}: not what `training/benchmark.py --output` writes: rows {example}.")
    train = [row for row in rows if row.get("kind") == "train"]
    decode = [row for row in rows if row.get("kind") != "train"]
    return {"source": Path(path).name, "decode": table(decode, DECODE_COLUMNS), "train": table(train, TRAIN_COLUMNS)}


def table(rows: list[dict], columns: tuple[str, ...]) -> dict | None:
    """The columns some row fills, and each row's cells as Markdown text (template.md names the columns)."""
    if not rows:
        return None
    columns = [key for key in columns if any(row.get(key) is not None for row in rows)]
    return {"columns": columns, "rows": [[cell(key, row.get(key)) for key in columns] for row in rows]}


def cell(key: str, value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}x" if key.startswith(("speedup", "ratio")) else f"{value:.{1 if abs(value) >= 10 else 2}f}"
    return "" if value is None else str(value).replace("|", "/")


def distilled_from(record: dict) -> str:
    """The dataset a training/distill.py folder was made from: its input folder or file, by default multi30k."""
    arguments = record.get("arguments") or {}
    if arguments.get("train_file") and not arguments.get("data_folder"):
        return Path(arguments["train_file"]).resolve().parent.name
    return Path(arguments.get("data_folder") or "multi30k").name


def previous_card_data(folder: Path) -> ModelCardData:
    """The metadata of the card already in the folder (empty when it has none that parses), to keep its facts."""
    path = folder / "README.md"
    try:  # ModelCard.load takes a missing file for a Hub repo id: never ask the Hub
        return ModelCard.load(path, ignore_metadata_errors=True).data if path.is_file() else ModelCardData()
    except Exception:
        return ModelCardData()


def build_model_card(output_dir, **options) -> ModelCard:
    """The card of a saved model folder as a huggingface_hub.ModelCard (nothing is written).

    `options` are OPTIONS (data, decoding: NPD length beam, reranker, beams; benchmark: a benchmark.py JSON file).
    Those left out come from the folder: training_args.json, generation_config.json, the existing card's metadata.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"build_model_card got unknown options {unknown}; it takes {list(OPTIONS)}")
    source_lang, target_lang, dataset, validation_split, test_split = map(options.get, OPTIONS[:5])
    model_type, training_args, decoding, distilled, data_folder = map(options.get, OPTIONS[5:10])
    data_description, benchmark, repo_id, license = map(options.get, OPTIONS[10:])
    folder = Path(output_dir)
    config = read_json(folder / "config.json")
    if config is None:
        raise ModelCardError(f"{folder} has no config.json: not a saved model folder.")
    previous = previous_card_data(folder)
    record = read_json(Path(data_folder) / "distill_results.json") if data_folder else None
    if record is not None:
        distilled = True if distilled is None else distilled
        if dataset is None or dataset == Path(data_folder).name:  # the folder's name describes the copy
            dataset = distilled_from(record)
    src, tgt = source_lang, target_lang
    if isinstance(previous.language, list) and len(previous.language) == 2:
        src, tgt = src or previous.language[0], tgt or previous.language[1]
    if not (src and tgt):
        raise ModelCardError("the languages are unknown: pass --source_lang and --target_lang (e.g. en de).")
    if dataset is None and previous.datasets:
        dataset = previous.datasets[0] if isinstance(previous.datasets, list) else previous.datasets
    known = KNOWN_DATASETS.get((dataset or "").lower(), {})
    old = (previous.eval_results or [None])[0]
    if test_split is None and old is not None and old.dataset_type == (dataset or "custom"):
        test_split = old.dataset_split
    validation_split = validation_split or known.get("validation", "validation")
    splits = {"eval": validation_split, "predict": test_split or known.get("test", "test")}

    args = read_training_args(folder, training_args)
    generation = read_json(folder / "generation_config.json") or {}
    state = read_json(folder / "trainer_state.json") or {}
    log = read_json(folder / "training_log.json") or state.get("log_history") or []
    results = read_results(folder)
    is_glat = config.get("model_type") == "glat" and model_type != "ar"
    glancing = args.get("glancing") or ("none" if model_type == "nat" else "glancing")
    saved = {key: generation.get(key) for key in ("length_beam_size", "num_iterations", "max_length", "num_beams")}
    saved["num_beams"] = args.get("generation_num_beams") or saved["num_beams"]
    given = {key: value for key, value in (decoding or {}).items() if value}
    decoding = {"length_beam_size": 1, "num_iterations": 1, "num_beams": 1}
    decoding |= {key: value for key, value in saved.items() if value} | given
    decoding["length_prior_weight"] = generation.get("length_prior_weight", 0)  # absent: saved before it existed
    if decoding.get("reranker"):
        decoding["reranker"] = Path(str(decoding["reranker"])).name

    evaluated = []
    for stage in (stage for stage in ("predict", "eval") if results.get(f"{stage}_bleu") is not None):
        scores = dict(bleu=round(float(results[f"{stage}_bleu"]), 2), samples=results.get(f"{stage}_samples"))
        repetition = results.get(f"{stage}_repetition_ratio")
        evaluated.append(dict(scores, stage=stage, split=splits[stage], repetition=repetition))
    signature = results.get("predict_bleu_signature") or results.get("eval_bleu_signature")
    if evaluated and signature is None:  # results saved without one were scored by glat_hf.metrics all the same
        from glat_hf.metrics import corpus_bleu  # imports transformers: only when needed

        signature = corpus_bleu(["x"], ["x"])["signature"]
    name = known.get("name", dataset)
    task = dict(task_type="translation", task_name=f"Translation {src}-{tgt}", dataset_config=f"{src}-{tgt}")
    data = dict(dataset_type=dataset or "custom", dataset_name=f"{name or 'custom'} {src}-{tgt}")
    metric = dict(metric_type="bleu", metric_name="sacreBLEU", metric_args={"signature": signature})
    # The test set; validation BLEU (which chose the checkpoint) only where there is no test set.
    scored = [dict(dataset_split=row["split"], metric_value=row["bleu"]) for row in evaluated[:1]]
    eval_results = [EvalResult(**task, **data, **metric, **row) for row in scored]
    ctc = is_glat and bool(config.get("use_ctc"))
    nat_tags = ["non-autoregressive", "glat" if glancing == "glancing" else "nat"] + ["ctc"] * ctc
    tags = ["translation", *(nat_tags if is_glat else ["autoregressive", "marian"]), "glat-hf"]
    tags += ["custom_code"] * (is_glat and "auto_map" in config) + ["knowledge-distillation"] * bool(distilled)
    hub = dict(library_name="transformers", pipeline_tag="translation", tags=tags, metrics=["bleu"])
    names = dict(model_name=repo_id or previous.model_name or folder.resolve().name, language=[src, tgt])
    license = license or previous.license or DEFAULT_LICENSE
    datasets = [dataset] if dataset else None
    card_data = ModelCardData(**hub, **names, license=license, datasets=datasets, eval_results=eval_results or None)
    logged = [entry for entry in log if "glancing_ratio" in entry]
    # What template.md reads, in four groups: the data, the model, the run and its results.
    data_facts = dict(src=src, tgt=tgt, dataset=dataset, dataset_name=name, dataset_key=(dataset or "").lower())
    data_facts.update(distilled=distilled, data_description=data_description, test_split=splits["predict"])
    teacher = record and {"name": Path(str(record.get("teacher", "?"))).name, "beams": record.get("num_beams", "?")}
    model_facts = dict(config=config, is_glat=is_glat, ctc=ctc, glancing=glancing, parameters=count_parameters(folder))
    model_facts.update(model_id=repo_id or str(folder), output_dir=str(folder), decoding=decoding, teacher=teacher)
    steps = state.get("global_step") or args.get("max_steps")
    anneal_steps = args.get("glancing_anneal_steps") or state.get("max_steps") or args.get("max_steps")
    run_facts = dict(
        args=args, steps=steps, epoch=state.get("epoch") or results.get("epoch"), anneal_steps=anneal_steps
    )
    run_facts.update(lambda_logged=(logged[0], logged[-1]) if logged else None)
    result_facts = dict(
        results=results, evaluated=evaluated, bleu_signature=signature, speed=read_benchmark(benchmark)
    )
    facts = {**data_facts, **model_facts, **run_facts, **result_facts}
    card = ModelCard.from_template(card_data, template_path=str(TEMPLATE), **facts)
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))  # the template's optional blocks leave blank runs


def write_model_card(output_dir, **options) -> Path:
    """Build the card (options: see build_model_card) and save it as OUTPUT_DIR/README.md."""
    path = Path(output_dir) / "README.md"
    build_model_card(output_dir, **options).save(path)
    return path


def push_to_hub(output_dir, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload the folder (checkpoints and pickles left out, README.md written if missing); returns the commit URL.

    Every foreseeable failure (offline, no token, refused token, Hub unreachable) is a one-line ModelCardError.
    """
    folder = Path(output_dir)
    if not (folder / "config.json").is_file():
        raise ModelCardError(f"cannot push {folder} to the Hub: it has no config.json (not a saved model folder).")
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise ModelCardError("cannot push to the Hub: offline (HF_HUB_OFFLINE=1); push from a machine online.")
    token = token or get_token()
    if not token:
        raise ModelCardError("cannot push to the Hub: no Hugging Face token (`hf auth login`, or set HF_TOKEN).")
    if not (folder / "README.md").is_file():
        write_model_card(folder, repo_id=repo_id)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        message, ignore = "Upload model trained with glat-hf", PUSH_IGNORE
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, ignore_patterns=ignore, commit_message=message)
    except OfflineModeIsEnabled:
        raise ModelCardError("cannot push to the Hub: offline (huggingface_hub is in offline mode).") from None
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        if status in (401, 403):
            refused = f"the token was refused for {repo_id} (HTTP {status}); it needs write access there"
            raise ModelCardError(f"cannot push to the Hub: {refused}.") from None
        raise ModelCardError(f"cannot push to the Hub: {str(error).splitlines()[0]}") from None
    except Exception as error:  # no network, DNS failure, refused connection: OSErrors, and httpx's own errors
        if isinstance(error, OSError) or type(error).__module__.startswith("httpx"):
            raise ModelCardError(f"cannot push to the Hub: huggingface.co cannot be reached ({error}).") from None
        raise
    return str(getattr(commit, "commit_url", commit))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write", help="write OUTPUT_DIR/README.md (no network)")
    write.add_argument("output_dir")
    write.add_argument("--benchmark", help="the JSON of `training/benchmark.py --output`: its rows go in the card")
    for option in ("--source_lang", "--target_lang", "--validation_split", "--test_split"):
        write.add_argument(option)
    write.add_argument("--dataset", help="the dataset: a Hub id, or a name such as multi30k")
    write.add_argument("--model_type", choices=["glat", "nat", "ar"], help="default: from the folder")
    write.add_argument("--distilled", choices=["yes", "no"], help="were the training targets an AR teacher's output?")
    write.add_argument("--data_description", help="a few words on the data, shown with the dataset")
    write.add_argument("--data_folder", help="the training data: a distill.py record there marks it distilled")
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
            options = {key: value for key, value in vars(args).items() if key not in ("command", "output_dir")}
            options["distilled"] = {"yes": True, "no": False}.get(args.distilled)
            print(f"Model card written to {write_model_card(args.output_dir, **options)}")
        else:
            commit = push_to_hub(args.output_dir, args.repo_id, private=args.private)
            print(f"Pushed {args.output_dir} to https://huggingface.co/{args.repo_id}: {commit}")
    except ModelCardError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
