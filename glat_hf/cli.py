"""`glat-translate`: translate a file (or stdin) line by line with a saved GLAT model folder.

The translation itself is `glat_hf.translation.iter_translations` (length-sorted batches, empty lines,
truncation, NPD, reranking); this file reads lines, streams them through it chunk by chunk and writes each
chunk in input order as soon as it is done, one output line per input line. Memory stays flat for any
input size. An output file is written as OUTPUT.partial and renamed when the run succeeds, so a failed run
leaves an existing output file untouched and an interrupted one keeps what it had translated.
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from .baseline import MARIAN_CONFIG
from .configuration_glat import read_glat_config
from .modeling_glat import GlatForConditionalGeneration
from .translation import iter_translations, resolve_device

PROG = "glat-translate"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Translate a file or stdin line by line with a GLAT model folder. "
        "Output line i is the translation of input line i; empty lines stay empty.",
    )
    parser.add_argument("model", help="folder of a saved GLAT model and its tokenizer (save_pretrained)")
    parser.add_argument("--input", metavar="FILE", help="UTF-8 text, one sentence a line (default: stdin)")
    parser.add_argument("--output", metavar="FILE", help="where the translations go (default: stdout)")
    parser.add_argument(
        "--batch_size", type=positive_int, default=64, metavar="N", help="sentences per batch (default: 64)"
    )
    parser.add_argument(
        "--chunk_size",
        type=positive_int,
        default=4096,
        metavar="N",
        help="lines read, length-sorted and written at a time (default: 4096)",
    )
    parser.add_argument(
        "--length_beam_size",
        type=positive_int,
        metavar="M",
        help="noisy parallel decoding: decode this many target lengths and keep the best "
        "(default: the model's generation config)",
    )
    parser.add_argument(
        "--length_prior_weight",
        type=non_negative_float,
        metavar="W",
        help="noisy parallel decoding without --reranker: add W x log P(length | source) to each candidate's mean "
        "token log-probability (default: the model's generation config; 0.05 for new models)",
    )
    parser.add_argument(
        "--reranker",
        "--reranker_name_or_path",
        metavar="FOLDER",
        help="an autoregressive seq2seq model with the same tokenizer that picks the best NPD candidate: a "
        "transformers folder, or its CTranslate2 conversion (python -m glat_hf.ctranslate2_baseline; extra bench)",
    )
    parser.add_argument(
        "--num_iterations",
        type=positive_int,
        metavar="N",
        help="Mask-Predict refinement passes (default: the model's generation config)",
    )
    parser.add_argument(
        "--remove_repeats",
        action="store_true",
        default=None,
        help="merge consecutive repeated tokens of each translation (default: the model's generation config)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda if available; default)")
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx", "onnx-int8"),
        default="torch",
        help="torch (default), or the ONNX Runtime graphs that glat-export wrote into the folder (CPU)",
    )
    parser.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    return parser


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit status (argparse exits with 2 on a malformed command line)."""
    args = build_parser().parse_args(argv)
    try:
        translate_file(args)
    except (ValueError, OSError, ImportError) as error:  # the messages name the problem; a traceback would not help
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    except torch.cuda.OutOfMemoryError:
        print(f"{PROG}: error: out of memory on {args.device}; try a smaller --batch_size", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def translate_file(args: argparse.Namespace) -> None:
    """Read, translate, write; the cheap checks come before the model loads, so mistakes fail in seconds."""
    try:
        device = resolve_device("cpu" if args.backend != "torch" and args.device == "auto" else args.device)
    except ValueError as error:
        raise ValueError(f"--device: {error}") from None
    if args.input is not None and not Path(args.input).is_file():
        raise FileNotFoundError(f"input file not found: {args.input}")
    if args.output is not None and not Path(args.output).resolve().parent.is_dir():
        raise FileNotFoundError(f"the folder of the output file does not exist: {args.output}")
    with loading_bars_off():
        model, tokenizer = load_model(args.model, device, args.backend)
        reranker = load_reranker(args.reranker, device) if args.reranker else None
    generate_kwargs = {
        name: value
        for name, value in dict(
            length_beam_size=args.length_beam_size,
            num_iterations=args.num_iterations,
            reranker=reranker,
            remove_repeats=args.remove_repeats,
            length_prior_weight=args.length_prior_weight,
        ).items()
        if value is not None  # unset: the model's generation config decides
    }
    with open(args.input, "rb") if args.input else nullcontext(sys.stdin.buffer) as source:
        lines = read_lines(source, args.input or "<stdin>")
        translations = iter_translations(
            model, tokenizer, lines, args.batch_size, args.chunk_size, progress=not args.no_progress, **generate_kwargs
        )
        if args.output is None:
            for line in translations:
                write_stdout(one_line(line))
            return
        partial = f"{args.output}.partial"
        try:
            with open(partial, "w", encoding="utf-8", newline="\n") as file:
                for line in translations:
                    file.write(one_line(line))
        except Exception:
            os.remove(partial)  # a mistake, not an interruption: nothing half-done is left behind
            raise
        os.replace(partial, args.output)


def one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ") + "\n"


@contextmanager
def loading_bars_off():
    """No "Loading weights" bars from transformers: the one bar of this command is the translation's."""
    were_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if were_enabled:
            hf_logging.enable_progress_bar()


def load_model(model_folder: str, device: torch.device, backend: str = "torch"):
    """The GLAT model (eval mode, on `device`; or its ONNX Runtime graphs) and its tokenizer."""
    folder = Path(model_folder)
    read_glat_config(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"could not load the tokenizer from {model_folder}: {error}") from None
    if backend == "torch":
        return GlatForConditionalGeneration.from_pretrained(folder).to(device).eval(), tokenizer
    if device.type != "cpu":
        raise ValueError(f"--backend {backend} runs on the CPU; use --device cpu")
    from .onnx import GlatOnnxModel

    return GlatOnnxModel.from_pretrained(folder, int8=backend == "onnx-int8"), tokenizer


def load_reranker(reranker_folder: str, device: torch.device):
    """An autoregressive seq2seq model, or its CTranslate2 conversion (a folder convert_marian wrote); generate
    checks that it shares the GLAT model's vocabulary."""
    if not Path(reranker_folder).is_dir():
        raise FileNotFoundError(f"reranker folder not found: {reranker_folder}")
    if (Path(reranker_folder) / MARIAN_CONFIG).is_file():
        from .ctranslate2_baseline import CTranslate2Translator

        return CTranslate2Translator(reranker_folder, device=str(device))
    return AutoModelForSeq2SeqLM.from_pretrained(reranker_folder).to(device).eval()


def read_lines(binary_file, name: str) -> Iterator[str]:
    """Decode line by line, as the lines are read, so that bad bytes are reported with their line number."""
    for number, raw in enumerate(binary_file, start=1):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(
                f"{name}, line {number}: not valid UTF-8 ({error.reason} at byte {error.start})"
            ) from None


def write_stdout(text: str) -> None:
    """UTF-8 whatever the locale says, so that a pipe gets the same bytes as --output."""
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        sys.stdout.write(text)
    else:
        sys.stdout.flush()
        stream.write(text.encode("utf-8"))
        stream.flush()


if __name__ == "__main__":
    sys.exit(main())
