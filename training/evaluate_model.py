"""Translate test sets with a trained model and record one result row per test set in a results JSON file.

    python training/evaluate_model.py outputs/glat_distilled --system "GLAT + NPD (m=7, AR rerank)" \\
        --method glat_npd7_ar --data distilled --length_beam_size 7 --reranker outputs/multi30k_en_de_ar \\
        --results results/multi30k_en_de.json --train_command "python training/train.py ..."

Works for GLAT models (single pass, NPD with self or AR reranking, Mask-Predict iterations, CTC) and for the
autoregressive MarianMTModel (`--num_beams`). BLEU is sacreBLEU on the detokenized output against the raw
references, with its signature. For a GLAT model with a length predictor a row also carries the BLEU with the
reference length given (`oracle_length_bleu`: decoder quality apart from length prediction; `--oracle_lengths
FILE` gives the lengths of other translations instead, such as the teacher's, and the predictor's report against
them, `oracle_length_prediction`) and how often the predicted length is the reference's (`length_prediction`;
`output_lengths`, in every row, is the same report for the written translations), and whether the decoder uses
glanced words (`glanced_accuracy`: its token accuracy on the other positions, with reference words glanced at
random positions and without; the two passes of glancing training). Every row has BLEU by source length
(`bleu_by_length`, buckets of `--length_buckets` words; paper Figure 4). A row with the same system, data and test
set is replaced in place, so rerunning a command updates its rows. `--table FILE` prints a results file as Markdown
(`--systems REGEX`: only the rows whose system matches; `--by_length`: their BLEU by source length).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import glat_hf  # noqa: F401  (registers "glat" with the Auto classes)
from glat_hf.data import DATA_DIR_VARIABLE, column, data_dir, load_multi30k, load_parallel_folder
from glat_hf.glancing import select_glance_positions
from glat_hf.metrics import bleu_by_length, corpus_bleu, length_prediction, repetition_ratio, token_lengths
from glat_hf.modeling_glat import LENGTH_PRIOR_WEIGHT, GlatForConditionalGeneration
from glat_hf.translation import resolve_device, translate

ROW_KEYS = ("system", "data", "test_set")


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="A saved model folder (train.py output or checkpoint).")
    parser.add_argument("--system", help="The row's system name, e.g. 'GLAT + NPD (m=7, AR rerank)'.")
    parser.add_argument("--method", help="The row's method: ar_greedy, ar_beam4, nat, glat, glat_npd7_ar, ...")
    parser.add_argument("--data", choices=["raw", "distilled"], help="What the model was trained on.")
    parser.add_argument("--results", type=Path, help="The JSON results file to add the rows to.")
    parser.add_argument("--train_command", default="", help="The command that trained the model (kept in the row).")
    parser.add_argument("--data_folder", help="A folder of {split}.{lang} files; default Multi30k ($GLAT_DATA_DIR).")
    parser.add_argument(
        "--test_split",
        "--test_splits",
        dest="test_splits",
        nargs="+",
        default=["test_2016_flickr", "test_2017_flickr"],
    )
    parser.add_argument("--source_lang", default="en")
    parser.add_argument("--target_lang", default="de")
    parser.add_argument("--length_beam_size", type=int, help="GLAT: NPD length candidates (m).")
    parser.add_argument("--reranker", "--reranker_name_or_path", help="GLAT: an AR model folder that reranks NPD.")
    parser.add_argument("--num_iterations", type=int, help="GLAT: Mask-Predict refinement passes.")
    parser.add_argument("--remove_repeats", action="store_true", help="GLAT: merge consecutive repeated tokens.")
    parser.add_argument(
        "--length_prior_weight",
        type=float,
        help=f"GLAT: NPD's weight of log P(length | source) in self rerank (default {LENGTH_PRIOR_WEIGHT}).",
    )
    parser.add_argument("--num_beams", type=int, help="Autoregressive models: beam size (1 = greedy).")
    parser.add_argument(
        "--oracle_lengths",
        metavar="FILE",
        help="GLAT: the oracle lengths are those of this file's lines ({split} in the name stands for the test set), "
        "e.g. the AR teacher's translations, instead of the references'.",
    )
    parser.add_argument(
        "--length_buckets",
        type=int,
        nargs="+",
        default=[10, 15, 20],
        help="Upper bounds of the source-length buckets (words) of the rows' bleu_by_length.",
    )
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--max_source_length", type=int, default=128)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto.")
    parser.add_argument("--skip_existing", action="store_true", help="Only the test sets --results has no row of.")
    parser.add_argument("--table", type=Path, help="Print this results file as a Markdown table and exit.")
    parser.add_argument("--systems", help="With --table: only the rows whose system matches this regex.")
    parser.add_argument("--by_length", action="store_true", help="With --table: the rows' BLEU by source length.")
    args = parser.parse_args(argv)
    if args.table is None and not (args.model and args.system and args.data and args.results):
        parser.error("MODEL, --system, --data and --results are required (or --table FILE).")
    if args.by_length and args.table is None:
        parser.error("--by_length prints --table FILE by source length; give --table too.")
    if args.systems is not None:
        if args.table is None:
            parser.error("--systems filters --table FILE; give --table too.")
        try:
            re.compile(args.systems)
        except re.error as error:
            parser.error(f"--systems {args.systems!r} is not a regular expression: {error}")
    buckets = args.length_buckets
    if buckets[0] < 1 or any(upper <= lower for lower, upper in zip(buckets, buckets[1:])):
        parser.error(f"--length_buckets must be positive and increasing, got {' '.join(map(str, buckets))}")
    return args


def hardware() -> str:
    """The machine in words: the GPU's name, else the CPU model and its core count."""
    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name()} (torch {torch.__version__})"
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
    except OSError:
        names = []
    return f"{os.cpu_count()}-core CPU ({names[0] if names else platform.machine()}), torch {torch.__version__}"


def training_facts(model_dir: Path) -> dict:
    """Steps, seed and wall time of the run that made `model_dir` (a train.py output folder or a checkpoint)."""

    def read(name, folder=model_dir):
        path = folder / name
        return json.loads(path.read_text()) if path.is_file() else {}

    wall = read("train_results.json").get("train_runtime")
    # A checkpoint-N folder has no training_args.json; the run folder it sits in has.
    arguments = read("training_args.json") or read("training_args.json", model_dir.parent)
    return {
        "steps": read("trainer_state.json").get("global_step"),
        "seed": arguments.get("seed"),
        "train_wall_time_s": round(wall, 1) if wall else None,
    }


def generation_settings(args, is_glat: bool) -> dict:
    if is_glat:
        if args.num_beams is not None:
            raise ValueError("--num_beams is for autoregressive models; GLAT takes --length_beam_size (NPD).")
        # explicit, so that a length_beam_size saved in the generation config does not turn one pass into NPD
        return {
            "length_beam_size": args.length_beam_size or 1,
            "num_iterations": args.num_iterations or 1,
            "remove_repeats": args.remove_repeats,
            "length_prior_weight": LENGTH_PRIOR_WEIGHT
            if args.length_prior_weight is None
            else args.length_prior_weight,
        }
    glat_only = (args.length_beam_size, args.reranker, args.num_iterations, args.remove_repeats)
    if any(glat_only) or args.length_prior_weight is not None:  # Marian would ignore them
        raise ValueError(
            "--length_beam_size, --reranker, --num_iterations, --remove_repeats and --length_prior_weight are for "
            "GLAT models."
        )
    return {"num_beams": args.num_beams or 1}


def merge_rows(path: Path, new_rows: list[dict]) -> list[dict]:
    """The rows of `path` with `new_rows` replacing those of the same system, data and test set in place (so the
    table keeps its numbering when a row is re-evaluated); the others are added at the end."""
    rows = json.loads(path.read_text()) if path.is_file() else []

    def key(row):
        return tuple(row[name] for name in ROW_KEYS)

    replacements = {key(row): row for row in new_rows}
    rows = [replacements.pop(key(row), row) for row in rows] + list(replacements.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    return rows


def read_translations(path: str, count: int) -> list[str]:
    """The lines of a translation file, one per test sentence."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        sys.exit(f"--oracle_lengths: cannot read {path}: {error.strerror}")
    if len(lines) != count:
        sys.exit(f"--oracle_lengths: {path} has {len(lines)} lines; the test set has {count} sentences")
    return lines


def predicted_lengths(model, tokenizer, sources, batch_size: int) -> torch.Tensor:
    """The length predictor's top length for each source (what a single pass decodes)."""
    lengths = []
    with torch.inference_mode():
        for start in range(0, len(sources), batch_size):
            batch = tokenizer(
                list(sources[start : start + batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=model.config.max_source_positions,
            ).to(model.device)
            states = model.model.encode(batch["input_ids"], batch["attention_mask"]).last_hidden_state
            lengths.append(model.length_scores(states, batch["attention_mask"])[:, 1:].argmax(-1).cpu() + 1)
    return torch.cat(lengths)


def glanced_accuracy(model, tokenizer, sources, references, batch_size: int, fraction=0.25, seed=0) -> dict:
    """Token accuracy on the positions not glanced, at the reference length, without and with `fraction` of the
    reference words glanced at random positions (the decoder input of training's pass 2, paper eq. 5). A decoder
    that has learned the dependencies among target words gains from them; one that has not stays level."""
    generator, right, total = torch.Generator().manual_seed(seed), torch.zeros(2), 0
    max_target = model.config.max_target_length
    with torch.inference_mode():
        for start in range(0, len(sources), batch_size):
            limits = dict(return_tensors="pt", padding=True, truncation=True)
            batch = tokenizer(
                list(sources[start : start + batch_size]), max_length=model.config.max_source_positions, **limits
            )
            labels = tokenizer(
                text_target=list(references[start : start + batch_size]), max_length=max_target, **limits
            )
            labels = labels["input_ids"].masked_fill(labels["attention_mask"] == 0, -100)
            mask = labels != -100
            glanced = select_glance_positions((mask.sum(1) * fraction).long(), mask, generator=generator)
            batch, labels, glanced, mask = (x.to(model.device) for x in (batch, labels, glanced, mask))
            rest = mask & ~glanced
            for index, glance in enumerate((None, glanced)):
                logits = model(**batch, labels=labels, glance_mask=glance, glance_ids=labels.clamp(min=0)).logits
                right[index] += float(((logits.argmax(-1) == labels) & rest).sum())
            total += int(rest.sum())
    accuracy, with_glance = (round(float(value) / max(total, 1), 4) for value in right)
    return {"fraction": fraction, "accuracy": accuracy, "accuracy_glanced": with_glance}


def markdown_table(rows: list[dict]) -> str:
    """One line per system and data, a BLEU column per test set, and the commands that rebuild each line."""
    test_sets = list(dict.fromkeys(row["test_set"] for row in rows))
    systems = {}
    for row in rows:
        systems.setdefault((row["system"], row["data"]), {})[row["test_set"]] = row
    header = [
        "#",
        "system",
        "data",
        *(f"BLEU {name}" for name in test_sets),
        "oracle-length BLEU",
        "repetition",
        "steps",
        "training time",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    commands = []
    for number, ((system, data), by_set) in enumerate(systems.items(), start=1):
        first = next(iter(by_set.values()))
        bleu = [f"{by_set[name]['bleu']:.2f}" if name in by_set else "" for name in test_sets]
        oracle = " / ".join(
            f"{row['oracle_length_bleu']:.2f}" for row in by_set.values() if "oracle_length_bleu" in row
        )
        wall = first.get("train_wall_time_s")
        cells = [
            str(number),
            system,
            data,
            *bleu,
            oracle,
            f"{first['repetition_ratio']:.3f}",
            str(first.get("steps") or ""),
            f"{wall / 60:.0f} min" if wall else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        commands.append(f"[{number}] {first['command']}")
    machines = sorted({row["hardware"] for row in rows})
    signatures = sorted({row["signature"] for row in rows})
    notes = [
        f"Hardware: {'; '.join(machines)}. sacreBLEU {'; '.join(signatures)}. Repetition: the share of words that "
        f"repeat the word before them, on {test_sets[0]}.",
        "",
        "```bash",
        *commands,
        "```",
    ]
    return "\n".join(lines + [""] + notes)


def by_length_table(rows: list[dict]) -> str:
    """One line per row: the BLEU of each source-length bucket, with its sentences in parentheses."""
    buckets = list(dict.fromkeys(bucket["bucket"] for row in rows for bucket in row["bleu_by_length"]))
    lines = ["| system | data | test set | " + " | ".join(f"{name} words" for name in buckets) + " |"]
    lines.append("|" + "---|" * (3 + len(buckets)))
    for row in rows:
        cells = {bucket["bucket"]: bucket for bucket in row["bleu_by_length"]}
        scores = [
            f"{cells[name]['bleu']:.2f} ({cells[name]['count']})"
            if cells.get(name, {}).get("bleu") is not None
            else ""
            for name in buckets
        ]
        lines.append("| " + " | ".join([row["system"], row["data"], row["test_set"], *scores]) + " |")
    return "\n".join(lines)


def portable(command: str) -> str:
    """The command with the data folder written as $GLAT_DATA_DIR, so that a row reads the same on every machine."""
    folder = data_dir()
    return command.replace(str(folder), f"${DATA_DIR_VARIABLE}") if folder else command


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_arguments(argv)
    if args.table:
        rows = json.loads(args.table.read_text())
        if args.systems:
            rows = [row for row in rows if re.search(args.systems, row["system"])]
            if not rows:
                sys.exit(f"--systems {args.systems!r} matches no row of {args.table}")
        if args.by_length:
            rows = [row for row in rows if row.get("bleu_by_length")]
            if not rows:
                sys.exit(f"no row of {args.table} has bleu_by_length (rows evaluated since 2026-12-07 have it)")
        print(by_length_table(rows) if args.by_length else markdown_table(rows))
        return rows
    if args.skip_existing and args.results.is_file():
        rows = [
            row
            for row in json.loads(args.results.read_text())
            if (row["system"], row["data"]) == (args.system, args.data)
        ]
        args.test_splits = [split for split in args.test_splits if split not in {row["test_set"] for row in rows}]
        if not args.test_splits:
            print(f"{args.system} [{args.data}]: already in {args.results}")
            return rows
    device = resolve_device(args.device)
    model_dir = Path(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    is_glat = isinstance(model, GlatForConditionalGeneration)
    settings = generation_settings(args, is_glat)
    if args.reranker:
        settings["reranker"] = AutoModelForSeq2SeqLM.from_pretrained(args.reranker).to(device).eval()
    src, tgt = args.source_lang, args.target_lang
    if args.data_folder:
        splits = load_parallel_folder(args.data_folder, src, tgt, splits=args.test_splits)
    else:
        splits = load_multi30k(args.test_splits, src, tgt)
    oracle_files = {}
    if args.oracle_lengths:
        if not is_glat or model.config.use_ctc:
            sys.exit("--oracle_lengths is for GLAT models with a length predictor (not CTC, not autoregressive)")
        oracle_files = {split: args.oracle_lengths.replace("{split}", split) for split in args.test_splits}
    # read before any decoding, so that a wrong file stops the run at once
    oracle_translations = {split: read_translations(path, len(splits[split])) for split, path in oracle_files.items()}
    command = shlex.join(["python", "training/evaluate_model.py", *argv])
    base = {"method": args.method, "data": args.data, **training_facts(model_dir), "hardware": hardware()}
    rows = []
    for split in args.test_splits:
        sources, references = column(splits[split], src), column(splits[split], tgt)
        started = time.perf_counter()
        hypotheses = translate(
            model,
            tokenizer,
            sources,
            args.batch_size,
            max_source_length=args.max_source_length,
            progress=True,
            desc=f"{args.system} on {split}",
            **settings,
        )
        seconds = time.perf_counter() - started
        bleu = corpus_bleu(hypotheses, references)
        reference, written = token_lengths(tokenizer, references), token_lengths(tokenizer, hypotheses)
        out = model_dir / "predictions" / f"{args.system}.{args.data}.{split}.txt".replace(" ", "_").replace("/", "-")
        out.parent.mkdir(exist_ok=True)
        out.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        row = {
            "system": args.system,
            **base,
            "test_set": split,
            "bleu": round(bleu["score"], 2),
            "signature": bleu["signature"],
            "repetition_ratio": round(repetition_ratio(hypotheses), 4),
            "bleu_by_length": [
                {**bucket, "bleu": None if bucket["bleu"] is None else round(bucket["bleu"], 2)}
                for bucket in bleu_by_length(sources, hypotheses, references, args.length_buckets)
            ],
            "decode_seconds": round(seconds, 1),
            "sentences": len(sources),
            "generation": {key: (args.reranker if key == "reranker" else value) for key, value in settings.items()},
            # the translations' lengths against the references', for every system: what an AR model's
            # lengths reach is the yardstick of a length predictor trained on its distillation
            "output_lengths": length_prediction(written, reference),
            "model": str(model_dir),
            "command": portable(" && ".join(filter(None, [args.train_command, command]))),
        }
        if is_glat and not model.config.use_ctc:
            longest = model.config.max_target_length  # the length predictor's last class
            reference = reference.clamp(max=longest)
            predicted = predicted_lengths(model, tokenizer, sources, args.batch_size)
            row["length_prediction"] = length_prediction(predicted, reference)
            oracle_lengths = reference
            if args.oracle_lengths:
                oracle_lengths = token_lengths(tokenizer, oracle_translations[split]).clamp(max=longest)
                row["oracle_lengths"] = portable(oracle_files[split])
                row["oracle_length_prediction"] = length_prediction(predicted, oracle_lengths)
            oracle = translate(
                model,
                tokenizer,
                sources,
                args.batch_size,
                max_source_length=args.max_source_length,
                target_lengths=oracle_lengths.tolist(),
                **{**settings, "length_beam_size": 1},
            )
            row["oracle_length_bleu"] = round(corpus_bleu(oracle, references)["score"], 2)
            row["glanced_accuracy"] = glanced_accuracy(model, tokenizer, sources, references, args.batch_size)
        rows.append(row)
        extra = f", oracle length {row['oracle_length_bleu']:.2f}" if "oracle_length_bleu" in row else ""
        print(
            f"{args.system} [{args.data}] {split}: BLEU {row['bleu']:.2f}{extra} ({bleu['signature']}), "
            f"repetition {row['repetition_ratio']:.3f}, {seconds:.1f} s, lengths {row.get('length_prediction')}, "
            f"glanced {row.get('glanced_accuracy')}"
        )
        merge_rows(args.results, rows[-1:])  # each test set as soon as it is done
    return rows


if __name__ == "__main__":
    main()
