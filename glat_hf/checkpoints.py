"""Which checkpoint a training run resumes from, with run_translation's rules for the output folder.

Trainer writes a checkpoint in place and its trainer_state.json last, so a run killed while saving (SIGKILL,
out of memory, preemption) leaves a newest folder without a readable state; resuming from it would fail.
Such a folder is skipped with a warning and the one before is used.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME

logger = logging.getLogger(__name__)


def checkpoint_is_complete(folder: str | os.PathLike) -> bool:
    """Whether Trainer finished saving `folder` (its trainer_state.json, written last, reads back)."""
    try:
        json.loads((Path(folder) / TRAINER_STATE_NAME).read_text())
    except (OSError, ValueError):
        return False
    return True


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """The checkpoint-N folders of `output_dir` as (N, path), oldest first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = ((re.fullmatch(r"checkpoint-(\d+)", path.name), path) for path in folder.iterdir() if path.is_dir())
    return sorted((int(match.group(1)), path) for match, path in found if match)


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest checkpoint-N folder of `output_dir` that was saved completely, or None."""
    for _, folder in reversed(list_checkpoints(output_dir)):
        if checkpoint_is_complete(folder):
            return str(folder)
        logger.warning(f"Skipping {folder}: it has no readable {TRAINER_STATE_NAME}, so its saving was interrupted.")
    return None


def resolve_resume_checkpoint(
    output_dir: str, resume_from_checkpoint: str | None, do_train: bool, overwrite_output_dir: bool
) -> str | None:
    """The checkpoint to resume from.

    `resume_from_checkpoint` is a folder, "true"/"last" (the newest complete checkpoint), or unset. Unset, a
    non-empty `output_dir` is refused unless `overwrite_output_dir`, or unless it holds a checkpoint, which
    training then resumes (as run_translation does).
    """
    requested = resume_from_checkpoint
    if requested is not None and requested.lower() in ("true", "last"):
        last = last_complete_checkpoint(output_dir)
        if last is None:
            raise FileNotFoundError(
                f"resume_from_checkpoint={requested}: no checkpoint-* folder in {output_dir} "
                "(or none saved completely)."
            )
        return last
    if requested is not None and requested.lower() not in ("false", "none", ""):
        if not os.path.isdir(requested):
            raise FileNotFoundError(f"resume_from_checkpoint={requested}: no such folder.")
        if not checkpoint_is_complete(requested):
            raise FileNotFoundError(
                f"resume_from_checkpoint={requested}: no readable {TRAINER_STATE_NAME}, so its "
                "saving was interrupted; resume from an earlier checkpoint."
            )
        return requested
    if do_train and os.path.isdir(output_dir) and not overwrite_output_dir:
        last = last_complete_checkpoint(output_dir)
        if last is not None:
            logger.info(f"Checkpoint found: resuming training from {last} (overwrite_output_dir starts anew).")
            return last
        if os.listdir(output_dir):
            raise FileExistsError(
                f"Output directory {output_dir} exists and is not empty; set overwrite_output_dir to train into it."
            )
    return None
