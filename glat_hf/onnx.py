"""GLAT on ONNX Runtime: export a model to ONNX, and a runtime with the `generate` of the PyTorch model.

    glat-export outputs/glat-multi30k-en-de --int8      # writes the graphs into the model folder

    model = GlatOnnxModel.from_pretrained("outputs/glat-multi30k-en-de", int8=True, threads=2)
    ids = model.generate(**tokenizer(sentences, return_tensors="pt", padding=True), length_beam_size=3)

The graphs (beside config.json and the tokenizer; `.int8.onnx` for the dynamically quantized ones):

- `model.onnx`: `generate`'s first pass in one session call. (input_ids, attention_mask) (B, S), length_beam_size m
  and max_length (0-d), target_lengths (B,) (a length to decode, 0 where the graph predicts it), with_scores (0-d
  bool) -> the encoder, the top-m lengths in 1..max_length (CTC models: upsample_ratio x the source length), the
  decoder input copied from the source for each of the N = B x m candidate rows (a source's candidates adjacent),
  one decoder pass -> tokens (N, T) the argmax, token_scores (N, T) its log-probability (zeros unless
  with_scores), decoder_mask (N, T), encoder_states (B, S', d) and length_log_probs (N,) log P(length | source)
  of each candidate's length (NPD's length prior; 0 for CTC and given lengths). Padding gets pad_token_id and
  score 0. Graphs exported before with_scores take no such input and always score; graphs exported before
  length_log_probs lack it, and rank NPD candidates only with `length_prior_weight=0`.
- `decoder_model.onnx`: the decoder pass again, for Mask-Predict refinement: (input_ids, attention_mask) (N, S),
  encoder_states and encoder_attention_mask (B, S) once per source (cross-attention folds a source's candidates),
  decoder_mask (N, T) bool, glance_ids (N, T) (a token id where the decoder input is that token's embedding, -1
  where it is copied from the source) -> tokens and token_scores as above.

Batch, source and target lengths and m are dynamic, and padding is handled inside the graphs (the trace runs on a
padded example, with the mask always built). What remains after the first pass is small and runs here in
PyTorch, with the code of `GlatForConditionalGeneration.generate`: the Mask-Predict choice of tokens to
re-predict, the CTC collapse, the choice of the best candidate, or its scores by an autoregressive reranker (a
transformers model, run in PyTorch). One session call replaces an encoder call and a decoder call with Python
between them (length choice, masks, repeated rows).

onnxruntime, onnx and onnxscript are an optional extra: `pip install glat-hf[onnx]`.
"""

from __future__ import annotations

import argparse
import copy
import functools
import logging
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel

from .configuration_glat import GlatConfig, read_glat_config
from .ctc import ctc_collapse, merge_repeats
from .modeling_glat import (
    GlatForConditionalGeneration,
    GlatModel,
    _lengths_to_mask,
    _repeat_rows,
    best_candidates,
    candidate_scores,
    default_generation_config,
    generation_settings,
    needs_token_scores,
    remask_positions,
    top_lengths,
)

PROG = "glat-export"
MODEL_FILE, DECODER_FILE = "model.onnx", "decoder_model.onnx"
OLD_ENCODER_FILE = "encoder_model.onnx"  # the first pass was two graphs before model.onnx
OPSET = 18
MODEL_INPUTS = ("input_ids", "attention_mask", "length_beam_size", "max_length", "target_lengths", "with_scores")
MODEL_OUTPUTS = ("tokens", "token_scores", "decoder_mask", "encoder_states", "length_log_probs")
DECODER_INPUTS = (
    "input_ids",
    "attention_mask",
    "encoder_states",
    "encoder_attention_mask",
    "decoder_mask",
    "glance_ids",
)


def graph_files(int8: bool = False) -> tuple[str, str]:
    """The file names of the first-pass and the decoder graphs, fp32 or dynamically quantized to int8."""
    if not int8:
        return MODEL_FILE, DECODER_FILE
    return tuple(name.replace(".onnx", ".int8.onnx") for name in (MODEL_FILE, DECODER_FILE))


def _require_onnx_extra(*modules: str):
    """Import the optional packages, or fail in one line that says how to install them."""
    imported = []
    for name in modules:
        try:
            imported.append(__import__(name))
        except ImportError:
            raise ImportError(f"{name} is not installed; glat_hf.onnx needs it: pip install glat-hf[onnx]") from None
    return imported[0] if len(imported) == 1 else imported


# ------------------------------------------------------------------------------------------------------- export
def _decode_rows(
    model,
    input_ids,
    attention_mask,
    encoder_states,
    encoder_attention_mask,
    decoder_mask,
    glance_ids,
    with_scores=None,
):
    """The decoder input copied from the source (glanced tokens where glance_ids >= 0; None: none), one decoder
    pass, and the tokens and scores of GlatForConditionalGeneration._decode.

    Only the real positions go through the output layer, as _decode does on CPU. The argmax is `_argmax`; its
    log-probability is read from a LogSoftmax (ONNX Runtime's ReduceLogSumExp and ReduceMax took 90 ms where a
    LogSoftmax and a TopK took 16: 960 x 8000 logits, one thread). `with_scores`, a bool tensor (the first pass's
    graph input), skips that LogSoftmax when nothing ranks or refines the tokens (`_scores_if`); None: always score.
    """
    glat = model.model
    glanced = None if glance_ids is None else glance_ids >= 0
    inputs = glat.decoder_inputs(input_ids, attention_mask, decoder_mask, glanced, glance_ids)
    hidden = glat.decoder(inputs, decoder_mask, encoder_states, glat.encoder_mask(encoder_attention_mask))
    logits = model.lm_head(hidden[decoder_mask]).float()
    tokens = _argmax(logits)
    scores = _scores(logits, tokens) if with_scores is None else _scripted_scores_if()(logits, tokens, with_scores)
    pad = torch.full(decoder_mask.shape, model.config.pad_token_id, dtype=torch.long)
    tokens = pad.masked_scatter(decoder_mask, tokens)  # back to (N, T): padding gets pad_token_id
    return tokens, torch.zeros(decoder_mask.shape).masked_scatter(decoder_mask, scores)  # and score 0


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """logits.argmax(-1) of (rows, V) logits (the first of equal maxima, as PyTorch's max), in two stages: the
    maximum of each block of the vocabulary (ReduceMax over a short inner axis), the first block that holds the
    row's maximum, then the first maximum inside that block. ONNX Runtime's ArgMax and TopK scan an 8,000-wide row
    several times slower: 960 x 8000 logits, one thread, side by side on the 2-core Xeon, 14 ms a TopK of 1 (18 an
    ArgMax), 5 ms these; 15 x 8000: 0.13 ms, 0.04 ms.
    """
    vocab = logits.shape[-1]
    block = next(size for size in range(math.isqrt(vocab), 0, -1) if vocab % size == 0)
    if block < math.isqrt(vocab) // 2:  # no divisor near the square root: pad the vocabulary with -inf
        block = math.isqrt(vocab)
        logits = nn.functional.pad(logits, (0, -vocab % block), value=float("-inf"))
    grid = logits.reshape(-1, logits.shape[-1] // block, block)
    best_block = grid.amax(-1).argmax(-1, keepdim=True)  # (rows, 1)
    inside = grid.gather(1, best_block[:, :, None].expand(-1, 1, block))[:, 0].argmax(-1)
    return best_block[:, 0] * block + inside


def _scores(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The log-probability of each row's token."""
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, None])[:, 0]


def _scores_if(logits: torch.Tensor, tokens: torch.Tensor, with_scores: torch.Tensor) -> torch.Tensor:
    """_scores where `with_scores`, else zeros. Scripted (`_scripted_scores_if`), it exports as an ONNX If, so a
    first pass that neither ranks length candidates nor refines skips the LogSoftmax over the vocabulary."""
    if bool(with_scores):
        return _scores(logits, tokens)
    return torch.zeros(tokens.shape, dtype=logits.dtype)


@functools.cache
def _scripted_scores_if():
    """`_scores_if` as TorchScript: the legacy exporter (dynamo=False) turns its branch into an If node, where a
    trace would freeze the branch of the example batch. torch.jit.script is deprecated with that exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(_scores_if)


class _FirstPassGraph(nn.Module):
    """What model.onnx computes: `generate` up to its first decoder pass, with the same functions (encode,
    length_scores, top_lengths, ctc_decoder_mask, decoder_inputs), for m candidates per source."""

    def __init__(self, model: GlatForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, length_beam_size, max_length, target_lengths, with_scores):
        model = self.model
        states = model.model.encode(input_ids, attention_mask).last_hidden_state
        if model.config.use_ctc:
            decoder_mask, candidates = model.ctc_decoder_mask(attention_mask), 1
            length_log_probs = torch.zeros(input_ids.shape[0])
        else:
            length_logits = model.length_scores(states, attention_mask)
            predicted, length_log_probs = top_lengths(length_logits, length_beam_size, max_length)
            given = _repeat_rows(target_lengths, length_beam_size)  # oracle lengths, where not 0
            decoder_mask, candidates = _lengths_to_mask(torch.where(given > 0, given, predicted)), length_beam_size
            length_log_probs = length_log_probs.masked_fill(given > 0, 0.0)
        rows = (_repeat_rows(input_ids, candidates), _repeat_rows(attention_mask, candidates))
        tokens, scores = _decode_rows(model, *rows, states, attention_mask, decoder_mask, None, with_scores)
        return tokens, scores, decoder_mask, states, length_log_probs


class _DecoderGraph(nn.Module):
    """What decoder_model.onnx computes: one decoder pass over given rows and glanced tokens (_decode_rows)."""

    def __init__(self, model: GlatForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, encoder_states, encoder_attention_mask, decoder_mask, glance_ids):
        return _decode_rows(
            self.model, input_ids, attention_mask, encoder_states, encoder_attention_mask, decoder_mask, glance_ids
        )


def _example_inputs(config: GlatConfig):
    """A padded example batch (2 sources, 2 length candidates each, of different lengths): the trace must see
    padding on every side, or a branch on "nothing is padded" could be frozen into the graph."""
    input_ids = torch.tensor([[7, 8, 9, 10, 2], [11, 12, 2, 0, 0]]) % config.vocab_size
    attention_mask = (torch.arange(5)[None, :] < torch.tensor([[5], [3]])).long()
    if config.use_ctc:
        rows, lengths = 1, attention_mask.sum(1) * config.upsample_ratio
    else:
        rows, lengths = 2, torch.tensor([4, 3, 2, 3])
    decoder_mask = _lengths_to_mask(lengths)
    glance_ids = torch.full(decoder_mask.shape, -1, dtype=torch.long)
    glance_ids[0, 1] = 7 % config.vocab_size
    return input_ids, attention_mask, rows, decoder_mask, glance_ids


def _export(module, args, path, input_names, output_names, dynamic_axes):
    with warnings.catch_warnings():
        # TracerWarnings name the Python branches of the checks (source too long, ...), which the runtime makes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )


def export_onnx(model_dir_or_model, output_dir=None, int8: bool = False, tokenizer=None) -> list[Path]:
    """Write the first-pass and decoder graphs of a GLAT model (and with `int8` their dynamically quantized copies,
    `quantize_dynamic(..., weight_type=QInt8)`) into `output_dir`, by default the model folder itself.

    `model_dir_or_model` is a saved model folder or a GlatForConditionalGeneration (then `output_dir` is
    needed, and config.json, generation_config.json and, if given, the `tokenizer` are saved there too).
    Returns the paths written.
    """
    _require_onnx_extra("onnx", "onnxruntime")
    if isinstance(model_dir_or_model, (str, os.PathLike)):
        folder = Path(model_dir_or_model)
        read_glat_config(folder)
        model = GlatForConditionalGeneration.from_pretrained(folder)
        output_dir = Path(output_dir) if output_dir is not None else folder
    elif isinstance(model_dir_or_model, GlatForConditionalGeneration):
        if output_dir is None:
            raise ValueError("export_onnx of a model object needs output_dir (where the graphs and config.json go)")
        model, output_dir, folder = model_dir_or_model, Path(output_dir), None
    else:
        kind = type(model_dir_or_model).__name__
        raise TypeError(f"export_onnx takes a model folder or a GlatForConditionalGeneration, got {kind}")
    output_dir.mkdir(parents=True, exist_ok=True)
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        model = copy.deepcopy(model).to("cpu", torch.float32)  # the caller's model stays where it is
    was_training = model.training
    model.eval()
    try:
        written = _export_graphs(model, output_dir)
    finally:
        model.train(was_training)
    if folder is None or output_dir.resolve() != folder.resolve():
        model.config.save_pretrained(output_dir)
        model.generation_config.save_pretrained(output_dir)
        if tokenizer is None and folder is not None:
            tokenizer = _load_tokenizer(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(output_dir)
    if not int8:  # int8 copies of earlier weights would no longer match: loading them fails clearly instead
        for stale in graph_files(True):
            (output_dir / stale).unlink(missing_ok=True)
    else:
        for source, target in zip(graph_files(False), graph_files(True)):
            quantize_int8(output_dir / source, output_dir / target)
            written.append(output_dir / target)
    return written


def quantize_int8(source: Path | str, target: Path | str) -> None:
    """onnxruntime's dynamic quantisation of `source`'s MatMul weights to int8 (`quantize_dynamic(...,
    weight_type=QInt8)`), written to `target`, without its warnings on the root logger."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # quantize_dynamic warns there of every tensor it leaves in float
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)


def _export_graphs(model: GlatForConditionalGeneration, output_dir: Path) -> list[Path]:
    config = model.config
    input_ids, attention_mask, rows, decoder_mask, glance_ids = _example_inputs(config)
    sources, states = {0: "batch", 1: "source_length"}, {0: "batch", 1: "encoder_length"}
    candidate_sources, targets = {0: "rows", 1: "source_length"}, {0: "rows", 1: "target_length"}
    first_pass_args = (input_ids, attention_mask, torch.tensor(rows), torch.tensor(config.max_target_length))
    first_pass_args += (torch.zeros(input_ids.shape[0], dtype=torch.long), torch.tensor(True))
    first_pass_axes = dict(
        input_ids=sources, attention_mask=sources, target_lengths={0: "batch"}, encoder_states=states
    )
    first_pass_axes.update(tokens=targets, token_scores=targets, decoder_mask=targets, length_log_probs={0: "rows"})
    decoder_axes = dict(input_ids=candidate_sources, attention_mask=candidate_sources, encoder_states=states)
    decoder_axes.update(encoder_attention_mask=sources, decoder_mask=targets, glance_ids=targets)
    decoder_axes.update(tokens=targets, token_scores=targets)
    with torch.no_grad():
        first_pass = _FirstPassGraph(model)
        _export(first_pass, first_pass_args, output_dir / MODEL_FILE, MODEL_INPUTS, MODEL_OUTPUTS, first_pass_axes)
        encoder_states = first_pass(*first_pass_args)[3]
        decoder_args = (_repeat_rows(input_ids, rows), _repeat_rows(attention_mask, rows), encoder_states)
        decoder_args += (attention_mask, decoder_mask, glance_ids)
        outputs = ("tokens", "token_scores")
        _export(_DecoderGraph(model), decoder_args, output_dir / DECODER_FILE, DECODER_INPUTS, outputs, decoder_axes)
    return [output_dir / MODEL_FILE, output_dir / DECODER_FILE]


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError):
        return None  # a folder without a tokenizer: the graphs are written all the same


# ------------------------------------------------------------------------------------------------------ runtime
class GlatOnnxModel:
    """A GLAT model folder on ONNX Runtime (CPU), with the `generate` contract of GlatForConditionalGeneration:
    the same arguments, the same checks, and (B, L) token ids padded with pad_token_id.

    It has what `glat_hf.translation` and the glat-translation pipeline use (`config`, `generation_config`,
    `device`, `generate`), so `translate(GlatOnnxModel.from_pretrained(folder), tokenizer, sentences)` works.
    """

    main_input_name = "input_ids"
    engine = "onnxruntime"  # what training/benchmark.py's rows say runs it
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, config: GlatConfig, generation_config: GenerationConfig, first_pass, decoder, name_or_path=""):
        self.config = config
        self.generation_config = generation_config
        self.first_pass_session = first_pass  # model.onnx
        self.decoder_session = decoder  # decoder_model.onnx, for Mask-Predict
        self.name_or_path = str(name_or_path)
        self._first_pass_inputs = {node.name for node in first_pass.get_inputs()}  # CTC graphs have no lengths
        self._first_pass_outputs = [node.name for node in first_pass.get_outputs()]
        self._decoder_inputs = {node.name for node in decoder.get_inputs()}

    @classmethod
    def from_pretrained(
        cls, folder, int8: bool = False, threads: int | None = None, profile_prefix: str | None = None
    ) -> GlatOnnxModel:
        """Load `folder`'s config and graphs (written by `export_onnx` / glat-export). `threads`: ONNX Runtime's
        intra-op threads (default: its own choice). Idle threads sleep instead of spinning, so they take no cores
        from other work in the process. `profile_prefix`: run under ONNX Runtime's profiler, whose JSON
        `session.end_profiling()` writes at that prefix (training/profile_onnx.py)."""
        ort = _require_onnx_extra("onnxruntime")
        folder = Path(folder)
        config = read_glat_config(folder)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        if profile_prefix is not None:
            options.enable_profiling, options.profile_file_prefix = True, str(profile_prefix)
        sessions = []
        for name, expected in zip(graph_files(int8), (MODEL_INPUTS, DECODER_INPUTS)):
            path = folder / name
            if not path.is_file():
                earlier = (
                    " (the graphs there are of an earlier glat-export)"
                    if (folder / OLD_ENCODER_FILE).is_file()
                    else ""
                )
                raise FileNotFoundError(
                    f"{path} not found{earlier}: export the graphs with `{PROG} {folder}{' --int8' if int8 else ''}`"
                )
            try:
                session = _session(ort, path, options)
            except Exception as error:  # onnxruntime's own exception classes (InvalidProtobuf, Fail, ...)
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise ValueError(
                    f"{path} is not a readable ONNX graph (corrupt or truncated?): {reason[:300]}. "
                    f"Export it again with `{PROG} {folder}{' --int8' if int8 else ''}`."
                ) from None
            names = [node.name for node in session.get_inputs()]
            if not set(names) <= set(expected):
                raise ValueError(f"{path} takes inputs {names}: not a GLAT graph written by {PROG}")
            sessions.append(session)
        try:
            generation_config = GenerationConfig.from_pretrained(folder)
        except OSError:  # no generation_config.json: the defaults of GlatForConditionalGeneration
            generation_config = default_generation_config(config)
        return cls(config, generation_config, *sessions, name_or_path=folder)

    # What transformers' Pipeline asks of a model.
    def can_generate(self) -> bool:
        return True

    def to(self, device):
        if torch.device(device).type != "cpu":
            raise ValueError(f"GlatOnnxModel runs on ONNX Runtime's CPU provider; it cannot move to {device}")
        return self

    def eval(self):
        return self

    def __repr__(self):
        return f"{type(self).__name__}({self.name_or_path!r}, {self.first_pass_session.get_modelmeta().graph_name})"

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        length_beam_size: int | None = None,
        reranker: PreTrainedModel | None = None,
        num_iterations: int | None = None,
        max_length: int | None = None,
        generation_config: GenerationConfig | None = None,
        target_lengths: torch.Tensor | None = None,
        remove_repeats: bool | None = None,
        length_prior_weight: float | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """`GlatForConditionalGeneration.generate` on the graphs: one parallel pass, NPD over `length_beam_size`
        lengths (best mean log-probability plus `length_prior_weight` x log P(length | source), or best by
        `reranker`), `num_iterations` of Mask-Predict, CTC collapse, `target_lengths` (oracle lengths), `max_length`
        (caps the predicted length), `remove_repeats`. Same checks, same (B, L) ids."""
        config = self.config
        input_ids = torch.as_tensor(input_ids)
        settings = generation_settings(
            config,
            generation_config or self.generation_config,
            input_ids,
            attention_mask,
            length_beam_size,
            num_iterations,
            max_length,
            remove_repeats,
            length_prior_weight,
        )
        attention_mask, length_beam_size, num_iterations, max_length, remove_repeats, length_prior_weight = settings
        length_prior = length_beam_size > 1 and reranker is None and length_prior_weight > 0
        if length_prior and "length_log_probs" not in self._first_pass_outputs:
            raise ValueError(
                f"{self.name_or_path}: its {MODEL_FILE} was exported before NPD's length prior; export it again "
                f"with `{PROG} {self.name_or_path}`, or pass length_prior_weight=0."
            )
        # These methods of the PyTorch model read only self.config: the same checks and scores, not copies.
        if target_lengths is not None:
            target_lengths = GlatForConditionalGeneration._check_target_lengths(
                self, target_lengths, input_ids, length_beam_size
            )
        if reranker is not None:
            GlatForConditionalGeneration._check_reranker(self, reranker)
        input_ids, attention_mask = input_ids.long(), torch.as_tensor(attention_mask).long()
        self._check_source_fits(input_ids, attention_mask)

        feeds = {
            "input_ids": input_ids.numpy(),
            "attention_mask": attention_mask.numpy(),
            "length_beam_size": np.array(length_beam_size, dtype=np.int64),
            "max_length": np.array(max_length, dtype=np.int64),
            # 0: the graph predicts the length
            "target_lengths": (
                np.zeros(len(input_ids), np.int64) if target_lengths is None else target_lengths.long().numpy()
            ),
            "with_scores": np.array(needs_token_scores(length_beam_size, reranker, num_iterations)),
        }
        outputs = self.first_pass_session.run(None, {name: feeds[name] for name in self._first_pass_inputs})
        if length_beam_size == 1 and num_iterations == 1 and not (config.use_ctc or remove_repeats):
            # One candidate a source, already as wide as its longest length (_lengths_to_mask): what
            # best_candidates would return. The torch calls skipped took ~0.1 of ~2 ms at batch size 1 (README).
            return torch.from_numpy(outputs[0])
        tokens, token_scores, decoder_mask = (torch.from_numpy(output) for output in outputs[:3])
        if num_iterations > 1:  # Mask-Predict, as GlatForConditionalGeneration._refine, on the decoder graph
            decoder_feeds = {
                "input_ids": _repeat_rows(input_ids, length_beam_size).numpy(),
                "attention_mask": _repeat_rows(attention_mask, length_beam_size).numpy(),
                "encoder_states": outputs[3],
                "encoder_attention_mask": feeds["attention_mask"],
                "decoder_mask": outputs[2],
            }
            decoder_feeds = {name: value for name, value in decoder_feeds.items() if name in self._decoder_inputs}
        for iteration in range(1, num_iterations):
            remask = remask_positions(decoder_mask, token_scores, iteration, num_iterations)
            glance_ids = tokens.masked_fill(~(decoder_mask & ~remask), -1)
            new_tokens, new_scores = self.decoder_session.run(
                None, {**decoder_feeds, "glance_ids": glance_ids.numpy()}
            )
            tokens = torch.where(remask, torch.from_numpy(new_tokens), tokens)
            token_scores = torch.where(remask, torch.from_numpy(new_scores), token_scores)

        if config.use_ctc:
            return ctc_collapse(tokens, config.blank_token_id, config.pad_token_id, mask=decoder_mask)
        scores = None
        if length_beam_size > 1 and reranker is None:
            length_log_probs = torch.from_numpy(outputs[4]) if length_prior else None
            scores = candidate_scores(token_scores, decoder_mask, length_log_probs, length_prior_weight)
        elif length_beam_size > 1:
            rerank = GlatForConditionalGeneration.reranker_scores
            scores = rerank(self, reranker, input_ids, attention_mask, tokens, length_beam_size)
        if remove_repeats:
            tokens, decoder_mask = merge_repeats(tokens, decoder_mask, config.pad_token_id)
        return best_candidates(tokens, decoder_mask, scores, length_beam_size)

    @property
    def prepends_length_token(self) -> bool:
        return self.config.length_predictor == "length_token"

    def _check_source_fits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """The check of GlatModel.encode, which the graph cannot make: a source longer than the model holds. For
        such a source, encode (reading only config and prepends_length_token) raises its ValueError before it
        computes anything."""
        if input_ids.shape[1] > self.config.max_source_positions:
            GlatModel.encode(self, input_ids, attention_mask)
            raise ValueError(f"The source has {input_ids.shape[1]} tokens, more than this model holds.")


def _session(ort, path: Path, options):
    """An ONNX Runtime CPU session of `path` with every graph optimisation but SkipLayerNormFusion: its fused
    residual-add + LayerNormalization ran several times slower than the two nodes it replaces (the 2-core Xeon,
    one thread, the int8 first pass of a multi30k-size model: 1.1x faster without it at batch sizes 1 and 64)."""
    return ort.InferenceSession(
        str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=["SkipLayerNormFusion"]
    )


def exported_models(model: GlatForConditionalGeneration, threads: int | None = None) -> dict[str, GlatOnnxModel]:
    """{"fp32": ..., "int8": ...}: `model` exported in a temporary folder (gone once the graphs are loaded) and
    loaded on ONNX Runtime with `threads` intra-op threads (default: torch's): the benchmark's rows."""
    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="glat-onnx-") as folder:
        export_onnx(model, folder, int8=True)
        return {
            variant: GlatOnnxModel.from_pretrained(folder, int8=variant == "int8", threads=threads)
            for variant in ("fp32", "int8")
        }


# ------------------------------------------------------------------------------------------------------ command
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=f"Export a saved GLAT model folder to ONNX ({MODEL_FILE}, {DECODER_FILE}) for ONNX Runtime.",
    )
    parser.add_argument("model", help="folder of a saved GLAT model (save_pretrained)")
    parser.add_argument("--int8", action="store_true", help="also write int8 copies (dynamic quantization)")
    parser.add_argument("--output_dir", metavar="DIR", help="where the graphs go (default: the model folder)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run glat-export; return the exit status (argparse exits with 2 on a malformed command line)."""
    args = build_parser().parse_args(argv)
    try:
        written = export_onnx(args.model, args.output_dir, int8=args.int8)
    except (ValueError, OSError, ImportError) as error:  # the messages name the problem
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
