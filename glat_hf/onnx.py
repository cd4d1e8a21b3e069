"""GLAT on ONNX Runtime: export a model to two graphs, and a runtime with the `generate` of the PyTorch model.

    glat-export outputs/glat-multi30k-en-de --int8      # writes the graphs into the model folder

    model = GlatOnnxModel.from_pretrained("outputs/glat-multi30k-en-de", int8=True, threads=2)
    ids = model.generate(**tokenizer(sentences, return_tensors="pt", padding=True), length_beam_size=3)

The graphs (beside config.json and the tokenizer; `.int8.onnx` for the dynamically quantized ones):

- `encoder_model.onnx`: (input_ids, attention_mask) (B, S) -> encoder_states (B, S', d) and, unless the model is
  CTC, length_logits (B, max_target_length + 1), the scores of each target length.
- `decoder_model.onnx`: one parallel decoder pass over N = B x m rows (m length candidates per source, adjacent):
  (input_ids, attention_mask) (N, S) the source of each row, encoder_states (B, S', d) and encoder_attention_mask
  (B, S) once per source (cross-attention folds a source's candidates), decoder_mask (N, T) bool, glance_ids (N, T)
  (a token id where the decoder input is that token's embedding, -1 where it is copied from the source) ->
  tokens (N, T) the argmax, and token_scores (N, T) its log-probability (max - logsumexp); padding gets
  pad_token_id and score 0.

Batch, source and target lengths are dynamic, and padding is handled inside the graphs (the trace runs on a padded
example, with the mask always built). What happens between the passes is small and runs here in PyTorch, with
the same code as `GlatForConditionalGeneration.generate`: the top-m lengths of noisy parallel decoding, the
Mask-Predict choice of tokens to re-predict (the decoder graph again, kept tokens as glanced inputs), the CTC
collapse, the choice of the best candidate, or its scores by an autoregressive reranker (a transformers model,
run in PyTorch).

onnxruntime, onnx and onnxscript are an optional extra: `pip install glat-hf[onnx]`.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel

from .configuration_glat import GlatConfig, read_glat_config
from .ctc import ctc_collapse
from .modeling_glat import (
    GlatForConditionalGeneration,
    GlatModel,
    _lengths_to_mask,
    _repeat_rows,
    best_candidates,
    default_generation_config,
    generation_settings,
    remask_positions,
    top_length_mask,
)

PROG = "glat-export"
ENCODER_FILE, DECODER_FILE = "encoder_model.onnx", "decoder_model.onnx"
OPSET = 18
ENCODER_INPUTS = ("input_ids", "attention_mask")
DECODER_INPUTS = ENCODER_INPUTS + ("encoder_states", "encoder_attention_mask", "decoder_mask", "glance_ids")


def graph_files(int8: bool = False) -> tuple[str, str]:
    """The file names of the encoder and decoder graphs, fp32 or dynamically quantized to int8."""
    if not int8:
        return ENCODER_FILE, DECODER_FILE
    return tuple(name.replace(".onnx", ".int8.onnx") for name in (ENCODER_FILE, DECODER_FILE))


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
class _EncoderGraph(nn.Module):
    """What the encoder graph computes: GlatModel.encode and, without CTC, the length scores."""

    def __init__(self, model: GlatForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        states = self.model.model.encode(input_ids, attention_mask).last_hidden_state
        if self.model.config.use_ctc:
            return (states,)
        return states, self.model.length_scores(states, attention_mask)


class _DecoderGraph(nn.Module):
    """What the decoder graph computes: the decoder input copied from the source (glanced tokens where
    glance_ids >= 0), one decoder pass, and the tokens and scores of GlatForConditionalGeneration._decode.

    Only the real positions go through the output layer, as _decode does on CPU. The argmax and its
    log-probability (max - logsumexp there) are read from one LogSoftmax and a TopK of 1: ONNX Runtime's
    ReduceLogSumExp, ReduceMax and ArgMax took 90 ms where these take 16 (960 x 8000 logits, one thread).
    """

    def __init__(self, model: GlatForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, encoder_states, encoder_attention_mask, decoder_mask, glance_ids):
        glat = self.model.model
        inputs = glat.decoder_inputs(input_ids, attention_mask, decoder_mask, glance_ids >= 0, glance_ids)
        hidden = glat.decoder(inputs, decoder_mask, encoder_states, glat.encoder_mask(encoder_attention_mask))
        log_probs = torch.log_softmax(self.model.lm_head(hidden[decoder_mask]).float(), dim=-1)
        scores, tokens = log_probs.topk(1, dim=-1)
        pad = torch.full(decoder_mask.shape, self.model.config.pad_token_id, dtype=torch.long)
        tokens = pad.masked_scatter(decoder_mask, tokens[:, 0])  # back to (N, T): padding gets pad_token_id
        return tokens, torch.zeros(decoder_mask.shape).masked_scatter(decoder_mask, scores[:, 0])  # and score 0


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
    """Write the encoder and decoder graphs of a GLAT model (and with `int8` their dynamically quantized copies,
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
        from onnxruntime.quantization import QuantType, quantize_dynamic

        root = logging.getLogger()  # quantize_dynamic warns there of every tensor it leaves in float
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            for source, target in zip(graph_files(False), graph_files(True)):
                quantize_dynamic(output_dir / source, output_dir / target, weight_type=QuantType.QInt8)
                written.append(output_dir / target)
        finally:
            root.setLevel(level)
    return written


def _export_graphs(model: GlatForConditionalGeneration, output_dir: Path) -> list[Path]:
    config = model.config
    input_ids, attention_mask, rows, decoder_mask, glance_ids = _example_inputs(config)
    source_axes, state_axes = {0: "batch", 1: "source_length"}, {0: "batch", 1: "encoder_length"}
    encoder_outputs = ("encoder_states",) if config.use_ctc else ("encoder_states", "length_logits")
    encoder_axes = dict(input_ids=source_axes, attention_mask=source_axes, encoder_states=state_axes)
    if not config.use_ctc:
        encoder_axes["length_logits"] = {0: "batch"}
    with torch.no_grad():
        encoder = _EncoderGraph(model)
        encoder_path = output_dir / ENCODER_FILE
        _export(encoder, (input_ids, attention_mask), encoder_path, ENCODER_INPUTS, encoder_outputs, encoder_axes)
        encoder_states = encoder(input_ids, attention_mask)[0]
        row_source_axes, target_axes = {0: "rows", 1: "source_length"}, {0: "rows", 1: "target_length"}
        decoder_axes = dict(
            input_ids=row_source_axes,
            attention_mask=row_source_axes,
            encoder_states=state_axes,
            encoder_attention_mask=source_axes,
            decoder_mask=target_axes,
            glance_ids=target_axes,
            tokens=target_axes,
            token_scores=target_axes,
        )
        args = (_repeat_rows(input_ids, rows), _repeat_rows(attention_mask, rows), encoder_states, attention_mask)
        _export(
            _DecoderGraph(model),
            args + (decoder_mask, glance_ids),
            output_dir / DECODER_FILE,
            DECODER_INPUTS,
            ("tokens", "token_scores"),
            decoder_axes,
        )
    return [output_dir / ENCODER_FILE, output_dir / DECODER_FILE]


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

    def __init__(self, config: GlatConfig, generation_config: GenerationConfig, encoder, decoder, name_or_path=""):
        self.config = config
        self.generation_config = generation_config
        self.encoder_session = encoder
        self.decoder_session = decoder
        self.name_or_path = str(name_or_path)
        self._decoder_inputs = {node.name for node in decoder.get_inputs()}

    @classmethod
    def from_pretrained(cls, folder, int8: bool = False, threads: int | None = None) -> GlatOnnxModel:
        """Load `folder`'s config and graphs (written by `export_onnx` / glat-export). `threads`: ONNX Runtime's
        intra-op threads (default: its own choice). Idle threads sleep instead of spinning, so they take no cores
        from other work in the process."""
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
        sessions = []
        for name, expected in zip(graph_files(int8), (ENCODER_INPUTS, DECODER_INPUTS)):
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} not found: export the graphs first with `{PROG} {folder}{' --int8' if int8 else ''}`"
                )
            try:
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
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
        return f"{type(self).__name__}({self.name_or_path!r}, {self.encoder_session.get_modelmeta().graph_name})"

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
        **kwargs,
    ) -> torch.Tensor:
        """`GlatForConditionalGeneration.generate` on the graphs: one parallel pass, NPD over `length_beam_size`
        lengths (best mean log-probability, or best by `reranker`), `num_iterations` of Mask-Predict, CTC collapse,
        `target_lengths` (oracle lengths), `max_length` (caps the predicted length). Same checks, same (B, L) ids."""
        config = self.config
        input_ids = torch.as_tensor(input_ids)
        attention_mask, length_beam_size, num_iterations, max_length = generation_settings(
            config,
            generation_config or self.generation_config,
            input_ids,
            attention_mask,
            length_beam_size,
            num_iterations,
            max_length,
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

        encoder_outputs = self.encoder_session.run(
            None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
        )
        if config.use_ctc:
            decoder_mask = GlatForConditionalGeneration.ctc_decoder_mask(self, attention_mask)
        elif target_lengths is not None:
            decoder_mask = _lengths_to_mask(target_lengths)
        else:
            decoder_mask = top_length_mask(torch.from_numpy(encoder_outputs[1]), length_beam_size, max_length)

        feeds = {
            "input_ids": _repeat_rows(input_ids, length_beam_size).numpy(),
            "attention_mask": _repeat_rows(attention_mask, length_beam_size).numpy(),
            "encoder_states": encoder_outputs[0],
            "encoder_attention_mask": attention_mask.numpy(),
            "decoder_mask": decoder_mask.numpy(),
        }
        feeds = {name: value for name, value in feeds.items() if name in self._decoder_inputs}
        no_glance = torch.full(decoder_mask.shape, -1, dtype=torch.long)
        tokens, token_scores = self._decode(feeds, no_glance)
        for iteration in range(1, num_iterations):  # Mask-Predict, as GlatForConditionalGeneration._refine
            remask = remask_positions(decoder_mask, token_scores, iteration, num_iterations)
            new_tokens, new_scores = self._decode(feeds, tokens.masked_fill(~(decoder_mask & ~remask), -1))
            tokens = torch.where(remask, new_tokens, tokens)
            token_scores = torch.where(remask, new_scores, token_scores)

        tokens = tokens.masked_fill(~decoder_mask, config.pad_token_id)
        if config.use_ctc:
            return ctc_collapse(tokens, config.blank_token_id, config.pad_token_id, mask=decoder_mask)
        scores = None
        if length_beam_size > 1 and reranker is None:
            scores = (token_scores * decoder_mask).sum(1) / decoder_mask.sum(1)
        elif length_beam_size > 1:
            rerank = GlatForConditionalGeneration.reranker_scores
            scores = rerank(self, reranker, input_ids, attention_mask, tokens, length_beam_size)
        return best_candidates(tokens, decoder_mask, scores, length_beam_size)

    def _decode(self, feeds: dict, glance_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feeds = {**feeds, "glance_ids": glance_ids.numpy()} if "glance_ids" in self._decoder_inputs else feeds
        tokens, scores = self.decoder_session.run(None, feeds)
        return torch.from_numpy(tokens), torch.from_numpy(scores)

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
        description=f"Export a saved GLAT model folder to ONNX ({ENCODER_FILE}, {DECODER_FILE}) for ONNX Runtime.",
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
