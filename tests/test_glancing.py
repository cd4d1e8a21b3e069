"""Glancing sampling (paper §3.1-3.2, Tables 3-7): distances, counts, position selection, schedules."""

import pytest
import torch

from glat_hf.glancing import (
    glance_count,
    glance_mask,
    glancing_ratio,
    hamming_distance,
    lcs_distance,
    levenshtein_distance,
    select_glance_positions,
    uniform_mask_positions,
)


def _random_batch(generator, batch_size=16, max_length=12, vocab=5, allow_empty=True):
    """Random token rows with right padding (-1 as pad, so a pad never equals a token by accident)."""
    low = 0 if allow_empty else 1
    lengths = torch.randint(low, max_length + 1, (batch_size,), generator=generator)
    mask = torch.arange(max_length) < lengths[:, None]
    tokens = torch.randint(0, vocab, (batch_size, max_length), generator=generator).masked_fill(~mask, -1)
    return tokens, mask


# ---------------------------------------------------------------- distances


def test_hamming_distance_counts_only_real_positions():
    predictions = torch.tensor([[1, 2, 3, 9], [4, 4, 4, 4]])
    references = torch.tensor([[1, 0, 3, 7], [4, 5, 6, 7]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert hamming_distance(predictions, references, mask).tolist() == [1, 3]


def _python_edit_distance(a, b, substitution_cost):
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        new = [i]
        for j, y in enumerate(b, start=1):
            new.append(min(row[j] + 1, new[j - 1] + 1, row[j - 1] + (0 if x == y else substitution_cost)))
        row = new
    return row[-1]


def _python_lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, start=1):
        for j, y in enumerate(b, start=1):
            table[i][j] = table[i - 1][j - 1] + 1 if x == y else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def test_levenshtein_and_lcs_match_plain_python_dp():
    generator = torch.Generator().manual_seed(1)
    checked = 0
    for _ in range(13):  # 13 batches x 16 = 208 random pairs
        predictions, pred_mask = _random_batch(generator, max_length=9, vocab=3)
        references, ref_mask = _random_batch(generator, max_length=7, vocab=3)
        lev = levenshtein_distance(predictions, references, pred_mask, ref_mask)
        lcs = lcs_distance(predictions, references, pred_mask, ref_mask)
        for b in range(predictions.shape[0]):
            a = predictions[b][pred_mask[b]].tolist()
            r = references[b][ref_mask[b]].tolist()
            assert lev[b].item() == _python_edit_distance(a, r, 1), (a, r)
            assert lcs[b].item() == len(a) + len(r) - 2 * _python_lcs(a, r), (a, r)
            checked += 1
    assert checked == 208


def test_levenshtein_hand_made_and_non_prefix_masks():
    # kitten -> sitting = 3; a non-prefix mask takes the real tokens in order.
    kitten = torch.tensor([[10, 8, 19, 19, 4, 13, 0]])
    sitting = torch.tensor([[18, 8, 19, 19, 8, 13, 6]])
    kitten_mask = torch.tensor([[True] * 6 + [False]])
    full = torch.ones(1, 7, dtype=torch.bool)
    assert levenshtein_distance(kitten, sitting, kitten_mask, full).item() == 3
    scattered = torch.tensor([[5, 0, 6, 0, 7]])
    scattered_mask = torch.tensor([[True, False, True, False, True]])
    packed = torch.tensor([[5, 6, 7, 0, 0]])
    packed_mask = torch.tensor([[True, True, True, False, False]])
    assert levenshtein_distance(scattered, packed, scattered_mask, packed_mask).item() == 0
    assert lcs_distance(torch.tensor([[1, 2]]), torch.tensor([[2, 1]]), full[:, :2], full[:, :2]).item() == 2


# ---------------------------------------------------------------- counts


def test_adaptive_count_is_floor_of_ratio_times_distance():
    distance = torch.tensor([0, 1, 3, 4, 10, 7])
    lengths = torch.tensor([5, 5, 5, 5, 20, 7])
    # 0.5*[0,1,3,4,10,7] = [0, 0.5, 1.5, 2, 5, 3.5] -> floor
    assert glance_count(distance, lengths, 0.5).tolist() == [0, 0, 1, 2, 5, 3]
    # 0.7 * 10 is 6.99999... in floating point: the tolerance keeps it at 7.
    assert glance_count(torch.tensor([10]), torch.tensor([10]), 0.7).tolist() == [7]
    assert glance_count(torch.tensor([10]), torch.tensor([10]), torch.tensor(0.7, dtype=torch.float32)).tolist() == [7]


def test_count_clamped_to_target_length_and_zero():
    distance = torch.tensor([8, 3, 5])
    lengths = torch.tensor([4, 3, 0])
    assert glance_count(distance, lengths, 1.5).tolist() == [4, 3, 0]
    assert glance_count(distance, lengths, -1.0).tolist() == [0, 0, 0]


def test_count_with_ratio_per_sentence():
    distance = torch.tensor([4, 4, 4])
    lengths = torch.tensor([10, 10, 10])
    ratio = torch.tensor([0.25, 0.5, 1.0])
    assert glance_count(distance, lengths, ratio).tolist() == [1, 2, 4]


def test_fixed_and_decreasing_rules_use_target_length():
    distance = torch.tensor([0, 9])
    lengths = torch.tensor([10, 9])
    assert glance_count(distance, lengths, 0.3, rule="fixed").tolist() == [3, 2]
    start = glancing_ratio(0, 100, "linear", 0.5, 0.1)
    end = glancing_ratio(100, 100, "linear", 0.5, 0.1)
    assert glance_count(None, lengths, start, rule="decreasing").tolist() == [5, 4]
    assert glance_count(None, lengths, end, rule="decreasing").tolist() == [1, 0]
    with pytest.raises(ValueError, match="rule"):
        glance_count(distance, lengths, 0.5, rule="bogus")


ROUNDINGS = ["floor", "round", "stochastic"]


def test_each_rounding_on_a_hand_case():
    # λ = 0.5: x = λ·d = [0, 0.5, 1.5, 2, 5, 3.5, 6.5]
    distance = torch.tensor([0, 1, 3, 4, 10, 7, 13])
    lengths = torch.tensor([5, 5, 5, 5, 20, 7, 14])
    assert glance_count(distance, lengths, 0.5, rounding="floor").tolist() == [0, 0, 1, 2, 5, 3, 6]
    assert glance_count(distance, lengths, 0.5, rounding="round").tolist() == [0, 1, 2, 2, 5, 4, 7]  # halves up
    draws = torch.stack([glance_count(distance, lengths, 0.5, rounding="stochastic") for _ in range(200)])
    floor = torch.tensor([0, 0, 1, 2, 5, 3, 6])
    assert ((draws == floor) | (draws == floor + 1)).all()
    assert (draws[:, [0, 3, 4]] == floor[[0, 3, 4]]).all()  # an integer product is never rounded up
    assert set(draws[:, 1].tolist()) == {0, 1}  # 0.5 goes either way
    # A 14-token sentence late in training (λ = 0.3): 6 wrong tokens give λ·d = 1.8.
    assert glance_count(torch.tensor([6]), torch.tensor([14]), 0.3, rounding="floor").tolist() == [1]
    assert glance_count(torch.tensor([6]), torch.tensor([14]), 0.3, rounding="round").tolist() == [2]


def test_rounding_applies_to_every_count_rule():
    lengths = torch.tensor([14, 14])
    distance = torch.tensor([0, 3])
    for rule in ("fixed", "decreasing"):  # λ·T = 0.35 x 14 = 4.9
        assert glance_count(distance, lengths, 0.35, rule=rule, rounding="floor").tolist() == [4, 4]
        assert glance_count(distance, lengths, 0.35, rule=rule, rounding="round").tolist() == [5, 5]
    generator = torch.Generator().manual_seed(0)
    lengths = torch.full((20000,), 14)
    fixed = glance_count(None, lengths, 0.35, rule="fixed", rounding="stochastic", generator=generator)
    assert fixed.float().mean().item() == pytest.approx(4.9, abs=0.02)


def test_round_keeps_exact_halves_and_integers_despite_float_error():
    # 0.3 x 5 is 1.4999999999999998 in float64; 0.7 x 10 is 6.99999988 with λ in float32.
    assert glance_count(torch.tensor([5]), torch.tensor([9]), 0.3, rounding="round").tolist() == [2]
    float32 = torch.tensor(0.7, dtype=torch.float32)
    assert glance_count(torch.tensor([10]), torch.tensor([10]), float32, rounding="round").tolist() == [7]
    assert glance_count(torch.tensor([10, 9]), torch.tensor([10, 9]), 1.0, rounding="round").tolist() == [10, 9]


@pytest.mark.parametrize("ratio", [0.3, 0.45, 0.5, 0.77])
def test_stochastic_rounding_is_ratio_times_distance_in_expectation(ratio):
    generator = torch.Generator().manual_seed(5)
    distance = torch.arange(20000) % 15  # d = 0..14
    lengths = torch.full_like(distance, 14)
    counts = glance_count(distance, lengths, ratio, rounding="stochastic", generator=generator)
    assert counts.float().mean().item() == pytest.approx(ratio * distance.float().mean().item(), abs=0.01)
    floor = glance_count(distance, lengths, ratio, rounding="floor")
    assert ((counts == floor) | (counts == floor + 1)).all()
    for d in (1, 6, 13):  # also per distance, not only on the whole
        expected = ratio * d
        assert counts[distance == d].float().mean().item() == pytest.approx(expected, abs=0.04)
    # floor glances fewer tokens than λ·d on average: by the mean fractional part, here 0.23 to 0.45 tokens.
    assert floor.float().mean().item() < ratio * distance.float().mean().item() - 0.2


def test_stochastic_rounding_is_reproducible_and_per_sentence_ratios_work():
    distance = torch.tensor([4, 4, 4, 9])
    lengths = torch.tensor([10, 10, 10, 10])
    ratio = torch.tensor([0.25, 0.5, 1.0, 0.3])
    first = glance_count(distance, lengths, ratio, rounding="stochastic", generator=torch.Generator().manual_seed(1))
    again = glance_count(distance, lengths, ratio, rounding="stochastic", generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert first[:3].tolist() == [1, 2, 4] and first[3].item() in (2, 3)


def test_bad_rounding_is_a_clear_error():
    with pytest.raises(ValueError, match="rounding"):
        glance_count(torch.tensor([1]), torch.tensor([1]), 0.5, rounding="ceil")


# ---------------------------------------------------------------- selection


STRATEGIES = ["random", "p_ref", "1-p_ref", "most_certain", "most_uncertain"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_selection_picks_exactly_count_and_never_padding(strategy):
    generator = torch.Generator().manual_seed(2)
    for _ in range(50):
        _, mask = _random_batch(generator, batch_size=8, max_length=10)
        lengths = mask.sum(1)
        counts = (torch.rand(8, generator=generator) * (lengths + 1)).long()
        probs = torch.rand(8, 10, generator=generator)
        probs[0, :3] = 1.0  # zero weight for 1-p_ref must not push selection onto padding
        probs[1, :] = 0.0  # zero weight for p_ref, likewise
        chosen = select_glance_positions(counts, mask, strategy, probs, generator)
        assert chosen.dtype == torch.bool
        assert not (chosen & ~mask).any()
        assert torch.equal(chosen.sum(1), counts)


def test_zero_weight_positions_still_rank_before_padding():
    # Left padding: a stable sort of tied -inf scores would reach the padding first.
    mask = torch.tensor([[False, True, True], [False, True, True]])
    probs = torch.tensor([[0.5, 1.0, 1.0], [0.5, 0.0, 0.0]])
    counts = torch.tensor([2, 2])
    expected = [[False, True, True], [False, True, True]]
    assert select_glance_positions(counts, mask, "1-p_ref", probs).tolist() == expected
    assert select_glance_positions(counts, mask, "p_ref", probs).tolist() == expected


def test_selection_clamps_counts_beyond_row_length():
    mask = torch.tensor([[True, True, False], [False, False, False]])
    chosen = select_glance_positions(torch.tensor([5, 2]), mask)
    assert chosen.tolist() == [[True, True, False], [False, False, False]]


def test_p_ref_prefers_probable_positions_and_one_minus_p_ref_the_others():
    generator = torch.Generator().manual_seed(3)
    probs = torch.tensor([[0.95, 0.9, 0.05, 0.1, 0.5, 0.02]]).expand(4000, -1)
    mask = torch.ones_like(probs, dtype=torch.bool)
    counts = torch.full((4000,), 2)
    by_p = select_glance_positions(counts, mask, "p_ref", probs, generator).float().mean(0)
    by_one_minus_p = select_glance_positions(counts, mask, "1-p_ref", probs, generator).float().mean(0)
    high, low = [0, 1], [2, 3, 5]
    assert by_p[high].min() > 0.6 and by_p[low].max() < 0.15
    assert by_one_minus_p[low].min() > 0.45 and by_one_minus_p[high].max() < 0.1
    assert (by_p[high] > by_one_minus_p[high]).all() and (by_p[low] < by_one_minus_p[low]).all()
    # The first pick of p_ref is proportional to p: position 0 (0.95 of a 2.52 total) drawn first
    # about 38% of the time; with one pick per row that is its selection frequency.
    first = (
        select_glance_positions(torch.ones(4000, dtype=torch.long), mask, "p_ref", probs, generator).float().mean(0)
    )
    assert abs(first[0].item() - 0.95 / probs[0].sum().item()) < 0.03


def test_most_certain_and_most_uncertain_are_deterministic_extremes():
    probs = torch.tensor([[0.1, 0.8, 0.3, 0.9, 0.5, 0.7], [0.6, 0.2, 0.4, 0.05, 0.99, 0.0]])
    mask = torch.tensor([[True] * 6, [True] * 5 + [False]])
    counts = torch.tensor([2, 3])
    certain = select_glance_positions(counts, mask, "most_certain", probs)
    uncertain = select_glance_positions(counts, mask, "most_uncertain", probs)
    assert certain.nonzero().tolist() == [[0, 1], [0, 3], [1, 0], [1, 2], [1, 4]]
    # Row 1's lowest p (0.0) is padding and must be skipped.
    assert uncertain.nonzero().tolist() == [[0, 0], [0, 2], [1, 1], [1, 2], [1, 3]]


def test_selection_errors_are_clear():
    mask = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="strategy"):
        select_glance_positions(torch.tensor([1]), mask, "nearest")
    with pytest.raises(ValueError, match="reference_probs"):
        select_glance_positions(torch.tensor([1]), mask, "p_ref")


def test_random_selection_is_reproducible_and_roughly_uniform():
    mask = torch.ones(3000, 5, dtype=torch.bool)
    counts = torch.full((3000,), 2)
    first = select_glance_positions(counts, mask, generator=torch.Generator().manual_seed(7))
    again = select_glance_positions(counts, mask, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)
    assert torch.allclose(first.float().mean(0), torch.full((5,), 0.4), atol=0.04)


# ---------------------------------------------------------------- Mask-Predict and schedules


def test_uniform_mask_positions_observes_zero_to_length_minus_one():
    generator = torch.Generator().manual_seed(4)
    seen = set()
    for _ in range(50):
        _, mask = _random_batch(generator, batch_size=16, max_length=6)
        observed = uniform_mask_positions(mask, generator)
        lengths = mask.sum(1)
        counts = observed.sum(1)
        assert not (observed & ~mask).any()
        assert (counts <= (lengths - 1).clamp_min(0)).all()
        seen.update((lengths[lengths == 6] - counts[lengths == 6]).tolist())
    assert seen == {1, 2, 3, 4, 5, 6}  # n, the predicted count, is drawn from all of 1..T


def test_glancing_ratio_schedules():
    assert glancing_ratio(0, 1000, "linear", 0.5, 0.3) == pytest.approx(0.5)
    assert glancing_ratio(500, 1000, "linear", 0.5, 0.3) == pytest.approx(0.4)
    assert glancing_ratio(1000, 1000, "linear", 0.5, 0.3) == pytest.approx(0.3)
    assert glancing_ratio(5000, 1000, "linear", 0.5, 0.3) == pytest.approx(0.3)
    assert glancing_ratio(700, 1000, "constant", 0.5, 0.3) == pytest.approx(0.5)
    # "decay": held until anneal_start, then linear to `end` at total_steps
    assert glancing_ratio(800, 1000, "decay", 0.5, 0.0, anneal_start=800) == pytest.approx(0.5)
    assert glancing_ratio(900, 1000, "decay", 0.5, 0.0, anneal_start=800) == pytest.approx(0.25)
    assert glancing_ratio(1000, 1000, "decay", 0.5, 0.0, anneal_start=800) == pytest.approx(0.0)
    assert glancing_ratio(900, 1000, "linear", 0.5, 0.0, anneal_start=800) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="schedule"):
        glancing_ratio(0, 10, "cosine")


# ---------------------------------------------------------------- the trainer's entry point


@pytest.mark.parametrize("distance", ["hamming", "levenshtein"])
def test_glance_mask_combines_distance_count_and_selection(distance):
    references = torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 10]])
    predictions = torch.tensor([[5, 9, 9, 8, 3, 3], [6, 7, 8, 9, 10, 11]])
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    generator = torch.Generator().manual_seed(0)
    glanced, counts = glance_mask(predictions, references, mask, 1.0, distance=distance, generator=generator)
    # Hamming: 2 and 6 differences; Levenshtein: 2 and 2 (shifted by one: one deletion, one insertion).
    assert counts.tolist() == ([2, 6] if distance == "hamming" else [2, 2])
    assert torch.equal(glanced.sum(1), counts) and not (glanced & ~mask).any()
    probs = torch.rand(2, 6)
    glanced, counts = glance_mask(
        predictions, references, mask, 0.5, rule="fixed", strategy="most_certain", reference_probs=probs
    )
    assert counts.tolist() == [2, 3]
    _, counts = glance_mask(predictions, references, mask, 0.5, rule="fixed", rounding="round")
    assert counts.tolist() == [2, 3]  # 0.5 x [4, 6]
    _, counts = glance_mask(predictions, references, mask, 0.25, rule="fixed", rounding="round")
    assert counts.tolist() == [1, 2]  # 0.25 x [4, 6] = [1, 1.5]
    with pytest.raises(ValueError, match="distance"):
        glance_mask(predictions, references, mask, 0.5, distance="jaccard")


def test_lcs_and_levenshtein_handle_empty_and_single_tokens():
    a = torch.tensor([[1, 0], [1, 0], [0, 0], [2, 3]])
    a_mask = torch.tensor([[True, False], [True, False], [False, False], [True, True]])
    b = torch.tensor([[1, 0], [2, 0], [0, 0], [0, 0]])
    b_mask = torch.tensor([[True, False], [True, False], [False, False], [False, False]])
    assert levenshtein_distance(a, b, a_mask, b_mask).tolist() == [0, 1, 0, 2]
    assert lcs_distance(a, b, a_mask, b_mask).tolist() == [0, 2, 0, 2]


def test_python_reference_helpers_agree_on_a_known_case():
    # Guards the reference implementation used above.
    assert _python_edit_distance("kitten", "sitting", 1) == 3
    assert _python_lcs("ABCBDAB", "BDCABA") == 4
