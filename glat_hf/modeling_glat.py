"""GLAT: the Glancing Transformer for non-autoregressive translation (Qian et al., ACL 2021).

Reads top to bottom like transformers' own model files: attention -> layers -> decoder input (copy
and glance) -> PreTrainedModel -> GlatModel -> GlatForConditionalGeneration (losses and generate).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bart.modeling_bart import eager_attention_forward
from transformers.utils import logging

from .configuration_glat import GlatConfig
from .ctc import ctc_collapse, merge_repeats
from .glancing import select_glance_positions

logger = logging.get_logger(__name__)


def _additive_key_mask(key_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """(B, S) bool of real keys -> (B, 1, 1, S) additive mask, the form eager and sdpa attention both take.

    None when no key is padding, on CPU (a single sentence always): attention then skips the mask and
    SDPA takes its mask-free kernel. On GPU the check would cost a host sync, and under torch.compile
    it would break the graph, so there the mask is always built.
    """
    # A trace (the ONNX export) would freeze this branch on its example batch: there the mask is always built.
    compiled_or_traced = torch.compiler.is_compiling() or torch.jit.is_tracing()
    if key_mask.device.type == "cpu" and not compiled_or_traced and bool(key_mask.all()):
        return None
    return torch.zeros(key_mask.shape, dtype=dtype, device=key_mask.device).masked_fill(
        ~key_mask, torch.finfo(dtype).min
    )[:, None, None, :]


@contextmanager
def _replayed_randomness(seed: int | None, device: torch.device):
    """Run a block with the random state `seed` (then restore the outer one); a no-op for None."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _unreadable_safetensors(folder: str) -> list[str]:
    """Names of the .safetensors files in `folder` whose header safetensors cannot read (truncated, not a file
    in the safetensors format)."""
    unreadable = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            try:
                with safe_open(os.path.join(folder, name), framework="pt"):
                    pass
            except (SafetensorError, OSError):
                unreadable.append(name)
    return unreadable


def _lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) lengths -> (B, L) bool, True on the first `length` positions (L: the longest, or `max_len`).

    arange of the tensor max, not of int(max): an ONNX trace (glat_hf.onnx) keeps L dynamic."""
    end = lengths.max() if max_len is None else max_len
    return torch.arange(end, device=lengths.device)[None, :] < lengths[:, None]


def _repeat_rows(tensor: torch.Tensor, times: int | torch.Tensor) -> torch.Tensor:
    """Each row `times` times, the copies adjacent: the layout of the length candidates of one source.
    `times` may be a 0-d tensor (the ONNX graph's length_beam_size input)."""
    return tensor if isinstance(times, int) and times == 1 else tensor.repeat_interleave(times, dim=0)


# NPD's weight of log P(length | source) beside each candidate's mean token log-probability, for new models. A
# generation config saved without the key ranks by the mean token log-probability alone (weight 0).
LENGTH_PRIOR_WEIGHT = 0.05


def default_generation_config(config: GlatConfig) -> GenerationConfig:
    """One parallel pass, no refinement, the config's ids and length limit; assigned explicitly so that the
    custom keys (`length_beam_size`, `num_iterations`, `remove_repeats`, `length_prior_weight`) survive save and
    load."""
    return GenerationConfig(
        length_beam_size=1,
        num_iterations=1,
        remove_repeats=False,
        length_prior_weight=LENGTH_PRIOR_WEIGHT,
        max_length=config.max_target_length,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
    )


def generation_settings(
    config,
    generation_config,
    input_ids,
    attention_mask,
    length_beam_size,
    num_iterations,
    max_length,
    remove_repeats,
    length_prior_weight,
):
    """`generate`'s arguments checked and completed from the generation config (PyTorch and ONNX Runtime alike):
    (attention_mask, length_beam_size, num_iterations, max_length, remove_repeats, length_prior_weight)."""
    if length_prior_weight is None:
        length_prior_weight = getattr(generation_config, "length_prior_weight", 0.0)
    if (
        isinstance(length_prior_weight, bool)
        or not isinstance(length_prior_weight, (int, float))
        or not 0 <= length_prior_weight < math.inf
    ):
        raise ValueError(f"length_prior_weight must be a number >= 0, got {length_prior_weight!r}.")
    if length_beam_size is None:
        length_beam_size = getattr(generation_config, "length_beam_size", 1)
    if num_iterations is None:
        num_iterations = getattr(generation_config, "num_iterations", 1)
    if remove_repeats is None:
        remove_repeats = getattr(generation_config, "remove_repeats", False)
    if not isinstance(remove_repeats, bool):
        raise ValueError(f"remove_repeats must be True or False, got {remove_repeats!r}.")
    max_length = min(max_length or generation_config.max_length or config.max_target_length, config.max_target_length)
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}.")
    if attention_mask is None:
        attention_mask = (input_ids != config.pad_token_id).long()
    if not isinstance(num_iterations, int) or num_iterations < 1:
        raise ValueError(f"num_iterations must be a positive integer, got {num_iterations!r}.")
    if not isinstance(length_beam_size, int) or not 1 <= length_beam_size <= max_length:
        raise ValueError(
            f"length_beam_size must be an integer from 1 to the number of allowed lengths ({max_length}), "
            f"got {length_beam_size!r}."
        )
    if config.use_ctc and length_beam_size > 1:
        raise ValueError(
            "length_beam_size > 1 (noisy parallel decoding) needs a length predictor; CTC models have none."
        )
    return attention_mask, length_beam_size, num_iterations, max_length, remove_repeats, float(length_prior_weight)


def top_lengths(
    length_logits: torch.Tensor, length_beam_size: int, max_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B*m,) the top-m lengths in 1..max_length of each source, adjacent: the layout of its candidates, and
    (B*m,) their log-probabilities log P(length | source) over the allowed lengths (NPD's length prior).
    Integers here; 0-d tensors in the ONNX graph, which takes both as inputs."""
    allowed = torch.arange(length_logits.shape[-1], device=length_logits.device)
    allowed = (allowed >= 1) & (allowed <= max_length)
    allowed_logits = length_logits.float().masked_fill(~allowed, float("-inf"))
    # x - logsumexp: in the ONNX graph the only LogSoftmax stays the vocabulary's, which runs only when asked
    log_probs = allowed_logits - allowed_logits.logsumexp(-1, keepdim=True)
    best = log_probs.topk(length_beam_size, dim=-1)
    return best.indices.flatten(), best.values.flatten()


def candidate_scores(token_scores, decoder_mask, length_log_probs, length_prior_weight: float) -> torch.Tensor:
    """NPD's self rerank (paper §3.3): each candidate's mean token log-probability, plus length_prior_weight x
    log P(length | source). The mean alone does not compare lengths well; the length predictor's belief does."""
    scores = (token_scores * decoder_mask).sum(1) / decoder_mask.sum(1)
    return scores + length_prior_weight * length_log_probs if length_prior_weight else scores


def needs_token_scores(length_beam_size: int, reranker, num_iterations: int) -> bool:
    """Whether the first pass must score its tokens: NPD ranks its candidates by them (unless an autoregressive
    reranker does), Mask-Predict re-predicts the least confident. Otherwise the logsumexp over the vocabulary is
    skipped."""
    return (length_beam_size > 1 and reranker is None) or num_iterations > 1


def remask_positions(decoder_mask, scores, iteration: int, total: int) -> torch.Tensor:
    """Mask-Predict (Ghazvininejad et al. 2019): the T(N-t)/N least confident positions to predict again."""
    num_masked = (decoder_mask.sum(1) * (total - iteration)) // total
    return select_glance_positions(num_masked, decoder_mask, "most_uncertain", reference_probs=scores.exp())


def best_candidates(tokens, decoder_mask, scores, length_beam_size: int) -> torch.Tensor:
    """The best of each source's `length_beam_size` adjacent candidates by `scores` (None: one candidate each),
    trimmed to the longest chosen length (not to non-pad tokens: a decoded pad_token_id is a token)."""
    lengths = decoder_mask.sum(1)
    if length_beam_size > 1:
        best = scores.view(-1, length_beam_size).argmax(-1)
        rows = torch.arange(best.shape[0], device=best.device)
        tokens = tokens.view(-1, length_beam_size, tokens.shape[-1])[rows, best]
        lengths = lengths.view(-1, length_beam_size)[rows, best]
    return tokens[:, : max(int(lengths.max()), 1)]


class GlatAttention(nn.Module):
    """Multi-head attention without a causal mask, through transformers' attention functions (eager, sdpa, ...)."""

    def __init__(self, config: GlatConfig, num_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = config.d_model // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.is_causal = False  # every target position sees every other: the decoder is non-autoregressive
        self.q_proj = nn.Linear(config.d_model, config.d_model)
        self.k_proj = nn.Linear(config.d_model, config.d_model)
        self.v_proj = nn.Linear(config.d_model, config.d_model)
        self.out_proj = nn.Linear(config.d_model, config.d_model)

    def forward(self, hidden_states, attention_mask, key_value_states=None):
        """Self-attention, or cross-attention to `key_value_states` (B, S, d).

        In cross-attention `hidden_states` may hold m > 1 adjacent rows per source (B*m, T, d): the
        length candidates of noisy parallel decoding. They are folded into one query sequence of m*T
        positions per source, so each source's keys and values are projected once rather than m times;
        queries do not see each other in cross-attention, so the result is the same.
        """
        rows, length, _ = hidden_states.shape
        key_value_states = hidden_states if key_value_states is None else key_value_states
        batch = key_value_states.shape[0]

        def heads(states):
            return states.reshape(batch, -1, self.num_heads, self.head_dim).transpose(1, 2)

        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, eager_attention_forward)
        output, _ = attention(
            self,
            heads(self.q_proj(hidden_states)),
            heads(self.k_proj(key_value_states)),
            heads(self.v_proj(key_value_states)),
            attention_mask,
            dropout=self.dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.out_proj(output.reshape(rows, length, -1))


class GlatFeedForward(nn.Module):
    def __init__(self, config: GlatConfig, ffn_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, config.d_model)
        self.activation = ACT2FN[config.activation_function]
        self.activation_dropout = config.activation_dropout

    def forward(self, hidden_states):
        hidden_states = self.activation(self.fc1(hidden_states))
        hidden_states = F.dropout(hidden_states, self.activation_dropout, self.training)
        return self.fc2(hidden_states)


class GlatLayer(nn.Module):
    """One Transformer layer: self-attention, optional cross-attention (decoder), feed-forward; pre- or post-norm."""

    def __init__(self, config: GlatConfig, is_decoder: bool):
        super().__init__()
        side = "decoder" if is_decoder else "encoder"
        heads, ffn_dim = getattr(config, f"{side}_attention_heads"), getattr(config, f"{side}_ffn_dim")
        self.normalize_before = config.normalize_before
        self.dropout = config.dropout
        self.self_attn = GlatAttention(config, heads)
        self.self_attn_layer_norm = nn.LayerNorm(config.d_model)
        if is_decoder:
            self.encoder_attn = GlatAttention(config, heads)
            self.encoder_attn_layer_norm = nn.LayerNorm(config.d_model)
        self.ffn = GlatFeedForward(config, ffn_dim)
        self.final_layer_norm = nn.LayerNorm(config.d_model)

    def _residual(self, hidden_states, layer_norm, sublayer):
        output = sublayer(layer_norm(hidden_states) if self.normalize_before else hidden_states)
        hidden_states = hidden_states + F.dropout(output, self.dropout, self.training)
        return hidden_states if self.normalize_before else layer_norm(hidden_states)

    def forward(self, hidden_states, attention_mask, encoder_hidden_states=None, encoder_attention_mask=None):
        hidden_states = self._residual(
            hidden_states, self.self_attn_layer_norm, lambda h: self.self_attn(h, attention_mask)
        )
        if encoder_hidden_states is not None:
            hidden_states = self._residual(
                hidden_states,
                self.encoder_attn_layer_norm,
                lambda h: self.encoder_attn(h, encoder_attention_mask, key_value_states=encoder_hidden_states),
            )
        return self._residual(hidden_states, self.final_layer_norm, self.ffn)


class GlatStack(nn.Module):
    """Learned positions + a stack of layers: the encoder (is_decoder=False) or the decoder (True).

    The positions are added once to the input, or for the decoder with decoder_positions "every_layer"
    to the hidden states before every layer (each time followed by dropout), as the official code does.
    """

    def __init__(self, config: GlatConfig, is_decoder: bool):
        super().__init__()
        num_layers = config.decoder_layers if is_decoder else config.encoder_layers
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.ModuleList(GlatLayer(config, is_decoder) for _ in range(num_layers))
        self.layer_norm = nn.LayerNorm(config.d_model) if config.normalize_before else nn.Identity()
        self.dropout = config.dropout
        self.positions_every_layer = is_decoder and config.decoder_positions == "every_layer"

    def forward(self, inputs_embeds, mask, encoder_hidden_states=None, encoder_mask=None):
        positions = self.embed_positions(torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device))
        hidden_states = inputs_embeds
        attention_mask = _additive_key_mask(mask, hidden_states.dtype)
        encoder_attention_mask = None
        if encoder_hidden_states is not None:
            encoder_attention_mask = _additive_key_mask(encoder_mask, hidden_states.dtype)
        for index, layer in enumerate(self.layers):
            if index == 0 or self.positions_every_layer:
                hidden_states = F.dropout(hidden_states + positions, self.dropout, self.training)
            hidden_states = layer(hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask)
        return self.layer_norm(hidden_states)


def uniform_copy_indices(source_lengths: torch.Tensor, target_lengths: torch.Tensor, target_len: int) -> torch.Tensor:
    """Source position copied to each target position: round(t * (S-1)/(T-1)) (Gu et al. 2018). (B, T) float."""
    step = (source_lengths - 1).float() / (target_lengths - 1).clamp(min=1).float()
    positions = torch.arange(target_len, device=source_lengths.device).float()
    return (positions[None, :] * step[:, None]).clamp(max=(source_lengths - 1).float()[:, None])


class GlatSoftCopy(nn.Module):
    """Soft copy: each target position attends over the source; the value is the source token embedding.

    `source_keys` are the source token embeddings plus their encoder positions, `target_positions` the
    decoder's positional embeddings. The score of source j for target t depends on soft_copy_form:

    - "official" (the official GLAT code with --src-embedding-copy): (W pos_t) . key_j, W one linear map
      without bias, not scaled by 1/sqrt(d), with no prior.
    - "distance_prior": query(pos_t) . key(key_j) / sqrt(d), biased query and key projections, plus the fixed
      prior -|j - t(S-1)/(T-1)|, which centres target t on its uniform-copy source, so that an untrained
      model starts from uniform copy.

    The softmax runs over the real source positions.
    """

    def __init__(self, config: GlatConfig):
        super().__init__()
        self.distance_prior = config.soft_copy_form == "distance_prior"
        self.query = nn.Linear(config.d_model, config.d_model, bias=self.distance_prior)
        self.key = nn.Linear(config.d_model, config.d_model) if self.distance_prior else None
        self.scaling = config.d_model**-0.5 if self.distance_prior else 1.0

    def forward(self, target_positions, source_keys, source_values, source_mask, target_lengths):
        keys = self.key(source_keys) if self.distance_prior else source_keys
        scores = torch.einsum("td,bsd->bts", self.query(target_positions), keys) * self.scaling
        if self.distance_prior:
            centres = uniform_copy_indices(source_mask.sum(1), target_lengths, target_positions.shape[0])
            source_index = torch.arange(source_mask.shape[1], device=scores.device).float()
            scores = scores - (source_index[None, None, :] - centres[:, :, None]).abs().to(scores.dtype)
        scores = scores.masked_fill(~source_mask[:, None, :], torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) @ source_values


@dataclass
class GlatModelOutput(ModelOutput):
    """Decoder states with the encoder states they attended to (reusable for a second, glancing pass)."""

    last_hidden_state: torch.Tensor | None = None
    decoder_mask: torch.Tensor | None = None
    encoder_last_hidden_state: torch.Tensor | None = None
    encoder_attention_mask: torch.Tensor | None = None


@dataclass
class GlatSeq2SeqLMOutput(ModelOutput):
    """Output of [`GlatForConditionalGeneration`].

    Args:
        loss: token loss (label-smoothed NLL over the non-glanced target positions, or CTC) +
            length_loss_factor x length loss.
        logits: (B, T, V) token scores at every decoder position.
        length_logits: (B, max_target_length + 1) scores of each target length (None for CTC).
        decoder_mask: (B, T) bool, the real decoder positions.
        encoder_outputs: pass back as `encoder_outputs=` to skip the encoder in a second pass.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    length_logits: torch.Tensor | None = None
    token_loss: torch.Tensor | None = None
    length_loss: torch.Tensor | None = None
    decoder_mask: torch.Tensor | None = None
    encoder_outputs: BaseModelOutput | None = None
    encoder_attention_mask: torch.Tensor | None = None


class GlatPreTrainedModel(PreTrainedModel):
    config_class = GlatConfig
    config: GlatConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["GlatLayer"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained` that reads weights only from safetensors files, never from a
        pickle (`pytorch_model.bin`), and names the folder and the file when the weights are missing or
        corrupt (transformers alone raises safetensors' "Error while deserializing header", naming neither).
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError(
                "GLAT weights are read only from safetensors files; use_safetensors=False is not supported."
            )
        kwargs["use_safetensors"] = True
        source = None if pretrained_model_name_or_path is None else str(pretrained_model_name_or_path)
        if source is not None and os.path.isfile(source) and not source.endswith(".safetensors"):
            raise ValueError(f"{source}: GLAT weights are read only from safetensors files, never from a pickle.")
        folder = os.path.join(source, kwargs["subfolder"]) if source and kwargs.get("subfolder") else source
        folder = folder if folder and os.path.isdir(folder) else None
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except SafetensorError as error:
            unreadable = _unreadable_safetensors(folder) if folder else []
            where = os.path.join(folder, unreadable[0]) if unreadable else f"{folder or source}: model.safetensors"
            raise OSError(f"{where} is corrupt or truncated ({error}); save or copy the model again.") from error
        except OSError as error:
            names = os.listdir(folder) if folder else []
            if folder is None or any(name.endswith(".safetensors") for name in names):
                raise
            message = f"{folder} has no model.safetensors: GLAT weights are read only from safetensors files."
            pickles = sorted(name for name in names if name.endswith((".bin", ".pt", ".pth", ".ckpt")))
            if pickles:
                message += (
                    f" It holds {', '.join(pickles)}: pickle files, which glat_hf never loads (unpickling can run "
                    "code). Convert them with safetensors.torch.save_file only if you trust where they came from."
                )
            raise OSError(message) from error


class GlatModel(GlatPreTrainedModel):
    """Encoder (with a `<length>` token first for length_predictor "length_token"), and a decoder without causal
    mask whose input is copied from the source.

    One token embedding serves the encoder, the decoder's glanced inputs and (tied) the output layer:
    the vocabulary is joint, and glancing feeds target embeddings from the output embedding matrix (§3.1).
    """

    def __init__(self, config: GlatConfig):
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_token_id)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.encoder = GlatStack(config, is_decoder=False)
        self.decoder = GlatStack(config, is_decoder=True)
        self.soft_copy = GlatSoftCopy(config) if config.decoder_input == "soft_copy" else None
        self.post_init()

    def get_input_embeddings(self):
        return self.shared

    def set_input_embeddings(self, value):
        self.shared = value

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.shared(ids) * self.embed_scale

    @property
    def prepends_length_token(self) -> bool:
        return self.config.length_predictor == "length_token"

    def encoder_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) source mask -> (B, S') bool mask of the encoder states, the `<length>` state included."""
        if not self.prepends_length_token:
            return attention_mask.bool()
        return torch.cat([attention_mask.new_ones(attention_mask.shape[0], 1), attention_mask], 1).bool()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> BaseModelOutput:
        """Encode the source, after a `<length>` token (length_predictor "length_token"), whose state (position
        0 of the output) then feeds the length predictor."""
        config = self.config
        limit = config.max_source_positions
        if input_ids.shape[1] > limit:
            if config.use_ctc and limit == config.max_position_embeddings // config.upsample_ratio:
                reason = "max_position_embeddings // upsample_ratio: CTC decodes upsample_ratio positions per token"
            elif self.prepends_length_token:
                reason = "max_position_embeddings minus the <length> token"
            else:
                reason = "max_position_embeddings"
            raise ValueError(
                f"The source has {input_ids.shape[1]} tokens, but this model holds at most {limit} ({reason}). "
                "Truncate it (the tokenizer and the glat-translation pipeline do with truncation=True)."
            )
        mask = self.encoder_mask(attention_mask)
        if self.prepends_length_token:
            length_tokens = input_ids.new_full((input_ids.shape[0], 1), config.length_token_id)
            input_ids = torch.cat([length_tokens, input_ids], dim=1)
        return BaseModelOutput(last_hidden_state=self.encoder(self.embed(input_ids), mask))

    def decoder_inputs(self, input_ids, attention_mask, decoder_mask, glance_mask=None, glance_ids=None):
        """The decoder input H: copied from the source, and at glanced positions the target embeddings (eq. 5).

        decoder_input "soft_copy" | "uniform_copy" copy the source token embeddings; "mask" uses the
        `<mask>` embedding everywhere (paper Table 7). Where `glance_mask` is True, H takes the
        embedding of `glance_ids` instead: the reference words in training, the kept predictions in
        Mask-Predict refinement.
        """
        batch, target_len = decoder_mask.shape
        target_lengths = decoder_mask.sum(1)
        source_mask = attention_mask.bool()
        mode = self.config.decoder_input
        if mode == "mask":
            inputs = self.embed(input_ids.new_full((batch, target_len), self.config.mask_token_id))
        elif mode == "uniform_copy":
            index = uniform_copy_indices(source_mask.sum(1), target_lengths, target_len).round().long()
            inputs = self.embed(input_ids.gather(1, index))
        else:
            # The source's own encoder positions: after the <length> token's position 0 when there is one.
            first = 1 if self.prepends_length_token else 0
            source_index = torch.arange(first, first + input_ids.shape[1], device=input_ids.device)
            source_embeds = self.embed(input_ids)
            source_positions = self.encoder.embed_positions(source_index)
            target_positions = self.decoder.embed_positions(torch.arange(target_len, device=input_ids.device))
            inputs = self.soft_copy(
                target_positions, source_embeds + source_positions, source_embeds, source_mask, target_lengths
            )
        if glance_mask is not None:
            glanced = self.embed(glance_ids.clamp(min=0))
            inputs = torch.where(glance_mask[..., None], glanced.to(inputs.dtype), inputs)
        return inputs

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        decoder_mask: torch.Tensor,
        encoder_outputs: BaseModelOutput | None = None,
        glance_mask: torch.Tensor | None = None,
        glance_ids: torch.Tensor | None = None,
    ) -> GlatModelOutput:
        if encoder_outputs is None:
            encoder_outputs = self.encode(input_ids, attention_mask)
        encoder_mask = self.encoder_mask(attention_mask)
        inputs = self.decoder_inputs(input_ids, attention_mask, decoder_mask, glance_mask, glance_ids)
        hidden = self.decoder(inputs, decoder_mask, encoder_outputs.last_hidden_state, encoder_mask)
        return GlatModelOutput(
            last_hidden_state=hidden,
            decoder_mask=decoder_mask,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_attention_mask=encoder_mask,
        )


class GlatForConditionalGeneration(GlatPreTrainedModel, GenerationMixin):
    """GLAT with its output layer, length predictor, losses and a non-autoregressive `generate`.

    `forward(input_ids, attention_mask, labels)` trains the plain NAT objective; the glancing
    trainer runs it twice, the second time with `glance_mask`/`glance_ids` and `encoder_outputs`
    of the first (paper §3.1-3.2).
    """

    _tied_weights_keys = {"lm_head.weight": "model.shared.weight"}
    accepts_loss_kwargs = False  # the loss is a mean over the batch's tokens, not over num_items_in_batch

    def __init__(self, config: GlatConfig):
        super().__init__(config)
        self.model = GlatModel(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # One class per target length 0..max_target_length, or per offset target - source length, from
        # -max_source_positions (the longest source) to +max_target_length.
        negative_offsets = config.max_source_positions if config.predict_length_offset else 0
        length_classes = config.max_target_length + 1 + negative_offsets
        self.length_head = None if config.use_ctc else nn.Linear(config.d_model, length_classes)
        self.post_init()
        self.generation_config = default_generation_config(config)

    def get_input_embeddings(self):
        return self.model.shared

    def set_input_embeddings(self, value):
        self.model.shared = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    # ----------------------------------------------------------------------------------------- lengths
    def target_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Real target positions of right-padded labels (padding is -100 or pad_token_id)."""
        mask = (labels != -100) & (labels != self.config.pad_token_id)
        if not torch.equal(mask, _lengths_to_mask(mask.sum(1), labels.shape[1])):
            raise ValueError(
                "labels must be right-padded (with -100 or pad_token_id), with no padding inside a sentence."
            )
        return mask

    def ctc_decoder_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """CTC decodes upsample_ratio x source length positions (paper: 2)."""
        lengths = attention_mask.sum(1) * self.config.upsample_ratio
        if int(lengths.max()) > self.config.max_position_embeddings:
            raise ValueError(
                f"CTC needs upsample_ratio x source length = {int(lengths.max())} decoder positions, more than "
                f"max_position_embeddings ({self.config.max_position_embeddings}). Truncate the source to "
                f"{self.config.max_source_positions} tokens."
            )
        return _lengths_to_mask(lengths)

    def _check_target_fits(self, decoder_mask: torch.Tensor):
        if decoder_mask.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"The target has {decoder_mask.shape[1]} positions, more than max_position_embeddings "
                f"({self.config.max_position_embeddings}). Truncate the labels to max_target_length "
                f"({self.config.max_target_length}) tokens."
            )

    def _check_length_classes(self, target_lengths: torch.Tensor):
        """The length predictor has one class per length 0..max_target_length; a longer target has none.

        Training on one would teach the predictor a wrong length, so in training mode it is an error. An
        evaluation loss may meet longer references (a test set the model was not trained for): there it
        counts as the longest class, with a warning.
        """
        longest = int(target_lengths.max()) if target_lengths.numel() else 0
        if longest <= self.config.max_target_length:
            return
        message = (
            f"The labels hold a target of {longest} tokens, but the length predictor has classes up to "
            f"max_target_length={self.config.max_target_length}."
        )
        if self.training:
            raise ValueError(
                f"{message} Truncate the targets to {self.config.max_target_length} tokens (tokenizer(..., "
                f"text_target=..., truncation=True, max_length={self.config.max_target_length})) or build the "
                "model with a larger max_target_length."
            )
        logger.warning_once(f"{message} The length loss of this evaluation counts such targets as the longest class.")

    # -------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        decoder_lengths: torch.Tensor | None = None,
        glance_mask: torch.Tensor | None = None,
        glance_ids: torch.Tensor | None = None,
        glance_fn: Callable | None = None,
        same_dropout: bool = True,
        **kwargs,
    ) -> GlatSeq2SeqLMOutput:
        r"""
        Args:
            input_ids, attention_mask: the source, right-padded. `<length>` is prepended inside (length_predictor
                "length_token").
            labels: (B, T) reference ids padded with -100 (or pad_token_id). Sets the decoder length
                (non-CTC) and gives the loss.
            encoder_outputs: the `encoder_outputs` of an earlier call on the same source: skips the encoder.
            decoder_lengths: (B,) lengths to decode when there are no labels; default: the predicted length.
            glance_mask: (B, T) bool, decoder positions whose input is the embedding of `glance_ids`
                (default: the labels) instead of the copied source. Those whose input is their reference word
                are left out of the token loss (paper eq. 4); one fed another word (the model's own, wrong
                prediction) is trained to be corrected. For CTC the loss covers the whole sequence.
            glance_ids: (B, T) ids for the glanced positions (the aligned tokens, for CTC).
            glance_fn: glancing training in one call (paper §3.2), so that the encoder runs once and a
                DDP-wrapped model sees one forward per backward: pass 1 decodes without gradient,
                `glance_fn(first_pass_logits, labels, decoder_mask)` returns `(glance_mask, glance_ids)`,
                and pass 2 decodes with them. The trainer's glancing policy is such a function.
            same_dropout: with `glance_fn`, replay pass 1's random state in pass 2, so that both passes
                draw the same dropout masks.
        """
        if attention_mask is None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        if isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
        if encoder_outputs is None:
            encoder_outputs = self.model.encode(input_ids, attention_mask)
        length_logits = None
        if not self.config.use_ctc:
            length_logits = self.length_scores(encoder_outputs.last_hidden_state, attention_mask)

        if self.config.use_ctc:
            decoder_mask = self.ctc_decoder_mask(attention_mask)
        elif labels is not None:
            decoder_mask = self.target_mask(labels)
        else:
            if decoder_lengths is None:
                decoder_lengths = length_logits[:, 1:].argmax(-1) + 1
            decoder_mask = _lengths_to_mask(decoder_lengths)
        self._check_target_fits(decoder_mask)
        if labels is not None and not self.config.use_ctc:
            self._check_length_classes(decoder_mask.sum(1))
        dropout_seed = None
        if glance_fn is not None:
            # One seed a step from the global generator (which Trainer checkpoints): both passes replay it.
            dropout_seed = int(torch.randint(2**62, ())) if same_dropout and self.training else None
            glance_mask, glance_ids = self._first_pass(
                input_ids, attention_mask, decoder_mask, encoder_outputs, labels, glance_fn, dropout_seed
            )
        if glance_mask is not None:
            glance_mask = glance_mask & decoder_mask
            if glance_ids is None:
                glance_ids = labels

        with _replayed_randomness(dropout_seed, input_ids.device):
            outputs = self.model(input_ids, attention_mask, decoder_mask, encoder_outputs, glance_mask, glance_ids)
        logits = self.lm_head(outputs.last_hidden_state)

        loss = token_loss = length_loss = None
        if labels is not None:
            if self.config.use_ctc:
                token_loss = self.ctc_loss(logits, decoder_mask, labels)
                loss = token_loss
            else:
                loss_mask = decoder_mask
                if glance_mask is not None:  # what a position's input gives away is not trained
                    loss_mask = decoder_mask & ~(glance_mask & (glance_ids == labels))
                token_loss = self.token_loss(logits, labels, loss_mask)
                length_loss = self.length_loss(length_logits, decoder_mask.sum(1))
                loss = token_loss + self.length_loss_weight(loss_mask, decoder_mask) * length_loss
        return GlatSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            length_logits=length_logits,
            token_loss=token_loss,
            length_loss=length_loss,
            decoder_mask=decoder_mask,
            encoder_outputs=encoder_outputs,
            encoder_attention_mask=outputs.encoder_attention_mask,
        )

    def _first_pass(self, input_ids, attention_mask, decoder_mask, encoder_outputs, labels, glance_fn, dropout_seed):
        """Pass 1 of glancing training: decode without gradient, then let `glance_fn` choose what to glance."""
        detached = BaseModelOutput(last_hidden_state=encoder_outputs.last_hidden_state.detach())
        with torch.no_grad(), _replayed_randomness(dropout_seed, input_ids.device):
            logits = self.lm_head(self.model(input_ids, attention_mask, decoder_mask, detached).last_hidden_state)
        return glance_fn(logits, labels, decoder_mask)

    def token_loss(self, logits, labels, loss_mask) -> torch.Tensor:
        """Label-smoothed NLL, averaged over the positions of `loss_mask` (0 if every position was glanced)."""
        losses = F.cross_entropy(
            logits[loss_mask].float(), labels[loss_mask], label_smoothing=self.config.label_smoothing, reduction="sum"
        )
        return losses / loss_mask.sum().clamp(min=1)

    def length_loss_weight(self, loss_mask: torch.Tensor, decoder_mask: torch.Tensor) -> torch.Tensor | float:
        """The weight of the length loss: length_loss_factor, times for length_loss_weighting "non_glanced" the
        fraction of the batch's target tokens that are not glanced (`loss_mask`), as the official code does."""
        if self.config.length_loss_weighting == "constant":
            return self.config.length_loss_factor
        return self.config.length_loss_factor * loss_mask.sum() / decoder_mask.sum().clamp(min=1)

    def length_scores(self, encoder_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, max_target_length + 1) scores of each target length, from the `<length>` state (position 0), or
        for length_predictor "mean_pool" from the mean of the encoder states over the real source positions.

        With `predict_length_offset` the head scores offsets target - source length, and the score of
        length L is that of the offset L - S for a source of S tokens: the loss, the trainer's length
        accuracy and decoding read lengths either way.
        """
        if self.config.length_predictor == "mean_pool":
            mask = attention_mask[..., None].to(encoder_states.dtype)
            features = (encoder_states * mask).sum(1) / mask.sum(1).clamp(min=1)
        else:
            features = encoder_states[:, 0]
        scores = self.length_head(features)
        if not self.config.predict_length_offset:
            return scores
        lengths = torch.arange(self.config.max_target_length + 1, device=scores.device)
        offsets = lengths[None, :] - attention_mask.sum(1, keepdim=True) + self.config.max_source_positions
        return scores.gather(1, offsets)

    def length_loss(self, length_logits, target_lengths) -> torch.Tensor:
        """Cross-entropy of the target length; a target longer than max_target_length (refused by forward in
        training) counts as the last class."""
        return F.cross_entropy(length_logits.float(), target_lengths.clamp(max=self.config.max_target_length))

    def ctc_loss(self, logits, decoder_mask, labels) -> torch.Tensor:
        """CTC over the upsampled decoder positions with `<blank>` (Graves et al. 2006), mean over target tokens."""
        target_mask = self.target_mask(labels)
        log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        return F.ctc_loss(
            log_probs,
            labels.masked_fill(~target_mask, self.config.pad_token_id),
            decoder_mask.sum(1),
            target_mask.sum(1),
            blank=self.config.blank_token_id,
            zero_infinity=True,  # a target longer than the upsampled source cannot be aligned: no gradient
        )

    # ------------------------------------------------------------------------------------------- generate
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
        """Translate in one parallel decoder pass (paper §3.3).

        Predicts the target length, then decodes every position at once by argmax. With
        `length_beam_size=m > 1` this is noisy parallel decoding: the top-m lengths are decoded in the
        same batched pass and the candidate with the best mean token log-probability is kept, or the
        best by `reranker` (a transformers seq2seq model with the same vocabulary, e.g. the AR teacher,
        scoring all candidates by teacher forcing in one pass; or the teacher on CTranslate2,
        glat_hf.ctranslate2_baseline.CTranslate2Translator: see `reranker_scores`). Without a reranker,
        `length_prior_weight` w adds w x log P(length | source) to each candidate's mean (`candidate_scores`;
        default: the generation config's, 0.05 for new models, 0 for configs saved without it). `num_iterations > 1`
        adds Mask-Predict refinement (paper Figure 5). CTC models decode upsample_ratio x source length
        positions and collapse them (merge repeats, drop `<blank>`); NPD does not apply to them.

        `target_lengths` (B,) decodes these target lengths (counting `</s>`, 1..max_target_length) instead of
        the predicted ones: an oracle length, to measure translation apart from length prediction. It
        needs length_beam_size 1 and a model with a length predictor (not CTC).

        `remove_repeats=True` merges consecutive repeated tokens of the output ("a a b" -> "a b", the
        de-duplication of Lee et al. 2018), the typical error of one parallel pass; NPD scores its candidates
        before. CTC output is merged already.

        Returns (B, L) token ids padded with pad_token_id. Unused keyword arguments (labels,
        synced_gpus, ... passed by Seq2SeqTrainer) are ignored; `max_length` caps the predicted target length.
        """
        config = self.config
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
        if target_lengths is not None:
            target_lengths = self._check_target_lengths(target_lengths, input_ids, length_beam_size)
        if reranker is not None:
            self._check_reranker(reranker)

        encoder_outputs = self.model.encode(input_ids, attention_mask)
        if config.use_ctc:
            decoder_mask = self.ctc_decoder_mask(attention_mask)
        elif target_lengths is not None:
            decoder_mask = _lengths_to_mask(target_lengths)
        else:
            length_logits = self.length_scores(encoder_outputs.last_hidden_state, attention_mask)
            lengths, length_log_probs = top_lengths(length_logits, length_beam_size, max_length)
            decoder_mask = _lengths_to_mask(lengths)

        # Every length candidate in one batch. The decoder input copied from the source is the same in
        # every Mask-Predict iteration, so it is built once (what GlatModel.forward does, split in two).
        encoder_states = encoder_outputs.last_hidden_state  # once per source: cross-attention folds the candidates
        encoder_mask = self.model.encoder_mask(attention_mask)
        copied = self.model.decoder_inputs(
            _repeat_rows(input_ids, length_beam_size), _repeat_rows(attention_mask, length_beam_size), decoder_mask
        )
        with_scores = needs_token_scores(length_beam_size, reranker, num_iterations)
        tokens, token_scores = self._decode(copied, decoder_mask, encoder_states, encoder_mask, with_scores)
        for iteration in range(1, num_iterations):
            tokens, token_scores = self._refine(
                copied, decoder_mask, encoder_states, encoder_mask, tokens, token_scores, iteration, num_iterations
            )

        tokens = tokens.masked_fill(~decoder_mask, config.pad_token_id)
        if config.use_ctc:
            return ctc_collapse(tokens, config.blank_token_id, config.pad_token_id, mask=decoder_mask)
        scores = None
        if length_beam_size > 1 and reranker is None:
            scores = candidate_scores(token_scores, decoder_mask, length_log_probs, length_prior_weight)
        elif length_beam_size > 1:
            scores = self.reranker_scores(reranker, input_ids, attention_mask, tokens, length_beam_size)
        if remove_repeats:  # after the candidates are scored: the scores are of what was decoded
            tokens, decoder_mask = merge_repeats(tokens, decoder_mask, config.pad_token_id)
        return best_candidates(tokens, decoder_mask, scores, length_beam_size)

    def _decode(self, inputs, decoder_mask, encoder_states, encoder_mask, with_scores=True):
        """One parallel decoder pass over the decoder input H: argmax tokens and their log-probabilities.

        The log-probability of the argmax is max - logsumexp of its logits, so no (B, T, V) log-softmax
        is written; without `with_scores` (nothing ranks or refines the tokens) scores are None and the
        logsumexp is skipped. On CPU only the real positions go through the vocabulary projection, the largest
        matrix product of the pass (NPD pads shorter length candidates to the longest); there the
        padding gets pad_token_id and score 0. On GPU the boolean gather would cost a host sync.
        """
        hidden = self.model.decoder(inputs, decoder_mask, encoder_states, encoder_mask)
        # Traced (the ONNX export), the gather is always in the graph: the example batch must not decide it.
        only_real = hidden.device.type == "cpu" and (torch.jit.is_tracing() or not bool(decoder_mask.all()))
        logits = self.lm_head(hidden[decoder_mask] if only_real else hidden).float()
        best, tokens = logits.max(-1)
        scores = best - torch.logsumexp(logits, dim=-1) if with_scores else None
        if only_real:  # back to (B, T): padding gets pad_token_id and score 0
            tokens = tokens.new_full(decoder_mask.shape, self.config.pad_token_id).masked_scatter(decoder_mask, tokens)
            if scores is not None:
                scores = scores.new_zeros(decoder_mask.shape).masked_scatter(decoder_mask, scores)
        return tokens, scores

    def _refine(self, copied, decoder_mask, encoder_states, encoder_mask, tokens, scores, iteration, total):
        """Mask-Predict step (Ghazvininejad et al. 2019): re-predict the T(N-t)/N least confident tokens.

        The kept tokens are fed as glanced inputs (their embeddings replace the copied source `copied`,
        as in GlatModel.decoder_inputs), the way GLAT saw reference words in training.
        """
        remask = remask_positions(decoder_mask, scores, iteration, total)
        kept = decoder_mask & ~remask
        inputs = torch.where(kept[..., None], self.model.embed(tokens).to(copied.dtype), copied)
        new_tokens, new_scores = self._decode(inputs, decoder_mask, encoder_states, encoder_mask)
        return torch.where(remask, new_tokens, tokens), torch.where(remask, new_scores, scores)

    def _check_target_lengths(self, target_lengths, input_ids, length_beam_size) -> torch.Tensor:
        if self.config.use_ctc:
            raise ValueError("target_lengths needs a length predictor to replace; CTC models decode without one.")
        if length_beam_size > 1:
            raise ValueError(
                f"target_lengths gives one length per source; it cannot be combined with length_beam_size "
                f"{length_beam_size} (noisy parallel decoding over predicted lengths)."
            )
        target_lengths = torch.as_tensor(target_lengths, device=input_ids.device)
        integral = not target_lengths.is_floating_point() and target_lengths.dtype != torch.bool
        if target_lengths.shape != (input_ids.shape[0],) or not integral:
            raise ValueError(
                f"target_lengths must be (batch,) = ({input_ids.shape[0]},) integers, got shape "
                f"{tuple(target_lengths.shape)} of {target_lengths.dtype}."
            )
        if not bool(((target_lengths >= 1) & (target_lengths <= self.config.max_target_length)).all()):
            raise ValueError(
                f"target_lengths must be from 1 to max_target_length ({self.config.max_target_length}), got "
                f"{target_lengths.tolist()}."
            )
        return target_lengths.long()

    def _check_reranker(self, reranker):
        if hasattr(reranker, "candidate_scores"):  # another engine's model: its config says its vocabulary
            vocab = reranker.config.vocab_size
        else:
            output_layer = reranker.get_output_embeddings()
            # out_features also exists on a dynamically quantized Linear, whose weight is a method.
            vocab = getattr(output_layer, "out_features", None) or output_layer.weight.shape[0]
        if vocab != self.config.vocab_size or reranker.config.pad_token_id != self.config.pad_token_id:
            raise ValueError(
                f"The reranker's vocabulary ({vocab} tokens, pad id {reranker.config.pad_token_id}) differs from "
                f"this model's ({self.config.vocab_size} tokens, pad id {self.config.pad_token_id}): it must share "
                "the tokenizer."
            )

    def reranker_scores(
        self, reranker, input_ids, attention_mask, candidates, candidates_per_source: int = 1
    ) -> torch.Tensor:
        """Mean log-probability of each candidate under `reranker` by teacher forcing: minus its own loss.

        `candidates` holds `candidates_per_source` adjacent rows for each row of `input_ids`: the
        reranker's encoder runs once per source and its states are repeated. A transformers seq2seq
        model is fed the candidates shifted right (`prepare_decoder_input_ids_from_labels`, what it
        does itself with `labels=`) without computing its own loss; the score is gathered from the
        logits minus their logsumexp, so no (N, T, V) log-softmax is written.

        A reranker of another engine scores by its own `candidate_scores(input_ids, attention_mask,
        candidates, candidates_per_source)`, the same mean log-probability (and has a `config` with
        vocab_size and pad_token_id): CTranslate2Translator, the AR model as users deploy it.
        """
        if hasattr(reranker, "candidate_scores"):
            scores = reranker.candidate_scores(input_ids, attention_mask, candidates, candidates_per_source)
            return scores.to(candidates.device)
        labels = candidates.masked_fill(candidates == self.config.pad_token_id, -100)
        repeated_mask = _repeat_rows(attention_mask, candidates_per_source)
        prepare = getattr(reranker, "prepare_decoder_input_ids_from_labels", None)
        if reranker.config.is_encoder_decoder and prepare is not None:
            encoder = reranker.get_encoder()
            encoder_states = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            logits = reranker(
                encoder_outputs=BaseModelOutput(last_hidden_state=_repeat_rows(encoder_states, candidates_per_source)),
                attention_mask=repeated_mask,
                decoder_input_ids=prepare(labels=labels),
                use_cache=False,
            ).logits
        else:
            repeated_ids = _repeat_rows(input_ids, candidates_per_source)
            logits = reranker(input_ids=repeated_ids, attention_mask=repeated_mask, labels=labels).logits
        logits = logits.float()
        log_probs = logits.gather(-1, labels.clamp(min=0)[..., None])[..., 0] - torch.logsumexp(logits, dim=-1)
        mask = labels != -100
        return (log_probs * mask).sum(1) / mask.sum(1).clamp(min=1)


__all__ = ["GlatPreTrainedModel", "GlatModel", "GlatForConditionalGeneration", "GlatSeq2SeqLMOutput"]
