"""CTC collapse and the best CTC alignment (batched Viterbi) against brute force."""

import itertools

import torch

from glat_hf.ctc import best_ctc_alignment, ctc_collapse, merge_repeats

BLANK, PAD = 0, -1


def _python_collapse(tokens, blank=BLANK):
    out, previous = [], None
    for token in tokens:
        if token != previous and token != blank:
            out.append(token)
        previous = token
    return out


# ---------------------------------------------------------------- collapse


def test_collapse_hand_made_cases():
    a, b = 3, 4
    ids = torch.tensor(
        [
            [a, a, BLANK, a, 9, 9],  # "a a _ a" -> "a a"; the 9s are padding
            [a, a, b, b, a, BLANK],  # repeats merge -> "a b a"
            [BLANK, BLANK, BLANK, BLANK, BLANK, BLANK],  # all blanks -> empty
            [BLANK, a, BLANK, BLANK, a, a],  # blanks between repeats keep both -> "a a"
        ]
    )
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6, [True] * 6, [True] * 6])
    collapsed = ctc_collapse(ids, BLANK, PAD, mask)
    assert collapsed.tolist() == [[a, a, PAD], [a, b, a], [PAD, PAD, PAD], [a, a, PAD]]


def test_collapse_padding_does_not_merge_or_count():
    ids = torch.tensor([[5, 5, 5], [5, 6, 6]])
    mask = torch.tensor([[True, False, False], [True, True, False]])
    assert ctc_collapse(ids, BLANK, PAD, mask).tolist() == [[5, PAD], [5, 6]]
    # Without a mask everything is real.
    assert ctc_collapse(ids, BLANK, PAD).tolist() == [[5, PAD], [5, 6]]


def test_merge_repeats_merges_only_consecutive_real_repeats_and_keeps_blanks():
    a, b = 3, 4
    ids = torch.tensor([[a, a, b, a, a, 9], [a, BLANK, BLANK, a, 9, 9], [b, b, b, b, b, b]])
    mask = torch.tensor([[True] * 5 + [False], [True] * 4 + [False] * 2, [True] * 6])
    merged, merged_mask = merge_repeats(ids, mask, PAD)
    assert merged.tolist() == [[a, b, a], [a, BLANK, a], [b, PAD, PAD]]  # no token is special: blanks merge too
    assert merged_mask.tolist() == [[True] * 3, [True] * 3, [True, False, False]]
    for row, row_mask, out in zip(ids.tolist(), mask.tolist(), merged.tolist()):
        real = [token for token, keep in zip(row, row_mask) if keep]
        assert out[: len(_python_collapse(real, blank=None))] == _python_collapse(real, blank=None)


def test_collapse_all_empty_keeps_one_column():
    ids = torch.full((2, 4), BLANK)
    assert ctc_collapse(ids, BLANK, PAD).tolist() == [[PAD], [PAD]]
    assert ctc_collapse(torch.zeros(2, 0, dtype=torch.long), BLANK, PAD).shape == (2, 1)


def test_collapse_matches_python_on_random_rows():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 3, (200, 8), generator=generator)
    lengths = torch.randint(0, 9, (200,), generator=generator)
    mask = torch.arange(8) < lengths[:, None]
    collapsed = ctc_collapse(ids, BLANK, PAD, mask)
    for row, length, out in zip(ids.tolist(), lengths.tolist(), collapsed.tolist()):
        expected = _python_collapse(row[:length])
        assert out == expected + [PAD] * (len(out) - len(expected))


# ---------------------------------------------------------------- best alignment


def _brute_force_best(log_probs, target):
    """Max over all label sequences whose collapse is the target of the summed log-probs (or None)."""
    num_frames, vocab = log_probs.shape
    best = None
    for path in itertools.product(range(vocab), repeat=num_frames):
        if _python_collapse(path) == target:
            score = sum(log_probs[t, token] for t, token in enumerate(path))
            best = score if best is None else max(best, score)
    return best


def _path_score(log_probs, path):
    return sum(log_probs[t, token] for t, token in enumerate(path))


def _minimum_frames(target):
    return len(target) + sum(1 for x, y in zip(target, target[1:]) if x == y)


def test_viterbi_equals_brute_force_on_tiny_lattices():
    generator = torch.Generator().manual_seed(5)
    checked_rows = 0
    impossible_rows = 0
    for _ in range(12):
        batch_size, max_frames, vocab, max_tokens = 4, 6, 3 + int(torch.randint(0, 2, (1,), generator=generator)), 3
        log_probs = torch.randn(batch_size, max_frames, vocab, generator=generator).mul(2).log_softmax(-1)
        input_lengths = torch.randint(1, max_frames + 1, (batch_size,), generator=generator)
        target_lengths = torch.randint(0, max_tokens + 1, (batch_size,), generator=generator)
        targets = torch.randint(1, vocab, (batch_size, max_tokens), generator=generator)
        targets[0, :2] = 1  # a repeated label, which needs a blank between its copies
        targets = torch.where(torch.arange(max_tokens) < target_lengths[:, None], targets, -100)

        path = best_ctc_alignment(log_probs, targets, input_lengths, target_lengths, BLANK)
        assert path.shape == (batch_size, max_frames)
        for b in range(batch_size):
            frames, target = input_lengths[b].item(), targets[b, : target_lengths[b]].tolist()
            lp = log_probs[b, :frames].double()
            row = path[b].tolist()
            assert row[frames:] == [BLANK] * (max_frames - frames)
            best = _brute_force_best(lp, target)
            if frames >= _minimum_frames(target):
                assert best is not None
                assert _python_collapse(row[:frames]) == target
                assert abs(_path_score(lp, row[:frames]).item() - best.item()) < 1e-4
                checked_rows += 1
            else:
                assert best is None
                assert row[:frames] == lp.argmax(-1).tolist()  # documented fallback
                impossible_rows += 1
    assert checked_rows >= 25 and impossible_rows >= 1


def test_viterbi_on_a_batch_with_different_lengths_and_half_precision():
    generator = torch.Generator().manual_seed(6)
    log_probs = torch.randn(3, 6, 4, generator=generator).log_softmax(-1)
    targets = torch.tensor([[2, 2, 3], [1, 0, 0], [3, 1, 0]])
    target_lengths = torch.tensor([3, 1, 2])
    input_lengths = torch.tensor([6, 2, 4])
    path = best_ctc_alignment(log_probs.half(), targets, input_lengths, target_lengths, BLANK)
    for b in range(3):
        frames = input_lengths[b].item()
        target = targets[b, : target_lengths[b]].tolist()
        assert _python_collapse(path[b, :frames].tolist()) == target
        best = _brute_force_best(log_probs.half().double()[b, :frames], target)
        assert (
            abs(_path_score(log_probs.half().double()[b, :frames], path[b, :frames].tolist()).item() - best.item())
            < 1e-3
        )
    assert path[1, 2:].eq(BLANK).all() and path[2, 4:].eq(BLANK).all()


def test_viterbi_follows_a_peaked_distribution_and_handles_edge_rows():
    # Frames that strongly prefer "_ a a _ b" align exactly there.
    peaked = torch.full((1, 5, 3), -20.0)
    for t, token in enumerate([BLANK, 1, 1, BLANK, 2]):
        peaked[0, t, token] = 0.0
    path = best_ctc_alignment(peaked, torch.tensor([[1, 2]]), torch.tensor([5]), torch.tensor([2]), BLANK)
    assert path.tolist() == [[BLANK, 1, 1, BLANK, 2]]
    # An empty target aligns to all blanks; a zero-length input yields nothing but blanks.
    log_probs = torch.randn(2, 4, 3).log_softmax(-1)
    path = best_ctc_alignment(
        log_probs, torch.zeros(2, 0, dtype=torch.long), torch.tensor([4, 0]), torch.tensor([0, 0]), BLANK
    )
    assert path.tolist() == [[BLANK] * 4, [BLANK] * 4]
    # -inf log-probs (a vocabulary entry masked out) give no NaN and no crash.
    log_probs[:, :, 2] = float("-inf")
    path = best_ctc_alignment(log_probs, torch.tensor([[1], [1]]), torch.tensor([4, 3]), torch.tensor([1, 1]), BLANK)
    assert _python_collapse(path[0].tolist()) == [1] and _python_collapse(path[1, :3].tolist()) == [1]
