"""Translate test sets with a trained model and record one result row per test set (issue 4's results table).

    python training/evaluate.py outputs/glat_distilled --system "GLAT + NPD (m=7, AR rerank)" --data distilled \\
        --length_beam_size 7 --reranker outputs/multi30k_en_de_ar --results results/multi30k_en_de.json \\
        --train_command "python training/train.py training/recipes/multi30k_en_de_glat.json ..."

Works for GLAT models (single pass, NPD with self or AR reranking, Mask-Predict iterations, CTC) and for the
autoregressive MarianMTModel (`--num_beams`). BLEU is sacreBLEU on the detokenized output against the raw
references, with its signature; for a GLAT model with a length predictor the row also tells how often its top
length is the reference's (`length_prediction`). A row with the same system, data and test set is replaced, so
rerunning a command updates its rows. `--table FILE` prints a results file as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import glat_hf  # noqa: F401  (registers "glat" with the Auto classes)
from glat_hf.data import data_dir, load_parallel_folder
from glat_hf.metrics import corpus_bleu, repetition_ratio
from glat_hf.modeling_glat import GlatForConditionalGeneration

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill import translate  # noqa: E402  (the one length-sorted batch translator)

ROW_KEYS = ("system", "data", "test_set")


def hardware() -> str:
    """The machine in words: the GPU's name, else the CPU model and its core count."""
    if torch.cuda.is_available():
        return f"1x {torch.cuda.get_device_name()} (torch {torch.__version__})"
    model = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({model}), torch {torch.__version__}"


def training_facts(model_dir: Path) -> dict:
    """Steps and wall time of the run that made `model_dir` (a train.py output folder or one of its checkpoints)."""
    facts = {"steps": None, "train_wall_time_s": None}
    state = model_dir / "trainer_state.json"
    if state.is_file():
        facts["steps"] = json.loads(state.read_text()).get("global_step")
    results = model_dir / "train_results.json"
    if results.is_file():
        facts["train_wall_time_s"] = round(json.loads(results.read_text())["train_runtime"], 1)
    return facts


def generation_settings(args, is_glat: bool) -> dict:
    if is_glat:
        if args.num_beams is not None:
            raise ValueError("--num_beams is for autoregressive models; GLAT takes --length_beam_size (NPD).")
        # explicit, so that a length_beam_size saved in the model's generation config does not turn a single pass into NPD
        return {"length_beam_size": args.length_beam_size or 1, "num_iterations": args.num_iterations or 1}
    if args.length_beam_size or args.reranker or args.num_iterations:  # a Marian model would ignore them silently
        raise ValueError("--length_beam_size, --reranker and --num_iterations are for GLAT models.")
    return {"num_beams": args.num_beams or 1}


def merge_rows(path: Path, new_rows: list[dict]) -> list[dict]:
    """The rows of `path` with `new_rows` replacing those of the same system, data and test set in place (so that
    the table keeps its numbering when a row is re-evaluated); the others are added at the end."""
    rows = json.loads(path.read_text()) if path.is_file() else []

    def key(row):
        return tuple(row[name] for name in ROW_KEYS)

    replacements = {key(row): row for row in new_rows}
    rows = [replacements.pop(key(row), row) for row in rows] + list(replacements.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
    return rows


def length_prediction(model, tokenizer, sources, references, batch_size: int, max_source_length: int) -> dict:
    """The length predictor's top length against the reference's token count (with `</s>`): the share exactly
    right and within 2 tokens, and how many distinct lengths it predicts. One that has learned only the corpus'
    most frequent lengths predicts one or two whatever the source."""
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(sources), batch_size):
            batch = tokenizer(list(sources[start : start + batch_size]), return_tensors="pt", padding=True,
                              truncation=True, max_length=max_source_length).to(model.device)  # fmt: skip
            states = model.model.encode(batch["input_ids"], batch["attention_mask"]).last_hidden_state
            predicted.append(model.length_scores(states, batch["attention_mask"])[:, 1:].argmax(-1).cpu() + 1)
    predicted = torch.cat(predicted)
    reference = torch.tensor([len(ids) for ids in tokenizer(text_target=list(references))["input_ids"]])
    errors = (predicted - reference).abs()

    def mean(values):
        return float(values.float().mean())

    return {"exact": round(mean(errors == 0), 4), "within_2": round(mean(errors <= 2), 4),
            "distinct_lengths": int(predicted.unique().numel()), "mean_predicted": round(mean(predicted), 2),
            "mean_reference": round(mean(reference), 2)}  # fmt: skip


def markdown_table(rows: list[dict]) -> str:
    """One line per system and data, a BLEU column per test set, and the commands that rebuild each line."""
    test_sets = list(dict.fromkeys(row["test_set"] for row in rows))
    systems = {}
    for row in rows:
        systems.setdefault((row["system"], row["data"]), {})[row["test_set"]] = row
    header = ["#", "system", "data", *(f"BLEU {name}" for name in test_sets), "repetition", "steps", "training time"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    commands = []
    for number, ((system, data), by_set) in enumerate(systems.items(), start=1):
        first = next(iter(by_set.values()))
        bleu = [f"{by_set[name]['bleu']:.2f}" if name in by_set else "" for name in test_sets]
        wall = first.get("train_wall_time_s")
        cells = [str(number), system, data, *bleu, f"{first['repetition_ratio']:.3f}", str(first.get("steps") or ""),
                 f"{wall / 60:.0f} min" if wall else ""]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
        commands.append(f"[{number}] {first['command']}")
    machines = sorted({row["hardware"] for row in rows})
    signatures = sorted({row["signature"] for row in rows})
    notes = [f"Hardware: {'; '.join(machines)}. sacreBLEU {'; '.join(signatures)}. Repetition: the share of words that repeat "
             f"the word before them, on {test_sets[0]}.", "", "```bash", *commands, "```"]  # fmt: skip
    return "\n".join(lines + [""] + notes)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="A saved model folder (train.py output or checkpoint).")
    parser.add_argument("--system", help="The row's system name, e.g. 'GLAT + NPD (m=7, AR rerank)'.")
    parser.add_argument("--data", choices=["raw", "distilled"], help="What the model was trained on.")
    parser.add_argument("--results", type=Path, help="The JSON results file to add the rows to.")
    parser.add_argument("--train_command", default="", help="The command that trained the model (kept in the row).")
    parser.add_argument("--data_folder", help="A folder of {split}.{lang} files; default $GLAT_DATA_DIR/multi30k.")
    parser.add_argument("--test_splits", nargs="+", default=["test_2016_flickr", "test_2017_flickr"])
    parser.add_argument("--source_lang", default="en")
    parser.add_argument("--target_lang", default="de")
    parser.add_argument("--length_beam_size", type=int, help="GLAT: NPD length candidates (m).")
    parser.add_argument("--reranker", help="GLAT: an autoregressive model folder that reranks the NPD candidates.")
    parser.add_argument("--num_iterations", type=int, help="GLAT: Mask-Predict refinement passes.")
    parser.add_argument("--num_beams", type=int, help="Autoregressive models: beam size (1 = greedy).")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--max_source_length", type=int, default=128)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto.")
    parser.add_argument("--skip_existing", action="store_true", help="Only the test sets --results has no row of.")
    parser.add_argument("--table", type=Path, help="Print this results file as a Markdown table and exit.")
    args = parser.parse_args(argv)
    if args.table is None and not (args.model and args.system and args.data and args.results):
        parser.error("MODEL, --system, --data and --results are required (or --table FILE).")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    if args.table:
        rows = json.loads(args.table.read_text())
        print(markdown_table(rows))
        return rows
    if args.skip_existing and args.results.is_file():
        rows = [row for row in json.loads(args.results.read_text()) if row["system"] == args.system and row["data"] == args.data]
        args.test_splits = [split for split in args.test_splits if split not in {row["test_set"] for row in rows}]
        if not args.test_splits:
            print(f"{args.system} [{args.data}]: already in {args.results}")
            return rows
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model_dir = Path(args.model)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    settings = generation_settings(args, isinstance(model, GlatForConditionalGeneration))
    if args.reranker:
        settings["reranker"] = AutoModelForSeq2SeqLM.from_pretrained(args.reranker).to(device).eval()
    folder = Path(args.data_folder) if args.data_folder else data_dir() / "multi30k"
    splits = load_parallel_folder(folder, args.source_lang, args.target_lang, splits=args.test_splits)
    command = shlex.join(["python", "training/evaluate.py", *(sys.argv[1:] if argv is None else argv)])
    facts, machine = training_facts(model_dir), hardware()
    rows = []
    for split in args.test_splits:
        flat = splits[split].flatten()
        sources, references = flat[f"translation.{args.source_lang}"], flat[f"translation.{args.target_lang}"]
        started = time.perf_counter()
        with tqdm(total=len(sources), desc=f"{args.system} on {split}", unit="sent", file=sys.stderr) as progress:
            hypotheses = translate(model, tokenizer, sources, args.batch_size, args.max_source_length, progress, **settings)
        seconds = time.perf_counter() - started
        bleu = corpus_bleu(hypotheses, references)
        out = model_dir / "predictions" / f"{args.system}.{args.data}.{split}.txt".replace(" ", "_").replace("/", "-")
        out.parent.mkdir(exist_ok=True)
        out.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        rows.append({"system": args.system, "data": args.data, "test_set": split, "bleu": round(bleu["score"], 2),
                     "signature": bleu["signature"], "repetition_ratio": round(repetition_ratio(hypotheses), 4),
                     **facts, "hardware": machine, "decode_seconds": round(seconds, 1), "sentences": len(sources),
                     "generation": {key: (args.reranker if key == "reranker" else value) for key, value in settings.items()},
                     "model": str(model_dir), "command": " && ".join(filter(None, [args.train_command, command]))})  # fmt: skip
        if isinstance(model, GlatForConditionalGeneration) and not model.config.use_ctc:
            rows[-1]["length_prediction"] = length_prediction(model, tokenizer, sources, references, args.batch_size,
                                                              args.max_source_length)  # fmt: skip
        print(f"{args.system} [{args.data}] {split}: BLEU {bleu['score']:.2f} ({bleu['signature']}), "
              f"repetition {rows[-1]['repetition_ratio']:.3f}, {seconds:.1f} s"
              + (f", length predictor {rows[-1]['length_prediction']}" if "length_prediction" in rows[-1] else ""))
        merge_rows(args.results, rows[-1:])  # each test set as soon as it is done
    return rows


if __name__ == "__main__":
    main()
