"""GLAT model configuration: the single source of truth for sizes, special ids and loss settings."""

from __future__ import annotations

from transformers import PretrainedConfig

DECODER_INPUTS = ("soft_copy", "uniform_copy", "mask")
DECODER_POSITIONS = ("input", "every_layer")
SOFT_COPY_FORMS = ("distance_prior", "official")
LENGTH_PREDICTORS = ("length_token", "mean_pool")
LENGTH_LOSS_WEIGHTINGS = ("constant", "non_glanced")

# The format of a saved config. A saved dict without this key was written before the fields of
# LEGACY_DEFAULTS existed: GlatConfig.from_dict fills the absent ones with these values, the behaviour the
# model was trained with, while GlatConfig() takes the current defaults.
CONFIG_VERSION = 2
LEGACY_DEFAULTS = {
    "predict_length_offset": False,
    "scale_embedding": True,
    "decoder_positions": "input",
    "soft_copy_form": "distance_prior",
    "length_predictor": "length_token",
    "length_loss_weighting": "constant",
}

# The paper's model sizes (Qian et al. 2021, §4.1) and a small one that trains on two CPU cores.
PRESETS = {
    "wmt14": dict(d_model=512, encoder_layers=6, decoder_layers=6, attention_heads=8, ffn_dim=2048, dropout=0.1),
    "iwslt16": dict(d_model=256, encoder_layers=5, decoder_layers=5, attention_heads=4, ffn_dim=1024, dropout=0.1),
    "multi30k": dict(d_model=256, encoder_layers=3, decoder_layers=3, attention_heads=4, ffn_dim=1024, dropout=0.1),
}


def preset_sizes(name: str) -> dict:
    """The config fields of a preset (PRESETS), as GlatConfig and MarianConfig name them."""
    if name not in PRESETS:
        raise ValueError(f"Unknown GLAT preset {name!r}; choose one of {sorted(PRESETS)}.")
    sizes = dict(PRESETS[name])
    heads, ffn = sizes.pop("attention_heads"), sizes.pop("ffn_dim")
    return dict(
        sizes, encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=ffn, decoder_ffn_dim=ffn
    )


class GlatConfig(PretrainedConfig):
    r"""Configuration of a [`GlatForConditionalGeneration`].

    The special ids default to the order written by [`glat_hf.train_tokenizer`]:
    `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4, `<length>`=5, `<blank>`=6.

    Args:
        vocab_size: joint source/target vocabulary size.
        d_model, encoder_layers, decoder_layers, encoder_attention_heads, decoder_attention_heads,
        encoder_ffn_dim, decoder_ffn_dim: Transformer sizes.
        dropout, attention_dropout, activation_dropout: dropout probabilities.
        activation_function: a key of `transformers.activations.ACT2FN`.
        max_position_embeddings: the longest sequence either side can hold. With the `<length>` token
            (length_predictor "length_token") a source may hold `max_position_embeddings - 1` tokens; a CTC
            decoder runs `upsample_ratio` x source length positions, which must also fit. `max_source_positions`
            is the resulting longest source.
        normalize_before: pre-norm (True) or post-norm (False, the paper's base setting) layers.
        scale_embedding: multiply token embeddings by sqrt(d_model) (Vaswani et al. 2017). False is the
            official GLAT code's behaviour: it initialises every weight, token embeddings included, from
            N(0, init_std) as BERT does, and a scale of sqrt(d_model) on top would make token embeddings
            (std 0.02 x sqrt(512) = 0.45 at d_model 512) swamp the positions (std 0.02). False by default: on
            distilled Multi30k it gave GLAT and NAT-base alike +1.7 BLEU at 525 steps
            (results/multi30k_ablations.json); configs saved before this default keep True.
        init_std: standard deviation of the normal initialisation of every linear and embedding weight (biases
            and padding embedding 0, layer norms 1 and 0): BERT's initialisation, which the official code uses.
        decoder_positions: where the decoder adds its learned positional embedding: "input" (once, to the
            decoder input H, as the encoder does) or "every_layer" (to the hidden states before every decoder
            layer, each time with dropout, as the official code does with soft copy). Without a causal mask
            the decoder has no other cue to where a position is, and every_layer restates it in each layer.
        max_target_length: the number of length classes of the length predictor: targets of 1 to
            `max_target_length` tokens (counting `</s>`). Longer training targets are clipped to the
            last class for the length loss.
        predict_length_offset: the length predictor classifies the offset target length - source length
            (the official GLAT command line's `--pred-length-offset`) instead of the target length itself.
            Its scores are still read as scores of target lengths 1..max_target_length. An absolute
            predictor must learn the source length before it predicts more than the corpus' most frequent
            length (trained on Multi30k it collapses to one or two lengths); an offset one starts from "as
            long as the source".
        length_predictor: what the length head reads: "length_token" (a `<length>` token prepended to the
            source; its encoder state, as in Mask-Predict) or "mean_pool" (the mean of the encoder states
            over the real source positions, as the official code does; no token is prepended, so the
            source keeps every position).
        length_loss_factor: weight of the length cross-entropy in the loss (the official GLAT command line uses
            0.05; the paper recipes in training/recipes set it).
        length_loss_weighting: "constant" (loss = token loss + length_loss_factor x length loss) or
            "non_glanced" (the official code: the length term is weighted length_loss_factor x the fraction of
            the batch's target tokens that were not glanced, so that it keeps its share of the token loss,
            which averages over the non-glanced tokens only; without glancing the fraction is 1).
        label_smoothing: label smoothing of the token loss (0.1 in the paper).
        decoder_input: how the decoder input H is copied from the source: "soft_copy" (learned
            position queries attending over the source embeddings, the official GLAT default),
            "uniform_copy" (Gu et al. 2018) or "mask" (all `<mask>` embeddings, paper Table 7).
        soft_copy_form: the scores of soft copy. "official" (the official code): the score of source j for
            target t is (W pos_t) . (emb_j + pos_j), W one linear map without bias, with no 1/sqrt(d) and no
            prior. "distance_prior": biased query and key projections, 1/sqrt(d_model), plus the fixed prior
            -|j - t(S-1)/(T-1)| that centres target t on its uniform-copy source, so that an untrained model
            starts as uniform copy. Either way the value is the source token embedding.
        use_ctc: train with CTC over `upsample_ratio` x source length decoder positions (no length
            prediction); decoding merges repeats and drops `<blank>`.
        upsample_ratio: decoder positions per source token for CTC (2 in the paper).
        tie_word_embeddings: share the token embeddings of encoder, decoder and output projection.
            Glancing takes target embeddings from the output embedding matrix (§3.1), which this ties
            to the decoder's input embeddings.
        glat_config_version: the format of the config, saved with it. `GlatConfig.from_dict` (what
            `from_pretrained` uses) gives a saved dict without it the values of `LEGACY_DEFAULTS` for the
            fields it lacks, so that a model saved before those fields existed loads and decodes as it was
            trained, whatever the current defaults are.
    """

    model_type = "glat"
    attribute_map = {"num_attention_heads": "encoder_attention_heads", "hidden_size": "d_model"}

    def __init__(
        self,
        vocab_size: int = 8000,
        d_model: int = 256,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        encoder_attention_heads: int = 4,
        decoder_attention_heads: int = 4,
        encoder_ffn_dim: int = 1024,
        decoder_ffn_dim: int = 1024,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation_function: str = "relu",
        max_position_embeddings: int = 256,
        normalize_before: bool = False,
        scale_embedding: bool = False,
        init_std: float = 0.02,
        max_target_length: int = 128,
        predict_length_offset: bool = True,
        length_predictor: str = "length_token",
        length_loss_factor: float = 0.1,
        length_loss_weighting: str = "constant",
        label_smoothing: float = 0.1,
        decoder_input: str = "soft_copy",
        soft_copy_form: str = "distance_prior",
        decoder_positions: str = "input",
        use_ctc: bool = False,
        upsample_ratio: int = 2,
        pad_token_id: int = 0,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        unk_token_id: int = 3,
        mask_token_id: int = 4,
        length_token_id: int = 5,
        blank_token_id: int = 6,
        decoder_start_token_id: int | None = None,
        tie_word_embeddings: bool = True,
        is_encoder_decoder: bool = True,
        glat_config_version: int = CONFIG_VERSION,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.encoder_layers = encoder_layers
        self.decoder_layers = decoder_layers
        self.encoder_attention_heads = encoder_attention_heads
        self.decoder_attention_heads = decoder_attention_heads
        self.encoder_ffn_dim = encoder_ffn_dim
        self.decoder_ffn_dim = decoder_ffn_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation_function = activation_function
        self.max_position_embeddings = max_position_embeddings
        self.normalize_before = normalize_before
        self.scale_embedding = scale_embedding
        self.init_std = init_std
        self.max_target_length = max_target_length
        self.predict_length_offset = predict_length_offset
        self.length_predictor = length_predictor
        self.length_loss_factor = length_loss_factor
        self.length_loss_weighting = length_loss_weighting
        self.label_smoothing = label_smoothing
        self.decoder_input = decoder_input
        self.soft_copy_form = soft_copy_form
        self.decoder_positions = decoder_positions
        self.use_ctc = use_ctc
        self.upsample_ratio = upsample_ratio
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.unk_token_id = unk_token_id
        self.mask_token_id = mask_token_id
        self.length_token_id = length_token_id
        self.blank_token_id = blank_token_id
        # No decoder start token is used (decoding is parallel); Seq2SeqTrainer still reads the field.
        self.decoder_start_token_id = bos_token_id if decoder_start_token_id is None else decoder_start_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self.glat_config_version = glat_config_version
        super().__init__(is_encoder_decoder=is_encoder_decoder, **kwargs)
        self.validate()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """`PretrainedConfig.from_dict`, where a dict without `glat_config_version` (a config saved before the
        fields of LEGACY_DEFAULTS existed) takes their legacy values for the fields it lacks."""
        if "glat_config_version" not in config_dict:
            config_dict = {**LEGACY_DEFAULTS, **config_dict, "glat_config_version": CONFIG_VERSION}
        return super().from_dict(dict(config_dict), **kwargs)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> GlatConfig:
        """A config with the paper's sizes: "wmt14" (512, 6+6), "iwslt16" (256, 5+5) or "multi30k" (CPU-sized)."""
        return cls(**{**preset_sizes(name), **overrides})

    @property
    def max_source_positions(self) -> int:
        """The longest source, in tokens, this model can translate: `max_position_embeddings`, minus one
        position for the `<length>` token (length_predictor "length_token"), and for CTC at most
        `max_position_embeddings // upsample_ratio` (the decoder's upsampled positions must fit)."""
        limit = self.max_position_embeddings - (1 if self.length_predictor == "length_token" else 0)
        if self.use_ctc:
            limit = min(limit, self.max_position_embeddings // self.upsample_ratio)
        return limit

    @property
    def special_token_ids(self) -> dict[str, int]:
        names = ("pad", "bos", "eos", "unk", "mask", "length", "blank")
        return {f"{name}_token_id": getattr(self, f"{name}_token_id") for name in names}

    def validate(self, **kwargs):
        """Fail at construction (and at save), naming the field, rather than deep inside torch at the first forward."""

        def positive(field):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GlatConfig.{field} must be a positive integer, got {value!r}.")

        sizes = ("d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "decoder_ffn_dim")
        sizes += ("encoder_attention_heads", "decoder_attention_heads", "vocab_size", "max_position_embeddings")
        for field in sizes + ("max_target_length", "upsample_ratio", "glat_config_version"):
            positive(field)
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ValueError(
                    f"GlatConfig.d_model ({self.d_model}) must be divisible by {side}_attention_heads ({heads})."
                )
        for field in ("scale_embedding", "predict_length_offset", "use_ctc", "normalize_before"):
            value = getattr(self, field)
            if not isinstance(value, bool):
                raise ValueError(f"GlatConfig.{field} must be True or False, got {value!r}.")
        for field in ("dropout", "attention_dropout", "activation_dropout", "label_smoothing"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"GlatConfig.{field} must be in [0, 1), got {value!r}.")
        if self.length_loss_factor < 0:
            raise ValueError(f"GlatConfig.length_loss_factor must be >= 0, got {self.length_loss_factor!r}.")
        for field, choices in (
            ("decoder_input", DECODER_INPUTS),
            ("decoder_positions", DECODER_POSITIONS),
            ("soft_copy_form", SOFT_COPY_FORMS),
            ("length_predictor", LENGTH_PREDICTORS),
            ("length_loss_weighting", LENGTH_LOSS_WEIGHTINGS),
        ):
            value = getattr(self, field)
            if value not in choices:
                raise ValueError(f"GlatConfig.{field} must be one of {choices}, got {value!r}.")
        from transformers.activations import ACT2FN

        if self.activation_function not in ACT2FN:
            raise ValueError(
                f"GlatConfig.activation_function {self.activation_function!r} is not one of {sorted(ACT2FN)}."
            )
        for field, value in self.special_token_ids.items():
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"GlatConfig.{field} ({value!r}) must be an id inside the vocabulary [0, {self.vocab_size})."
                )
        if len(set(self.special_token_ids.values())) != len(self.special_token_ids):
            raise ValueError(f"GlatConfig special token ids must be distinct, got {self.special_token_ids}.")
        if self.max_target_length > self.max_position_embeddings:
            raise ValueError(
                f"GlatConfig.max_target_length ({self.max_target_length}) cannot exceed "
                f"max_position_embeddings ({self.max_position_embeddings}): the decoder has no position for longer "
                "targets."
            )


def read_glat_config(folder) -> GlatConfig:
    """The GlatConfig of a saved model folder, with an error that names what is wrong with the folder."""
    from pathlib import Path

    from transformers import AutoConfig

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: not a saved model folder")
    config = AutoConfig.from_pretrained(folder)
    if not isinstance(config, GlatConfig):
        raise ValueError(f"{folder} holds a {config.model_type!r} model, not a GLAT model")
    return config
