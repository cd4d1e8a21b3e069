"""Sequence-level knowledge distillation (Kim & Rush, 2016; GLAT §4.1): replace the training targets by an
autoregressive teacher's beam-search translations of the training sources.

Non-autoregressive models learn much better from these simpler, more deterministic targets, so every NAT
result in the paper is trained on them. The teacher is any transformers seq2seq checkpoint, e.g. the
MarianMTModel that `train.py --model_type ar` writes.

    python training/distill.py --teacher outputs/multi30k_en_de_ar --output_dir outputs/distilled/multi30k_en_de

reads $GLAT_DATA_DIR/multi30k (or --data_folder) and writes a folder in the same `{split}.{lang}` layout: the
distilled `train.{src,tgt}`, beside links to the other splits, so that `train.py --data_folder OUTPUT_DIR`
trains on it and still evaluates on the original references. `--train_file X.jsonl` (run_translation's JSON
lines) writes `OUTPUT_DIR/X.jsonl` instead.

The translations are written in shards as they are made; a run that is interrupted (Ctrl-C, a killed job)
continues from the last finished shard when rerun with the same arguments. The teacher's BLEU on the
validation set is reported and written to `distill_results.json`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer, HfArgumentParser

from glat_hf.data import column, data_dir, load_parallel_folder, read_translation_jsonl
from glat_hf.metrics import corpus_bleu
from glat_hf.translation import check_vocabulary, resolve_device, translate

SHARDS = "shards"
STATE_FILE = "distill_state.json"
RESULTS_FILE = "distill_results.json"


@dataclass
class DistillArguments:
    teacher: str = field(metadata={"help": "A saved autoregressive seq2seq model folder (with its tokenizer)."})
    output_dir: str = field(metadata={"help": "Where the distilled data, its shards and distill_results.json go."})
    data_folder: str | None = field(
        default=None, metadata={"help": "A folder of {split}.{lang}[.gz] files; default $GLAT_DATA_DIR/multi30k."}
    )
    train_file: str | None = field(default=None, metadata={"help": "JSON lines to distil instead of a folder split."})
    validation_file: str | None = field(default=None, metadata={"help": "JSON lines for the teacher's BLEU."})
    train_split: str = field(default="train", metadata={"help": "The folder split to distil.", "aliases": ["--split"]})
    validation_split: str | None = field(
        default="val", metadata={"help": "The folder split the teacher's BLEU is measured on ('' to skip)."}
    )
    source_lang: str = field(default="en", metadata={"help": "Source language code."})
    target_lang: str = field(default="de", metadata={"help": "Target language code."})
    num_beams: int = field(default=4, metadata={"help": "The teacher's beam size (the paper: 4)."})
    batch_size: int = field(default=64, metadata={"help": "Sentences per generate call (length-sorted)."})
    shard_size: int = field(default=2000, metadata={"help": "Sentences per shard: the work an interruption can lose."})
    max_source_length: int = field(default=128, metadata={"help": "Truncate sources to this many tokens."})
    max_samples: int | None = field(default=None, metadata={"help": "Distil only the first N pairs."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, cuda:N, or auto (cuda when available)."})

    def __post_init__(self):
        for name in ("num_beams", "batch_size", "shard_size", "max_source_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.data_folder and self.train_file:
            raise ValueError("Pass either --data_folder or --train_file, not both.")


def load_teacher(folder: str, device: str):
    """The teacher model (eval mode, on `device`) and its tokenizer."""
    if not (Path(folder) / "config.json").is_file():
        raise FileNotFoundError(f"--teacher {folder}: not a saved model folder (no config.json).")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).to(resolve_device(device)).eval()
    check_vocabulary(model, tokenizer, name=f"teacher {folder}")
    return model, tokenizer


# ----------------------------------------------------------------------------------------------- data
def read_input(args: DistillArguments) -> tuple[list[str], Path | None]:
    """The sources to distil, and the folder they came from (None for JSON lines)."""
    if args.train_file:
        dataset, folder = read_translation_jsonl(args.train_file, args.source_lang, args.target_lang), None
    else:
        if not (args.data_folder or data_dir()):
            raise FileNotFoundError(
                "No data: pass --data_folder or --train_file, or set GLAT_DATA_DIR to a folder holding multi30k/."
            )
        folder = Path(args.data_folder) if args.data_folder else data_dir() / "multi30k"
        dataset = load_parallel_folder(folder, args.source_lang, args.target_lang, [args.train_split])[
            args.train_split
        ]
    sources = column(dataset, args.source_lang)
    return sources[: args.max_samples] if args.max_samples is not None else sources, folder


def read_validation(args: DistillArguments, folder: Path | None) -> tuple[list[str], list[str]] | None:
    if args.validation_file:
        dataset = read_translation_jsonl(args.validation_file, args.source_lang, args.target_lang)
    elif folder is not None and args.validation_split:
        dataset = load_parallel_folder(folder, args.source_lang, args.target_lang, splits=[args.validation_split])
        dataset = dataset[args.validation_split]
    else:
        return None
    return column(dataset, args.source_lang), column(dataset, args.target_lang)


def write_lines(path: Path, lines: list[str]) -> None:
    """Write atomically: a file that exists is complete, whatever killed the process that wrote it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def check_state(output_dir: Path, state: dict) -> None:
    """Refuse to mix shards made with other settings (another teacher, beam or input) into one file."""
    path = output_dir / STATE_FILE
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = {key: (previous.get(key), value) for key, value in state.items() if previous.get(key) != value}
        if changed:
            details = "; ".join(f"{key}: {old!r} then, {new!r} now" for key, (old, new) in changed.items())
            raise ValueError(
                f"{output_dir} holds a distillation made with other settings ({details}). "
                "Rerun with the same arguments to resume, or choose another --output_dir."
            )
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(state, indent=2) + "\n")


def distil_in_shards(model, tokenizer, sources: list[str], args: DistillArguments, output_dir: Path) -> list[str]:
    """Translate `sources` shard by shard, skipping the shards an earlier run finished."""
    shard_dir = output_dir / SHARDS
    shard_dir.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(sources), args.shard_size)
    paths = [shard_dir / f"{args.train_split}.{index:05d}.{args.target_lang}" for index in range(len(starts))]
    done = sum(len(sources[start : start + args.shard_size]) for start, path in zip(starts, paths) if path.is_file())
    translations = []
    with tqdm(total=len(sources), initial=done, desc="distilling", unit="sent", file=sys.stderr) as progress:
        for start, path in zip(starts, paths):
            chunk = sources[start : start + args.shard_size]
            if not path.is_file():
                translations_of_shard = translate(
                    model,
                    tokenizer,
                    chunk,
                    args.batch_size,
                    max_source_length=args.max_source_length,
                    num_beams=args.num_beams,
                )
                write_lines(path, translations_of_shard)
                progress.update(len(chunk))
            shard = read_lines(path)
            if len(shard) != len(chunk):
                raise ValueError(f"{path} has {len(shard)} lines, expected {len(chunk)}: delete it and rerun.")
            translations += shard
    return translations


def write_output(
    args: DistillArguments, sources: list[str], translations: list[str], folder: Path | None, output_dir: Path
) -> list[Path]:
    """The distilled data in the input's format; a folder also gets links to its other splits."""
    if folder is None:
        records = [{"translation": {args.source_lang: s, args.target_lang: t}} for s, t in zip(sources, translations)]
        path = output_dir / Path(args.train_file).name
        write_lines(path, [json.dumps(record, ensure_ascii=False) for record in records])
        return [path]
    written = [
        output_dir / f"{args.train_split}.{args.source_lang}",
        output_dir / f"{args.train_split}.{args.target_lang}",
    ]
    write_lines(written[0], sources)
    write_lines(written[1], translations)
    for entry in sorted(folder.iterdir()):
        name = entry.name[: -len(".gz")] if entry.name.endswith(".gz") else entry.name
        split = name.rsplit(".", 1)[0]
        link = output_dir / entry.name
        if entry.is_file() and split != args.train_split and "." in name and not link.exists():
            link.symlink_to(entry.resolve())
    return written


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(DistillArguments).parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    output_dir = Path(args.output_dir)
    sources, folder = read_input(args)
    if folder is not None and output_dir.resolve() == folder.resolve():
        raise ValueError(
            f"--output_dir {output_dir} is the data folder: the distilled files would replace the originals."
        )
    model, tokenizer = load_teacher(args.teacher, args.device)
    check_state(
        output_dir,
        {
            "teacher": str(Path(args.teacher).resolve()),
            "input": str((folder or Path(args.train_file)).resolve()),
            "split": args.train_split,
            "lines": len(sources),
            "num_beams": args.num_beams,
            "shard_size": args.shard_size,
            "max_source_length": args.max_source_length,
        },
    )
    started = time.perf_counter()
    translations = distil_in_shards(model, tokenizer, sources, args, output_dir)
    written = write_output(args, sources, translations, folder, output_dir)
    results = {
        "teacher": args.teacher,
        "num_beams": args.num_beams,
        "sentences": len(sources),
        "distill_seconds": round(time.perf_counter() - started, 1),
        "files": [str(path) for path in written],
        "arguments": asdict(args),
    }
    validation = read_validation(args, folder)
    if validation is not None:
        sources_val, references = validation
        hypotheses = translate(
            model,
            tokenizer,
            sources_val,
            args.batch_size,
            max_source_length=args.max_source_length,
            progress=True,
            desc="teacher BLEU",
            num_beams=args.num_beams,
        )
        bleu = corpus_bleu(hypotheses, references)
        results.update(
            teacher_bleu=bleu["score"],
            teacher_bleu_signature=bleu["signature"],
            validation=args.validation_file or args.validation_split,
        )
        score, signature = bleu["score"], bleu["signature"]
        print(f"Teacher BLEU on {results['validation']} (beam {args.num_beams}): {score:.2f} ({signature})")
    (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    print(f"Distilled {len(sources)} sentences into {', '.join(map(str, written))}")
    return results


if __name__ == "__main__":
    main()
