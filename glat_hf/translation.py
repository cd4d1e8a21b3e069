"""Translate many sentences with any seq2seq model: the one batched loop that glat-translate, distillation,
evaluation and the benchmark share.

Sentences are read in chunks; inside a chunk they are sorted by token count, longest first (a batch that
does not fit in memory fails in the first seconds, and little padding is wasted), and each chunk's
translations are yielded in input order as soon as the chunk is done. Memory stays flat for any input size,
and a consumer that writes as it goes keeps everything done before an interruption.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from itertools import islice

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

logger = logging.getLogger(__name__)


def resolve_device(name: str = "auto") -> torch.device:
    """A torch device from "cpu", "cuda", "cuda:N" or "auto" (CUDA when available), checked against this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use cpu, cuda, cuda:N or auto") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"unsupported device {name!r}: use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name} was asked for, but no CUDA GPU is available here; use cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name}: there are only {torch.cuda.device_count()} CUDA GPU(s) here")
    return device


def check_vocabulary(model, tokenizer, name: str = "model") -> None:
    """A model and a tokenizer belong together only if they agree on the vocabulary size."""
    embeddings = getattr(model, "get_input_embeddings", None)  # none on ONNX Runtime (glat_hf.onnx.GlatOnnxModel)
    rows = embeddings().weight.shape[0] if embeddings is not None else model.config.vocab_size
    if rows != len(tokenizer):
        raise ValueError(
            f"the {name} has a vocabulary of {rows} tokens but its tokenizer has {len(tokenizer)}; "
            "use the tokenizer it was trained with"
        )


def max_source_tokens(model, tokenizer=None) -> int:
    """The longest source the model holds (GLAT: `config.max_source_positions`, which leaves room for `<length>`
    and CTC's upsampled positions); the tokenizer's `model_max_length` may be smaller."""
    config = model.config
    limit = getattr(config, "max_source_positions", config.max_position_embeddings)
    model_max = getattr(tokenizer, "model_max_length", None) or limit
    return min(limit, model_max)


def iter_translations(
    model,
    tokenizer,
    sources: Iterable[str],
    batch_size: int = 64,
    chunk_size: int = 4096,
    max_source_length: int | None = None,
    progress: bool = False,
    total: int | None = None,
    desc: str | None = None,
    target_lengths: Iterable[int] | None = None,
    **generate_kwargs,
) -> Iterator[str]:
    """Translations of `sources` by `model.generate(**generate_kwargs)`, one string per source, in input order.

    An empty or whitespace-only source translates to "". A source longer than the model holds (or than
    `max_source_length` tokens) is truncated with a warning. Each translation is one line (inner
    whitespace, newlines included, becomes one space). `progress` shows a bar on stderr where stderr is
    a terminal. `target_lengths`, one per source, decodes GLAT at those lengths instead of the predicted
    ones (oracle-length diagnostics: decoder quality apart from length prediction). Works for GLAT
    (`length_beam_size`, `reranker`, `num_iterations`) and for any transformers seq2seq model (`num_beams`, ...).
    """
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be positive, got {batch_size} and {chunk_size}")
    limit = max_source_tokens(model, tokenizer)
    limit = min(limit, max_source_length) if max_source_length else limit
    # disable=None: a bar only where stderr is a terminal, so logs and pipes stay clean.
    bar = tqdm(total=total, desc=desc, unit="sent", file=sys.stderr, disable=None if progress else True)
    # Warnings (a truncated source) print above the bar instead of through it.
    with bar, logging_redirect_tqdm(loggers=[logger, logging.getLogger("transformers")]):
        sources, lengths = iter(sources), None if target_lengths is None else iter(target_lengths)
        while chunk := list(islice(sources, chunk_size)):
            chunk_lengths = None if lengths is None else list(islice(lengths, len(chunk)))
            if chunk_lengths is not None and len(chunk_lengths) != len(chunk):
                raise ValueError("target_lengths must hold one length per source")
            yield from _translate_chunk(
                model, tokenizer, chunk, chunk_lengths, batch_size, limit, bar, generate_kwargs
            )


def translate(model, tokenizer, sources: list[str], batch_size: int = 64, **kwargs) -> list[str]:
    """`iter_translations` as a list: the translations of `sources`, in their order."""
    return list(iter_translations(model, tokenizer, sources, batch_size, total=len(sources), **kwargs))


def _translate_chunk(model, tokenizer, chunk, lengths, batch_size, limit, bar, generate_kwargs) -> list[str]:
    for index, text in enumerate(chunk):
        if not isinstance(text, str):
            raise TypeError(f"sources must be strings, got {type(text).__name__} at position {index} of a chunk")
    ids = tokenizer(chunk, truncation=False, verbose=False)["input_ids"]
    for index, text in enumerate(chunk):
        if len(ids[index]) > limit:
            logger.warning(
                f"A source of {len(ids[index])} tokens is longer than the model holds ({limit}); "
                f"it is truncated to {limit} tokens: {text[:60]!r}..."
            )
            ids[index] = tokenizer(text, truncation=True, max_length=limit)["input_ids"]
    translations = [""] * len(chunk)
    order = sorted((i for i, text in enumerate(chunk) if text.strip()), key=lambda i: -len(ids[i]))
    bar.update(len(chunk) - len(order))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        inputs = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt").to(model.device)
        if lengths is not None:
            inputs["target_lengths"] = torch.tensor([lengths[i] for i in batch], device=model.device)
        with torch.inference_mode():
            output = model.generate(**inputs, **generate_kwargs)
        for i, text in zip(batch, tokenizer.batch_decode(output, skip_special_tokens=True)):
            translations[i] = " ".join(text.split())
        bar.update(len(batch))
    return translations
