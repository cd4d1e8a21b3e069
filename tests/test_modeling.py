import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from helpers import tiny_marian, tiny_model

from glat_hf import GlatForConditionalGeneration
from glat_hf.ctc import ctc_collapse
from glat_hf.modeling_glat import LENGTH_PRIOR_WEIGHT

SOURCE = torch.tensor([[7, 8, 9, 10, 2], [11, 12, 2, 0, 0], [13, 14, 15, 2, 0]])
LABELS = torch.tensor([[20, 21, 22, 23, 2, -100], [24, 25, 26, 27, 28, 2], [29, 2, -100, -100, -100, -100]])


@pytest.mark.parametrize("decoder_input", ["soft_copy", "uniform_copy", "mask"])
def test_forward_shapes_and_loss(decoder_input):
    model = tiny_model(decoder_input=decoder_input).train()
    out = model(SOURCE, labels=LABELS)
    assert out.logits.shape == (3, 6, 60)
    assert out.length_logits.shape == (3, 41)
    assert out.decoder_mask.sum(1).tolist() == [5, 6, 2]
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.model.shared.weight.grad.abs().sum() > 0


def test_loss_is_the_smoothed_nll_of_the_positions_not_glanced_plus_length_loss():
    model = tiny_model(label_smoothing=0.1, length_loss_factor=0.1, dropout=0.0)
    glance = torch.zeros(LABELS.shape, dtype=torch.bool)
    glance[:, :2] = True  # glance the first two words of every sentence
    out = model(SOURCE, labels=LABELS, glance_mask=glance)
    kept = (LABELS != -100) & ~glance
    expected_tokens = F.cross_entropy(out.logits[kept], LABELS[kept], label_smoothing=0.1)
    expected_length = F.cross_entropy(out.length_logits, torch.tensor([5, 6, 2]))
    torch.testing.assert_close(out.token_loss, expected_tokens)
    torch.testing.assert_close(out.loss, expected_tokens + 0.1 * expected_length)


def test_a_position_given_a_wrong_word_is_trained_to_correct_it():
    """Only positions whose input is their own reference word leave the loss: one fed another word (pass 1's
    wrong prediction, `glance_own_predictions`) is trained like a copied one."""
    model = tiny_model(label_smoothing=0.1, dropout=0.0)
    glance = LABELS != -100  # every position gets a word
    words = LABELS.masked_fill(~glance, 0)
    assert model(SOURCE, labels=LABELS, glance_mask=glance, glance_ids=words).token_loss == 0
    words[0, 2] = 5  # a wrong word at one position
    out = model(SOURCE, labels=LABELS, glance_mask=glance, glance_ids=words)
    expected = F.cross_entropy(out.logits[0, 2:3], LABELS[0, 2:3], label_smoothing=0.1)
    torch.testing.assert_close(out.token_loss, expected)


def test_glanced_positions_take_the_reference_embeddings():
    """Pass 2 input (eq. 5): glanced positions hold the target word embedding, the rest the copied source."""
    model = tiny_model()
    mask = model.target_mask(LABELS)
    glance = torch.zeros_like(mask)
    glance[0, 1] = glance[1, 3] = True
    copied = model.model.decoder_inputs(SOURCE, SOURCE.ne(0), mask)
    glanced = model.model.decoder_inputs(SOURCE, SOURCE.ne(0), mask, glance, LABELS)
    torch.testing.assert_close(glanced[0, 1], model.model.embed(LABELS[0, 1]))
    torch.testing.assert_close(glanced[1, 3], model.model.embed(LABELS[1, 3]))
    torch.testing.assert_close(glanced[~glance], copied[~glance])


def _peaked_length_head(model, peak_class):
    with torch.no_grad():
        model.length_head.weight.zero_()
        model.length_head.bias.fill_(-10.0)
        model.length_head.bias[peak_class] = 10.0
    return model


@pytest.mark.parametrize("length_predictor, longest_source", [("length_token", 63), ("mean_pool", 64)])
def test_an_offset_length_predictor_reads_lengths_relative_to_the_source(length_predictor, longest_source):
    # A head that always scores offset 0 highest predicts "as long as the source"; an absolute head
    # with the same peak predicts one length for every sentence.
    source_lengths = SOURCE.ne(0).sum(1)  # 5, 3, 4
    offset = tiny_model(predict_length_offset=True, length_predictor=length_predictor)
    assert offset.config.max_source_positions == longest_source
    _peaked_length_head(offset, offset.config.max_source_positions)  # the class of offset 0
    assert offset.length_head.out_features == 41 + longest_source
    out = offset(SOURCE, labels=LABELS)
    assert out.length_logits.shape == (3, 41)
    assert out.length_logits.argmax(-1).tolist() == source_lengths.tolist()
    torch.testing.assert_close(out.length_loss, F.cross_entropy(out.length_logits, torch.tensor([5, 6, 2])))
    assert offset.generate(SOURCE).ne(0).sum(1).tolist() == source_lengths.tolist()
    absolute = _peaked_length_head(tiny_model(predict_length_offset=False, length_predictor=length_predictor), 7)
    assert absolute.generate(SOURCE).ne(0).sum(1).tolist() == [7, 7, 7]


def test_second_pass_can_reuse_the_encoder():
    model = tiny_model()
    first = model(SOURCE, labels=LABELS)
    second = model(SOURCE, labels=LABELS, encoder_outputs=first.encoder_outputs)
    torch.testing.assert_close(first.logits, second.logits)


def test_ctc_loss_matches_torch_ctc():
    model = tiny_model(use_ctc=True, upsample_ratio=2)
    out = model(SOURCE, labels=LABELS)
    assert out.length_logits is None
    assert out.logits.shape[1] == 2 * SOURCE.shape[1]
    log_probs = torch.log_softmax(out.logits, -1).transpose(0, 1)
    expected = F.ctc_loss(log_probs, LABELS.clamp(min=0), torch.tensor([10, 6, 8]), torch.tensor([5, 6, 2]), blank=6)
    torch.testing.assert_close(out.loss, expected)


def test_generate_returns_pad_padded_ids_and_honours_max_length():
    model = tiny_model()
    out = model.generate(SOURCE, SOURCE.ne(0), max_length=3)
    assert out.dim() == 2 and out.shape[0] == 3 and out.shape[1] <= 3
    assert (out.ne(0).sum(1) >= 1).all()
    # Seq2SeqTrainer passes these; they are accepted and ignored.
    assert model.generate(SOURCE, labels=LABELS, synced_gpus=False).shape[0] == 3


@pytest.mark.parametrize("length_beam_size", [1, 5])
def test_remove_repeats_merges_the_repeats_of_the_translation_generate_chose(length_beam_size, tmp_path):
    """The candidate is chosen on what was decoded, then its consecutive repeats merge; a random model repeats."""
    torch.manual_seed(0)
    model = tiny_model()
    plain = model.generate(SOURCE, length_beam_size=length_beam_size)
    merged = model.generate(SOURCE, length_beam_size=length_beam_size, remove_repeats=True)
    expected = [[token for token, _ in itertools.groupby(row[row.ne(0)].tolist())] for row in plain]
    assert sum(map(len, expected)) < int(plain.ne(0).sum())  # there were repeats to merge
    assert [row[row.ne(0)].tolist() for row in merged] == expected
    assert merged.shape[1] == max(map(len, expected))
    model.generation_config.remove_repeats = True  # the default of a saved model's generate
    model.save_pretrained(tmp_path)
    assert torch.equal(
        GlatForConditionalGeneration.from_pretrained(tmp_path).generate(SOURCE, length_beam_size=length_beam_size),
        merged,
    )
    with pytest.raises(ValueError, match="remove_repeats"):
        model.generate(SOURCE, remove_repeats="yes")


def _single_length_candidate(model, source, length):
    with torch.no_grad():
        out = model(source[None], decoder_lengths=torch.tensor([length]))
    log_probs = torch.log_softmax(out.logits[0], -1)
    scores, tokens = log_probs.max(-1)
    return tokens, scores.mean()


@pytest.mark.parametrize("length_prior_weight", [None, 0.0, 2.0])
def test_npd_keeps_the_candidate_that_decoding_each_length_separately_would_pick(length_prior_weight):
    """Self rerank: the best mean token log-probability plus w x log P(length | source) over the allowed lengths
    (None: the generation config's w, LENGTH_PRIOR_WEIGHT for a new model)."""
    torch.manual_seed(1)
    model = tiny_model()
    m, max_length = 5, model.config.max_target_length
    weight = LENGTH_PRIOR_WEIGHT if length_prior_weight is None else length_prior_weight
    assert model.generation_config.length_prior_weight == LENGTH_PRIOR_WEIGHT
    chosen = model.generate(SOURCE, length_beam_size=m, length_prior_weight=length_prior_weight)
    for i, source in enumerate(SOURCE):
        source = source[source.ne(0)]
        with torch.no_grad():
            length_logits = model(source[None], decoder_lengths=torch.tensor([1])).length_logits[0]
        length_log_probs = torch.log_softmax(length_logits[1 : max_length + 1], -1)  # lengths 1..max_length
        lengths = length_log_probs.topk(m).indices + 1
        candidates = [_single_length_candidate(model, source, int(length)) for length in lengths]
        scores = [
            float(mean) + weight * float(length_log_probs[length - 1])
            for (_, mean), length in zip(candidates, lengths)
        ]
        best_tokens = candidates[max(range(m), key=scores.__getitem__)][0]
        got = chosen[i][chosen[i].ne(0)]
        assert torch.equal(got, best_tokens), f"sentence {i}"


def test_a_heavy_length_prior_keeps_the_most_probable_length_and_an_old_generation_config_has_none(tmp_path):
    torch.manual_seed(1)
    model = tiny_model()
    unweighted = model.generate(SOURCE, length_beam_size=5, length_prior_weight=0)
    heavy = model.generate(SOURCE, length_beam_size=5, length_prior_weight=1e4)
    assert torch.equal(heavy, model.generate(SOURCE))  # the top-1 length: one pass
    assert not torch.equal(heavy, unweighted)  # the seed gives sentences whose best mean is at another length
    # A generation config saved before the key existed ranks by the mean alone, as when it was saved.
    model.generation_config.length_prior_weight = 1e4
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved.pop("length_prior_weight") == 1e4
    (tmp_path / "generation_config.json").write_text(json.dumps(saved))
    assert torch.equal(
        GlatForConditionalGeneration.from_pretrained(tmp_path).generate(SOURCE, length_beam_size=5), unweighted
    )


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf"), True, "0.1"])
def test_bad_length_prior_weight(weight):
    with pytest.raises(ValueError, match="length_prior_weight"):
        tiny_model().generate(SOURCE, length_beam_size=3, length_prior_weight=weight)


def test_npd_with_reranker_picks_the_reranker_best_and_scores_equal_its_loss():
    torch.manual_seed(2)
    model, reranker = tiny_model(), tiny_marian()
    m = 4
    chosen = model.generate(SOURCE, length_beam_size=m, reranker=reranker)
    for i, source in enumerate(SOURCE):
        source = source[source.ne(0)][None]
        length_logits = model(source, decoder_lengths=torch.tensor([1])).length_logits[0]
        candidates = [
            _single_length_candidate(model, source[0], int(n) + 1)[0] for n in length_logits[1:].topk(m).indices
        ]
        with torch.no_grad():
            losses = [float(reranker(input_ids=source, labels=c[None]).loss) for c in candidates]
        scores = model.reranker_scores(
            reranker,
            source.repeat(m, 1),
            source.ne(0).repeat(m, 1),
            torch.nn.utils.rnn.pad_sequence(candidates, batch_first=True),
        )
        torch.testing.assert_close(scores, -torch.tensor(losses), rtol=1e-4, atol=1e-5)
        best = candidates[min(range(m), key=losses.__getitem__)]
        got = chosen[i][chosen[i].ne(0)]
        assert torch.equal(got, best), f"sentence {i}"


@pytest.mark.parametrize("kwargs", [{}, {"length_beam_size": 3}, {"num_iterations": 3}])
def test_a_sentence_decodes_alone_as_it_does_in_a_padded_batch(kwargs):
    # Alone, nothing is padded and attention runs without masks (the CPU fast path); in the batch it is masked.
    torch.manual_seed(4)
    model = tiny_model()
    batched = model.generate(SOURCE, **kwargs)
    for i, source in enumerate(SOURCE):
        alone = model.generate(source[source.ne(0)][None], **kwargs)[0]
        assert torch.equal(alone[alone.ne(0)], batched[i][batched[i].ne(0)]), f"sentence {i}"


@pytest.mark.parametrize("kwargs", [{}, {"length_beam_size": 3}])
def test_a_bfloat16_model_decodes_like_the_float32_one(kwargs):
    torch.manual_seed(5)
    model = tiny_model()
    full = model.generate(SOURCE, **kwargs)
    half = model.to(torch.bfloat16).generate(SOURCE, **kwargs)
    assert half.shape[0] == SOURCE.shape[0] and half.dtype == torch.long
    assert ((half >= 0) & (half < model.config.vocab_size)).all()
    # bfloat16 rounding may flip a near tie, not the lengths the length predictor picks on a clear margin
    assert (half.ne(0).sum(1) - full.ne(0).sum(1)).abs().max() <= 1


def test_mask_predict_refinement_changes_only_low_confidence_tokens_and_keeps_lengths():
    torch.manual_seed(3)
    model = tiny_model()
    once = model.generate(SOURCE)
    refined = model.generate(SOURCE, num_iterations=4)
    assert torch.equal(once.ne(0).sum(1), refined.ne(0).sum(1))


def test_ctc_generate_is_the_collapse_of_the_frame_argmax():
    torch.manual_seed(4)
    model = tiny_model(use_ctc=True)
    source = SOURCE.clone()
    source[0, 1] = 6  # the untrained model copies its source frame by frame: this makes it emit <blank>
    with torch.no_grad():
        frames = model(source)
    raw = frames.logits.argmax(-1).masked_fill(~frames.decoder_mask, 0)
    assert (raw == 6).any() and (raw[:, 1:] == raw[:, :-1]).any(), "the check needs blanks and repeats"
    expected = ctc_collapse(raw, blank_id=6, pad_id=0, mask=frames.decoder_mask)
    out = model.generate(source)
    assert torch.equal(out, expected[:, : out.shape[1]]) and not expected[:, out.shape[1] :].ne(0).any()
    assert not (out == 6).any()
    with pytest.raises(ValueError, match="CTC"):
        model.generate(SOURCE, length_beam_size=2)


def test_input_longer_than_the_positions_is_a_clear_error():
    model = tiny_model()
    too_long = torch.full((1, 64), 9)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(too_long)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(too_long, labels=LABELS[:1])


@pytest.mark.parametrize("beam", [0, -1, 41, 2.5])
def test_bad_length_beam_size(beam):
    with pytest.raises(ValueError, match="length_beam_size"):
        tiny_model().generate(SOURCE, length_beam_size=beam)


def test_reranker_with_another_vocabulary_is_rejected():
    with pytest.raises(ValueError, match="vocabulary"):
        tiny_model().generate(SOURCE, length_beam_size=2, reranker=tiny_marian(vocab_size=61))


def test_labels_padded_inside_a_sentence_are_rejected():
    bad = torch.tensor([[20, -100, 22, 2]])
    with pytest.raises(ValueError, match="right-padded"):
        tiny_model()(SOURCE[:1], labels=bad)


def test_tied_output_embeddings():
    model = tiny_model()
    assert model.lm_head.weight is model.model.shared.weight
    untied = GlatForConditionalGeneration(
        model.config.__class__(**{**model.config.to_dict(), "tie_word_embeddings": False})
    )
    assert untied.lm_head.weight is not untied.model.shared.weight
