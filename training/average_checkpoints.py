#!/usr/bin/env python
"""Average the weights of a training run's last (or best) checkpoints into one model folder.

    python training/average_checkpoints.py outputs/glat-multi30k-en-de --last 5
    python training/average_checkpoints.py outputs/glat-multi30k-en-de --best 5 --output_dir outputs/avg

Checkpoint averaging (Vaswani et al. 2017; the GLAT paper averages the 5 best) smooths the noise of
the last updates. `--best` ranks checkpoints by the eval_bleu that train.py logged at each checkpoint's
step (its trainer_state.json). The result loads with AutoModelForSeq2SeqLM.from_pretrained and holds
the tokenizer and generation config of the newest chosen checkpoint. Works for GLAT and Marian (ar) models.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

import glat_hf  # noqa: F401  (registers the "glat" model type with the Auto classes)
from glat_hf.checkpoints import list_checkpoints


def checkpoint_bleu(folder: Path, step: int) -> float | None:
    """The eval_bleu logged at the checkpoint's own step, from its trainer_state.json (None if there is none)."""
    state = folder / "trainer_state.json"
    if not state.is_file():
        return None
    history = json.loads(state.read_text()).get("log_history", [])
    scores = [entry["eval_bleu"] for entry in history if "eval_bleu" in entry and entry.get("step") == step]
    return scores[-1] if scores else None


def choose_checkpoints(run_dir: Path, last: int | None, best: int | None) -> list[tuple[int, Path, float | None]]:
    """The `last` newest checkpoints, or the `best` by eval_bleu; (step, folder, bleu) oldest first."""
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir}: no checkpoint-* folders (train with --save_steps to keep checkpoints).")
    scored = [(step, folder, checkpoint_bleu(folder, step)) for step, folder in checkpoints]
    if last is not None:
        return scored[-last:]
    with_bleu = [item for item in scored if item[2] is not None]
    if not with_bleu:
        raise ValueError(
            f"{run_dir}: no checkpoint has an eval_bleu logged at its step in trainer_state.json, so --best cannot "
            "rank them. Train with --predict_with_generate --eval_strategy steps and eval_steps dividing save_steps, "
            "or use --last."
        )
    return sorted(sorted(with_bleu, key=lambda item: item[2], reverse=True)[:best])


def average_models(folders: list[Path]):
    """Load each checkpoint with from_pretrained (so tied weights are restored) and average their floating tensors.

    Returns the newest checkpoint's model holding the averaged weights; integer buffers keep its values.
    """
    model = AutoModelForSeq2SeqLM.from_pretrained(folders[-1])
    totals = {
        name: tensor.detach().double().clone()
        for name, tensor in model.state_dict().items()
        if tensor.is_floating_point()
    }
    for folder in folders[:-1]:
        state = AutoModelForSeq2SeqLM.from_pretrained(folder).state_dict()
        for name in totals:
            totals[name] += state[name].double()
    averaged = {name: (total / len(folders)).to(model.state_dict()[name].dtype) for name, total in totals.items()}
    model.load_state_dict(averaged, strict=False)
    return model


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="The training output_dir holding checkpoint-* folders.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--last", type=int, metavar="N", help="Average the N newest checkpoints.")
    which.add_argument("--best", type=int, metavar="N", help="Average the N checkpoints with the highest eval_bleu.")
    parser.add_argument(
        "--output_dir", "--output", type=Path, help="Where the averaged model goes (RUN_DIR/averaged)."
    )
    args = parser.parse_args(argv)
    count = args.last if args.last is not None else args.best
    if count < 1:
        parser.error("the number of checkpoints must be at least 1")
    if not args.run_dir.is_dir():
        parser.error(f"{args.run_dir}: no such folder")
    output = args.output_dir or args.run_dir / "averaged"

    chosen = choose_checkpoints(args.run_dir, args.last, args.best)
    if len(chosen) < count:
        print(f"Only {len(chosen)} checkpoint(s) available; averaging those.", file=sys.stderr)
    for _, folder, bleu in chosen:
        print(f"  {folder.name}" + (f"  eval_bleu {bleu:.2f}" if bleu is not None else ""))
    folders = [folder for _, folder, _ in chosen]
    model = average_models(folders)
    model.save_pretrained(output)  # weights (safetensors), config and generation config
    AutoTokenizer.from_pretrained(folders[-1]).save_pretrained(output)
    record = {
        "averaged": [{"checkpoint": folder.name, "step": step, "eval_bleu": bleu} for step, folder, bleu in chosen]
    }
    (output / "averaged_checkpoints.json").write_text(json.dumps(record, indent=2))
    print(f"Averaged {len(folders)} checkpoint(s) into {output}")
    return output


if __name__ == "__main__":
    main()
