#!/usr/bin/env python
"""Peak memory and speed of glat-translate on large files: streaming keeps memory flat for any file size.

    python training/benchmark_streaming.py MODEL_DIR --lines 10000,200000 --output results/streaming_cpu.json
    python training/benchmark_streaming.py MODEL_DIR --backend onnx-int8      # after `glat-export MODEL_DIR --int8`

Each size is a file of that many lines, the --split sentences repeated in order, translated by glat-translate's
own `main` in this process, inside glat_hf.measurement.CpuMemory (peak resident memory minus the memory before
it). With --whole_file, each size runs a second time with one chunk of the whole file: what reading it at once
would cost. Each row says whether every output line arrived (`complete`).
"""

import argparse
import contextlib
import io
import json
import platform
import sys
import tempfile
import time
from itertools import cycle, islice
from pathlib import Path

import torch

from glat_hf import cli
from glat_hf.data import column, load_multi30k
from glat_hf.measurement import CpuMemory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="A saved GLAT folder (with its graphs for --backend onnx / onnx-int8).")
    parser.add_argument("--lines", default="10000,200000", help="File sizes, in lines (comma-separated).")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--chunk_size", type=int, default=4096, help="glat-translate's --chunk_size.")
    parser.add_argument("--whole_file", action="store_true", help="Also run each size as one chunk.")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's choice).")
    parser.add_argument("--data_folder", help="Folder of {split}.{lang}[.gz] files (default: Multi30k).")
    parser.add_argument("--split", default="test_2016_flickr")
    parser.add_argument("--source_lang", default="en")
    parser.add_argument("--target_lang", default="de")
    parser.add_argument("--output", help="Write the rows as a JSON list to this file.")
    args = parser.parse_args(argv)
    try:
        args.lines = [int(count) for count in args.lines.split(",")]
    except ValueError:
        parser.error(f"--lines takes comma-separated line counts, got {args.lines!r}")
    if min(args.lines + [args.batch_size, args.chunk_size, args.threads or 1]) < 1:
        parser.error("--lines, --batch_size, --chunk_size and --threads must be positive.")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = load_multi30k([args.split], args.source_lang, args.target_lang, folder=args.data_folder)[args.split]
    sentences = list(column(pairs, args.source_lang))
    where = dict(backend=args.backend, batch_size=args.batch_size, threads=torch.get_num_threads())
    where.update(cpu=platform.processor() or platform.machine(), torch=torch.__version__)
    rows = []
    with tempfile.TemporaryDirectory(prefix="glat-stream-") as folder:
        for count in args.lines:
            source, target = Path(folder) / f"{count}.en", Path(folder) / f"{count}.out"
            lines = list(islice(cycle(sentences), count))
            source.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            del lines
            for chunk_size in [args.chunk_size] + ([count] if args.whole_file else []):
                flags = ["--batch_size", args.batch_size, "--chunk_size", chunk_size, "--backend", args.backend]
                command = [args.model, "--input", source, "--output", target, *flags, "--device", "cpu"]
                started, memory = time.perf_counter(), CpuMemory()
                with memory, contextlib.redirect_stderr(io.StringIO()) as errors:  # its progress bar
                    status = cli.main([str(arg) for arg in command] + ["--no_progress"])
                seconds = time.perf_counter() - started
                if status != 0:
                    sys.exit(f"glat-translate failed: {errors.getvalue().strip()}")
                written = target.read_text(encoding="utf-8").count("\n")
                row = dict(kind="stream", lines=count, chunk_size=chunk_size, input_mb=source.stat().st_size / 2**20)
                row.update(where, seconds=seconds, lines_per_s=count / seconds, peak_mem_mb=memory.peak_mb)
                row.update(
                    complete=written == count, command="glat-translate " + " ".join(map(str, command[:1] + flags))
                )
                rows.append(row)
                print(
                    f"  {count} lines, chunks of {chunk_size}: {row['peak_mem_mb']:.0f} MiB peak, {seconds:.1f} s "
                    f"({row['lines_per_s']:.0f} lines/s){'' if row['complete'] else ', OUTPUT INCOMPLETE'}",
                    flush=True,
                )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
