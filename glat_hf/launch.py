"""Fail early when the processes that train are not the ones the launcher asked for.

On a CPU machine `accelerate launch --cpu --num_processes 2` starts ONE process, and the same launch without
`use_cpu=True` starts independent, unsynchronised trainings into one folder; both look like success.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CPU_LAUNCH = (
    "On CPU launch with `accelerate launch --multi_gpu --num_processes N --num_machines 1 --mixed_precision no "
    "--dynamo_backend no` or `torchrun --nproc_per_node N`."
)


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
    """The number of training processes, after checking it against WORLD_SIZE and the launcher's request."""
    expected = int(os.environ.get("WORLD_SIZE", 1))
    actual = training_args.world_size
    if actual != expected:
        raise RuntimeError(
            f"world size mismatch: the launcher set WORLD_SIZE={expected} but training runs {actual} "
            f"process(es). {CPU_LAUNCH}"
        )
    asked = launcher_processes()
    if asked is not None and asked != actual:
        raise RuntimeError(
            f"world size mismatch: `accelerate launch` asked for {asked} processes but only {actual} "
            f"runs (`accelerate launch --cpu --num_processes N` starts ONE process). {CPU_LAUNCH}"
        )
    return actual
