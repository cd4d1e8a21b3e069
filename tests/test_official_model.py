"""The options that give the official GLAT code's model (github FLC777/GLAT), each checked against a hand
computation, and the config mechanism that loads a model saved before these options as it was trained."""

import json
import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_config, tiny_model

from glat_hf import GlatConfig, GlatForConditionalGeneration
from glat_hf.configuration_glat import CONFIG_VERSION, LEGACY_DEFAULTS
from glat_hf.modeling_glat import GlatSoftCopy

GOLDEN_CONFIG = Path(__file__).resolve().parent / "golden" / "config.json"
SOURCE = torch.tensor([[7, 8, 9, 10, 2], [11, 12, 2, 0, 0], [13, 14, 15, 2, 0]])
LABELS = torch.tensor([[20, 21, 22, 23, 2, -100], [24, 25, 26, 27, 28, 2], [29, 2, -100, -100, -100, -100]])
# A value other than the default for each field whose default the lead may change.
NON_DEFAULT = dict(
    predict_length_offset=False,
    scale_embedding=True,
    decoder_positions="every_layer",
    soft_copy_form="official",
    length_predictor="mean_pool",
    length_loss_weighting="non_glanced",
)
OFFICIAL = dict(
    scale_embedding=False,
    decoder_positions="every_layer",
    soft_copy_form="official",
    length_predictor="mean_pool",
    length_loss_weighting="non_glanced",
    predict_length_offset=True,
)


# ------------------------------------------------------------------------------------------------ soft copy
def _hand_soft_copy(weight, target_positions, keys, values, source_mask):
    """softmax_j((W pos_t) . key_j) over the real sources j, then sum_j p_tj value_j, with explicit loops."""
    target_len, source_len, dim = target_positions.shape[0], keys.shape[0], keys.shape[1]
    out = torch.zeros(target_len, dim)
    for t in range(target_len):
        query = [sum(float(weight[i, k]) * float(target_positions[t, k]) for k in range(dim)) for i in range(dim)]
        real = [j for j in range(source_len) if source_mask[j]]
        scores = {j: sum(query[i] * float(keys[j, i]) for i in range(dim)) for j in real}
        top = max(scores.values())
        total = sum(math.exp(score - top) for score in scores.values())
        for j in real:
            out[t] += math.exp(scores[j] - top) / total * values[j]
    return out


@pytest.mark.parametrize("source_mask", [[True, True, True], [True, True, False]])
def test_official_soft_copy_is_the_hand_computation(source_mask):
    torch.manual_seed(0)
    heads = dict(encoder_attention_heads=2, decoder_attention_heads=2)
    config = GlatConfig(vocab_size=20, d_model=4, soft_copy_form="official", **heads)
    soft_copy = GlatSoftCopy(config)
    assert soft_copy.query.bias is None and soft_copy.key is None  # one linear map W, without bias
    torch.nn.init.normal_(soft_copy.query.weight)
    target_positions, keys, values = torch.randn(2, 4), torch.randn(1, 3, 4), torch.randn(1, 3, 4)
    mask = torch.tensor([source_mask])
    got = soft_copy(target_positions, keys, values, mask, torch.tensor([2]))
    expected = _hand_soft_copy(soft_copy.query.weight.detach(), target_positions, keys[0], values[0], source_mask)
    torch.testing.assert_close(got[0], expected)
    # The same with matrices: no 1/sqrt(d), no distance prior.
    scores = (target_positions @ soft_copy.query.weight.T) @ keys[0].T
    scores = scores.masked_fill(~mask, float("-inf"))
    torch.testing.assert_close(got[0], torch.softmax(scores, -1) @ values[0])


@pytest.mark.parametrize("length_predictor, first_position", [("length_token", 1), ("mean_pool", 0)])
def test_official_soft_copy_in_the_model_reads_the_source_embeddings_and_its_encoder_positions(
    length_predictor, first_position
):
    model = tiny_model(soft_copy_form="official", scale_embedding=False, length_predictor=length_predictor)
    source = SOURCE[1:2, :3]  # 11 12 </s>: S = 3, T = 2
    embeddings = model.model.shared.weight[source[0]].detach()
    source_positions = model.model.encoder.embed_positions.weight[first_position : first_position + 3].detach()
    target_positions = model.model.decoder.embed_positions.weight[:2].detach()
    expected = _hand_soft_copy(
        model.model.soft_copy.query.weight.detach(),
        target_positions,
        embeddings + source_positions,
        embeddings,
        [True, True, True],
    )
    got = model.model.decoder_inputs(source, source.ne(0), torch.ones(1, 2, dtype=torch.bool))
    torch.testing.assert_close(got[0], expected)


def test_distance_prior_soft_copy_keeps_its_parameters():
    soft_copy = tiny_model().model.soft_copy
    assert soft_copy.query.bias is not None and soft_copy.key is not None


# ----------------------------------------------------------------------------------------- embeddings, init
def test_unscaled_embeddings_and_bert_initialisation():
    model = GlatForConditionalGeneration(tiny_config(vocab_size=300, d_model=64, scale_embedding=False))
    ids = torch.tensor([[7, 8, 9]])
    torch.testing.assert_close(model.model.embed(ids), model.model.shared.weight[ids])
    # N(0, init_std) for every linear and embedding weight (token embeddings included), 0 for biases.
    for name, parameter in model.named_parameters():
        if "layer_norm" in name:
            continue
        if name.endswith("bias"):
            assert not parameter.any(), name
        else:
            weight = (parameter[1:] if name == "model.shared.weight" else parameter).detach()  # the pad row is 0
            assert abs(float(weight.std()) - 0.02) < 0.003 and abs(float(weight.mean())) < 0.003, name
    assert not model.model.shared.weight[0].any()
    scaled = GlatForConditionalGeneration(tiny_config(vocab_size=300, d_model=64, scale_embedding=True))
    torch.testing.assert_close(scaled.model.embed(ids), scaled.model.shared.weight[ids] * 8.0)


# ------------------------------------------------------------------------------------------- decoder positions
def _additive(mask):
    return torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)[:, None, None, :]


def _hand_decoder(decoder, inputs, mask, encoder_states, encoder_mask, every_layer):
    """The decoder stack with the positions (and their dropout) before the first layer or before every layer."""
    positions = decoder.embed_positions.weight[: inputs.shape[1]]
    hidden = inputs
    for index, layer in enumerate(decoder.layers):
        if index == 0 or every_layer:
            hidden = torch.nn.functional.dropout(hidden + positions, decoder.dropout, decoder.training)
        hidden = layer(hidden, _additive(mask), encoder_states, _additive(encoder_mask))
    return decoder.layer_norm(hidden)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("decoder_positions", ["input", "every_layer"])
def test_decoder_positions_are_added_at_the_input_or_before_every_layer(decoder_positions, training):
    model = tiny_model(decoder_layers=3, decoder_positions=decoder_positions, dropout=0.3).train(training)
    inputs, encoder_states = torch.randn(2, 4, 32), torch.randn(2, 5, 32)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    encoder_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    decoder = model.model.decoder
    torch.manual_seed(1)
    got = decoder(inputs, mask, encoder_states, encoder_mask)
    for every_layer in (False, True):
        torch.manual_seed(1)  # the same dropout draws, in the same order
        expected = _hand_decoder(decoder, inputs, mask, encoder_states, encoder_mask, every_layer)
        close = torch.allclose(got, expected, atol=1e-5)
        assert close == (every_layer == (decoder_positions == "every_layer")), every_layer


# ---------------------------------------------------------------------------------------------- length predictor
def test_mean_pool_length_predictor_reads_the_mean_of_the_real_source_states():
    model = tiny_model(length_predictor="mean_pool", predict_length_offset=False)
    attention_mask = SOURCE.ne(0)
    states = model.model.encode(SOURCE, attention_mask).last_hidden_state
    assert states.shape[:2] == SOURCE.shape  # no <length> token
    means = torch.stack([states[i, attention_mask[i]].mean(0) for i in range(3)])
    torch.testing.assert_close(model.length_scores(states, attention_mask), model.length_head(means))
    out = model(SOURCE, labels=LABELS)
    assert out.encoder_attention_mask.shape == SOURCE.shape


@pytest.mark.parametrize("kwargs", [{}, {"length_beam_size": 3}, {"num_iterations": 2}])
def test_mean_pool_model_decodes_a_sentence_alone_as_in_a_padded_batch(kwargs):
    torch.manual_seed(4)
    model = tiny_model(**OFFICIAL)
    batched = model.generate(SOURCE, **kwargs)
    for i, source in enumerate(SOURCE):
        alone = model.generate(source[source.ne(0)][None], **kwargs)[0]
        assert torch.equal(alone[alone.ne(0)], batched[i][batched[i].ne(0)]), f"sentence {i}"


@pytest.mark.parametrize(
    "overrides, longest",
    [
        ({}, 63),
        ({"length_predictor": "mean_pool"}, 64),
        ({"use_ctc": True}, 32),
        ({"use_ctc": True, "upsample_ratio": 1}, 63),
        ({"use_ctc": True, "upsample_ratio": 1, "length_predictor": "mean_pool"}, 64),
    ],
)
def test_max_source_positions_is_the_longest_source_the_model_takes(overrides, longest):
    model = tiny_model(**overrides)  # max_position_embeddings 64
    assert model.config.max_source_positions == longest
    model.generate(torch.full((1, longest), 9))
    with pytest.raises(ValueError, match=rf"holds at most {longest} \(max_position_embeddings"):
        model.generate(torch.full((1, longest + 1), 9))


# ------------------------------------------------------------------------------------------------- length loss
def test_non_glanced_length_loss_weighting_scales_by_the_fraction_not_glanced():
    constant = tiny_model(length_loss_factor=0.1, dropout=0.0)
    weighted = tiny_model(length_loss_factor=0.1, dropout=0.0, length_loss_weighting="non_glanced")
    weighted.load_state_dict(constant.state_dict())
    glance = torch.zeros(LABELS.shape, dtype=torch.bool)
    glance[:, :2] = True  # 6 of the 13 target tokens
    out = weighted(SOURCE, labels=LABELS, glance_mask=glance)
    torch.testing.assert_close(out.loss, out.token_loss + 0.1 * (7 / 13) * out.length_loss)
    reference = constant(SOURCE, labels=LABELS, glance_mask=glance)
    torch.testing.assert_close(reference.loss, reference.token_loss + 0.1 * reference.length_loss)
    # Without glancing the fraction is 1: the two weightings are one loss.
    torch.testing.assert_close(weighted(SOURCE, labels=LABELS).loss, constant(SOURCE, labels=LABELS).loss)


def test_the_official_model_trains_with_the_glancing_trainers_one_call():
    model = tiny_model(**OFFICIAL).train()

    def glance_first_word(logits, labels, decoder_mask):
        mask = torch.zeros_like(decoder_mask)
        mask[:, 0] = True
        return mask, labels

    out = model(SOURCE, labels=LABELS, glance_fn=glance_first_word)
    torch.testing.assert_close(out.loss, out.token_loss + 0.1 * (10 / 13) * out.length_loss)
    out.loss.backward()
    assert model.model.soft_copy.query.weight.grad.abs().sum() > 0
    assert model.length_head.weight.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ oracle length
def test_generate_with_target_lengths_decodes_those_lengths():
    torch.manual_seed(6)
    for model in (tiny_model(), tiny_model(**OFFICIAL)):
        lengths = torch.tensor([3, 7, 1])
        with torch.no_grad():
            out = model(SOURCE, SOURCE.ne(0), decoder_lengths=lengths)
        expected = out.logits.argmax(-1).masked_fill(~out.decoder_mask, 0)
        got = model.generate(SOURCE, SOURCE.ne(0), target_lengths=lengths)
        assert got.shape == (3, 7) and torch.equal(got, expected)
        assert torch.equal(model.generate(SOURCE, target_lengths=lengths.tolist()), expected)
        refined = model.generate(SOURCE, target_lengths=lengths, num_iterations=3)
        assert torch.equal(refined.ne(0).sum(1), lengths)


@pytest.mark.parametrize(
    "overrides, kwargs, message",
    [
        ({}, dict(target_lengths=torch.tensor([3, 4, 5]), length_beam_size=2), "length_beam_size"),
        ({"use_ctc": True}, dict(target_lengths=torch.tensor([3, 4, 5])), "CTC"),
        ({}, dict(target_lengths=torch.tensor([3, 4])), r"target_lengths must be \(batch,\) = \(3,\)"),
        ({}, dict(target_lengths=torch.tensor([[3, 4, 5]])), "target_lengths must be"),
        ({}, dict(target_lengths=torch.tensor([3.0, 4.0, 5.0])), "integers"),
        ({}, dict(target_lengths=torch.tensor([0, 4, 5])), r"from 1 to max_target_length \(40\)"),
        ({}, dict(target_lengths=torch.tensor([3, 41, 5])), r"from 1 to max_target_length \(40\)"),
    ],
)
def test_bad_target_lengths_are_a_clear_error(overrides, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**overrides).generate(SOURCE, **kwargs)


# ------------------------------------------------------------------------------------ config fields, old configs
@pytest.mark.parametrize(
    "field, value",
    [
        ("decoder_positions", "every_step"),
        ("soft_copy_form", "bahdanau"),
        ("length_predictor", "cls"),
        ("length_loss_weighting", "glanced"),
        ("scale_embedding", "yes"),
        ("predict_length_offset", 1),
        ("glat_config_version", 0),
    ],
)
def test_bad_new_field_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"GlatConfig.{field}"):
        GlatConfig(**{field: value})


def test_new_configs_take_the_measured_defaults_and_keep_the_others():
    """Offset lengths and unscaled embeddings won by measurement (results/multi30k_ablations.json)."""
    config = GlatConfig()
    assert config.predict_length_offset is True and config.scale_embedding is False
    assert config.glat_config_version == CONFIG_VERSION
    changed = ("predict_length_offset", "scale_embedding")
    assert {field: getattr(config, field) for field in LEGACY_DEFAULTS if field not in changed} == {
        field: value for field, value in LEGACY_DEFAULTS.items() if field not in changed
    }


@pytest.mark.parametrize("field", sorted(NON_DEFAULT))
def test_a_new_config_round_trips_each_non_default_value(field, tmp_path):
    config = tiny_config(**{field: NON_DEFAULT[field]})
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["glat_config_version"] == CONFIG_VERSION and saved[field] == NON_DEFAULT[field]
    assert getattr(GlatConfig.from_pretrained(tmp_path), field) == NON_DEFAULT[field]
    # Every default value round-trips too, also where it differs from the legacy value.
    config = tiny_config()
    config.save_pretrained(tmp_path)
    assert getattr(GlatConfig.from_pretrained(tmp_path), field) == getattr(config, field)


def test_a_config_saved_before_the_new_fields_loads_with_their_legacy_values(tmp_path):
    old = json.loads(GOLDEN_CONFIG.read_text())
    assert "glat_config_version" not in old and "decoder_positions" not in old
    without = {key: value for key, value in old.items() if key != "predict_length_offset"}
    for saved in (old, without):
        kept = dict(saved)
        config = GlatConfig.from_dict(saved)
        assert saved == kept  # the caller's dict is not changed
        assert {field: getattr(config, field) for field in LEGACY_DEFAULTS} == LEGACY_DEFAULTS
        (tmp_path / "config.json").write_text(json.dumps(saved))
        loaded = GlatConfig.from_pretrained(tmp_path)
        assert {field: getattr(loaded, field) for field in LEGACY_DEFAULTS} == LEGACY_DEFAULTS
    # A field the old file holds keeps its saved value; saving again keeps the legacy values.
    config = GlatConfig.from_dict({**without, "predict_length_offset": True, "scale_embedding": False})
    assert config.predict_length_offset is True and config.scale_embedding is False
    assert config.decoder_positions == "input"
    config.save_pretrained(tmp_path / "again")
    again = GlatConfig.from_pretrained(tmp_path / "again")
    assert again.glat_config_version == CONFIG_VERSION
    assert {field: getattr(again, field) for field in LEGACY_DEFAULTS} == {
        field: getattr(config, field) for field in LEGACY_DEFAULTS
    }


def test_a_model_saved_before_the_new_fields_decodes_as_it_was_trained(tmp_path):
    legacy = tiny_model(**LEGACY_DEFAULTS)
    legacy.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    saved = json.loads(config_file.read_text())
    for field in ("glat_config_version", *LEGACY_DEFAULTS):
        saved.pop(field)
    config_file.write_text(json.dumps(saved))
    loaded = GlatForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert {field: getattr(loaded.config, field) for field in LEGACY_DEFAULTS} == LEGACY_DEFAULTS
    assert torch.equal(loaded.generate(SOURCE), legacy.generate(SOURCE))
    with torch.no_grad():
        torch.testing.assert_close(loaded(SOURCE, labels=LABELS).loss, legacy(SOURCE, labels=LABELS).loss)


def test_the_official_model_saves_and_loads(tmp_path):
    model = tiny_model(**OFFICIAL)
    model.save_pretrained(tmp_path)
    loaded = GlatForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert {field: getattr(loaded.config, field) for field in OFFICIAL} == OFFICIAL
    assert torch.equal(loaded.generate(SOURCE, length_beam_size=3), model.generate(SOURCE, length_beam_size=3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(SOURCE, labels=LABELS).loss, model(SOURCE, labels=LABELS).loss)
