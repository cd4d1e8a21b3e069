import pytest
from transformers import AutoConfig

import glat_hf  # noqa: F401  (registers "glat")
from glat_hf import GlatConfig


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(d_model=100, encoder_attention_heads=3), "d_model"),
        (dict(decoder_attention_heads=5), "decoder_attention_heads"),
        (dict(decoder_input="copy"), "decoder_input"),
        (dict(mask_token_id=9000), "mask_token_id"),
        (dict(blank_token_id=-1), "blank_token_id"),
        (dict(length_token_id=2), "special token ids must be distinct"),
        (dict(max_target_length=300, max_position_embeddings=256), "max_target_length"),
        (dict(dropout=1.5), "dropout"),
        (dict(encoder_layers=0), "encoder_layers"),
        (dict(activation_function="swishy"), "activation_function"),
        (dict(length_loss_factor=-1.0), "length_loss_factor"),
        (dict(upsample_ratio=0), "upsample_ratio"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        GlatConfig(**overrides)


def test_presets_have_the_paper_sizes():
    wmt = GlatConfig.from_preset("wmt14", vocab_size=32000)
    assert (wmt.d_model, wmt.encoder_layers, wmt.decoder_layers, wmt.encoder_attention_heads, wmt.encoder_ffn_dim) == (
        512,
        6,
        6,
        8,
        2048,
    )
    iwslt = GlatConfig.from_preset("iwslt16")
    assert (iwslt.d_model, iwslt.encoder_layers, iwslt.decoder_layers) == (256, 5, 5)
    assert GlatConfig.from_preset("multi30k", dropout=0.3).dropout == 0.3
    with pytest.raises(ValueError, match="Unknown GLAT preset"):
        GlatConfig.from_preset("wmt16")


def test_config_round_trip_and_auto_config(tmp_path):
    config = GlatConfig(vocab_size=123, decoder_input="uniform_copy", use_ctc=True, max_target_length=77)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, GlatConfig)
    assert (loaded.vocab_size, loaded.decoder_input, loaded.use_ctc, loaded.max_target_length) == (
        123,
        "uniform_copy",
        True,
        77,
    )
    assert isinstance(AutoConfig.for_model("glat"), GlatConfig)
