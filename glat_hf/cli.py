"""`glat-translate`: translate a file (or stdin) line by line with a saved GLAT model folder.

The translation itself is GlatTranslationPipeline's (empty lines, truncation, NPD, reranking); this
file only reads lines, orders them into batches of similar length, and writes the results back in
input order, one output line per input line.
"""

from __future__ import annotations

import argparse
import codecs
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from .configuration_glat import GlatConfig
from .modeling_glat import GlatForConditionalGeneration
from .pipeline_glat import GlatTranslationPipeline

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
    parser.add_argument("--batch_size", type=positive_int, default=64, metavar="N", help="sentences per batch (default: 64)")
    parser.add_argument(
        "--length_beam_size",
        type=positive_int,
        metavar="M",
        help="noisy parallel decoding: decode this many target lengths and keep the best "
        "(default: the model's generation config)",
    )
    parser.add_argument(
        "--reranker",
        metavar="FOLDER",
        help="an autoregressive seq2seq model with the same tokenizer that picks the best NPD candidate",
    )
    parser.add_argument(
        "--num_iterations",
        type=positive_int,
        metavar="N",
        help="Mask-Predict refinement passes (default: the model's generation config)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda if available; default)")
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


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit status (argparse exits with 2 on a malformed command line)."""
    args = build_parser().parse_args(argv)
    try:
        translate_file(args)
    except (ValueError, OSError) as error:  # the messages name the problem; a traceback would not help
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
    device = resolve_device(args.device)
    if args.input is not None and not Path(args.input).is_file():
        raise FileNotFoundError(f"input file not found: {args.input}")
    if args.output is not None and not Path(args.output).resolve().parent.is_dir():
        raise FileNotFoundError(f"the folder of the output file does not exist: {args.output}")
    with loading_bars_off():
        translator = load_translator(args.model, device)
        reranker = load_reranker(args.reranker, device) if args.reranker else None

    if args.input is None:
        lines = read_lines(sys.stdin.buffer, "<stdin>")
    else:
        with open(args.input, "rb") as file:
            lines = read_lines(file, args.input)

    generate_kwargs = {
        name: value
        for name, value in dict(
            length_beam_size=args.length_beam_size, num_iterations=args.num_iterations, reranker=reranker
        ).items()
        if value is not None  # unset: the model's generation config decides
    }
    translations = translate_lines(translator, lines, args.batch_size, not args.no_progress, **generate_kwargs)

    # Written only now, so that a failed run leaves an existing output file untouched.
    text = "".join(line.replace("\r", " ").replace("\n", " ") + "\n" for line in translations)
    if args.output is None:
        write_stdout(text)
    else:
        with open(args.output, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown --device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"unsupported --device {name!r}: use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for, but no CUDA GPU is available here; use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA GPU(s) here")
    return device


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


def load_translator(model_folder: str, device: torch.device):
    """The GLAT model and its tokenizer as a GlatTranslationPipeline on `device`."""
    folder = Path(model_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_folder}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{model_folder} holds no config.json: not a saved model folder")
    config = AutoConfig.from_pretrained(folder)
    if not isinstance(config, GlatConfig):
        raise ValueError(f"{model_folder} holds a {config.model_type!r} model, not a GLAT model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"could not load the tokenizer from {model_folder}: {error}") from None
    model = GlatForConditionalGeneration.from_pretrained(folder).to(device).eval()
    return GlatTranslationPipeline(model=model, tokenizer=tokenizer, device=device)


def load_reranker(reranker_folder: str, device: torch.device):
    """An autoregressive seq2seq model; generate checks that it shares the GLAT model's vocabulary."""
    if not Path(reranker_folder).is_dir():
        raise FileNotFoundError(f"reranker folder not found: {reranker_folder}")
    return AutoModelForSeq2SeqLM.from_pretrained(reranker_folder).to(device).eval()


def read_lines(binary_file, name: str) -> list[str]:
    """Decode line by line, so that bad bytes are reported with their line number."""
    lines = []
    for number, raw in enumerate(binary_file, start=1):
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            raw = raw.removeprefix(codecs.BOM_UTF8)
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"{name}, line {number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return lines


def translate_lines(translator, lines: list[str], batch_size: int, progress: bool, **generate_kwargs) -> list[str]:
    """Translate in batches of similar length (little padding), return the results in input order.

    Longest first: a batch that does not fit in memory fails in the first seconds, not at the end.
    """
    if not lines:
        return []
    # truncation only keeps the tokenizer quiet here: the pipeline warns about too-long sources itself.
    encoded = translator.tokenizer(lines, add_special_tokens=False, truncation=True)
    token_counts = [len(ids) for ids in encoded["input_ids"]]
    order = sorted(range(len(lines)), key=lambda index: -token_counts[index])
    translations = [""] * len(lines)
    # disable=None: a bar only where stderr is a terminal, so logs and pipes stay clean.
    bar = tqdm(total=len(lines), unit="line", file=sys.stderr, disable=None if progress else True)
    # Warnings (e.g. a truncated source) print above the bar instead of through it.
    with bar, logging_redirect_tqdm(loggers=[logging.getLogger("glat_hf"), logging.getLogger("transformers")]):
        with torch.inference_mode():
            results = translator((lines[index] for index in order), batch_size=batch_size, **generate_kwargs)
            for index, result in zip(order, results):
                translations[index] = result["translation_text"]
                bar.update(1)
    return translations


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
