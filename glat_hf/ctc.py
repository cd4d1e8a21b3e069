"""CTC pieces of GLAT+CTC (Graves et al. 2006; Qian et al. 2021, §4 "GLAT with CTC").

- `ctc_collapse`: the CTC output function B (merge repeats, then drop blanks), used at decoding.
- `merge_repeats`: the first half of B alone, for the other decoders: the de-duplication of consecutive repeated
  tokens that non-autoregressive decoders can apply to their output (Lee et al. 2018), `generate(remove_repeats=True)`.
- `best_ctc_alignment`: the most probable path through the CTC lattice of a reference (Viterbi).
  Glancing compares the first-pass prediction with this path and glances its tokens, since a CTC
  decoder has more positions than the reference has tokens.

Pure torch, vectorised over the batch; both follow the device of their inputs.
"""

from __future__ import annotations

import torch


def _shift_right(values: torch.Tensor, by: int, fill) -> torch.Tensor:
    """values[:, j - by] at column j (filled with `fill` where j < by); keeps the shape, even when by > width."""
    filler = torch.full((values.shape[0], min(by, values.shape[1])), fill, dtype=values.dtype, device=values.device)
    return torch.cat([filler, values[:, : values.shape[1] - filler.shape[1]]], dim=1)


def _repeats(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """True where a real token equals the real token before it."""
    return _shift_right(mask, 1, False) & (ids == _shift_right(ids, 1, 0))


def _left_pack(ids: torch.Tensor, keep: torch.Tensor, pad_id: int) -> torch.Tensor:
    """The kept tokens of each row, left-packed and right-padded with `pad_id`, (B, L'), L' the longest kept
    row and at least 1 column."""
    width = max(int(keep.sum(dim=1).max()) if ids.numel() else 0, 1)
    # Kept tokens go to their rank among kept ones; the others to a spill column cut off at the end.
    slot = torch.where(keep, keep.long().cumsum(dim=1) - 1, width)
    packed = torch.full((ids.shape[0], width + 1), pad_id, dtype=ids.dtype, device=ids.device)
    packed.scatter_(1, slot, torch.where(keep, ids, pad_id))
    return packed[:, :width]


def ctc_collapse(ids: torch.Tensor, blank_id: int, pad_id: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Merge repeated tokens, then drop blanks (Graves et al. 2006, the map B), (B, L') long.

    "a a _ a" -> "a a": a blank between two equal tokens keeps both. `mask` (B, T) bool marks the
    real positions (a prefix of each row); positions beyond are ignored. The result is left-packed
    and right-padded with `pad_id`; L' is the longest kept row, and at least 1 column.
    """
    if mask is None:
        mask = torch.ones_like(ids, dtype=torch.bool)
    return _left_pack(ids, mask & (ids != blank_id) & ~_repeats(ids, mask), pad_id)


def merge_repeats(ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive repeats merged, "a a b a a" -> "a b a", on the real positions `mask` (B, T) of each row:
    (ids, mask) of the merged rows, left-packed as by ctc_collapse."""
    keep = mask & ~_repeats(ids, mask)
    merged = _left_pack(ids, keep, pad_id)
    positions = torch.arange(merged.shape[1], device=ids.device)
    return merged, positions[None, :] < keep.sum(dim=1, keepdim=True)


def best_ctc_alignment(
    log_probs: torch.Tensor,
    targets: torch.Tensor,
    input_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank_id: int,
) -> torch.Tensor:
    """The most probable CTC path of each reference, per-frame token ids (B, T) long (Viterbi).

    log_probs (B, T, V) are log-softmax scores; targets (B, U) may hold anything (even -100) beyond
    `target_lengths`. The lattice is the reference with blanks around every token (2U+1 states);
    from state s a path stays, moves to s+1, or skips to s+2 when s+2 is a token that differs from
    the token at s (a blank between equal tokens is compulsory). It must start in one of the first
    two states and end in one of the last two. The forward max-sum runs over time, vectorised over
    batch and states, in float32 (float64 stays float64); a batched backtrack reads the path.

    Frames at or beyond `input_lengths` are `blank_id`. The path collapses (`ctc_collapse`) to the
    reference whenever input_length >= U + the number of adjacent repeated tokens.
    Impossible rows (input too short, or every valid path has log-prob -inf) do not raise, so
    training goes on: they get the frame-wise argmax of `log_probs` instead.
    """
    batch_size, num_frames, _ = log_probs.shape
    device = log_probs.device
    scores = log_probs.detach().to(torch.promote_types(log_probs.dtype, torch.float32))
    input_lengths = input_lengths.to(device).long().clamp(0, num_frames)
    target_lengths = target_lengths.to(device).long()
    num_tokens = targets.shape[1]
    num_states = 2 * num_tokens + 1

    # Extended label sequence: blank, y1, blank, y2, ..., blank (padding tokens become blanks).
    real_token = torch.arange(num_tokens, device=device) < target_lengths[:, None]
    tokens = torch.where(real_token, targets.to(device).long(), blank_id)
    states = torch.full((batch_size, num_states), blank_id, dtype=torch.long, device=device)
    states[:, 1::2] = tokens
    valid_state = torch.arange(num_states, device=device) < (2 * target_lengths + 1)[:, None]
    previous_two = _shift_right(states, 2, blank_id)
    can_skip = (torch.arange(num_states, device=device) % 2 == 1) & (states != previous_two)

    emission = scores.gather(2, states[:, None, :].expand(-1, num_frames, -1))  # (B, T, S)
    minus_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=device)
    starts = torch.arange(num_states, device=device) < 2
    best = torch.where(starts & valid_state, emission[:, 0], minus_inf)
    backpointers = torch.zeros(batch_size, num_frames, num_states, dtype=torch.uint8, device=device)
    for t in range(1, num_frames):
        from_before = _shift_right(best, 1, float("-inf"))
        from_two_before = torch.where(can_skip, _shift_right(best, 2, float("-inf")), minus_inf)
        candidates = torch.stack([best, from_before, from_two_before], dim=-1)
        step_best, step_from = candidates.max(dim=-1)  # step_from: how many states back (0, 1, 2)
        updated = torch.where(valid_state, step_best + emission[:, t], minus_inf)
        running = (t < input_lengths)[:, None]  # shorter inputs keep their final scores
        best = torch.where(running, updated, best)
        backpointers[:, t] = step_from.to(torch.uint8)

    # End in the last blank (state 2U) or the last token (state 2U-1).
    last = 2 * target_lengths
    end_scores = torch.stack([best.gather(1, last[:, None]), best.gather(1, (last - 1).clamp_min(0)[:, None])], dim=-1)
    end_scores = end_scores.squeeze(1)
    end_scores[:, 1] = torch.where(target_lengths > 0, end_scores[:, 1], minus_inf)
    end_best, end_choice = end_scores.max(dim=-1)
    state = last - end_choice

    path = torch.full((batch_size, num_frames), blank_id, dtype=torch.long, device=device)
    for t in range(num_frames - 1, -1, -1):
        active = t < input_lengths
        path[:, t] = torch.where(active, states.gather(1, state[:, None]).squeeze(1), blank_id)
        step_from = backpointers[:, t].gather(1, state[:, None]).squeeze(1).long()
        state = torch.where(active, state - step_from, state)

    impossible = torch.isneginf(end_best) & (input_lengths > 0)
    frames = torch.arange(num_frames, device=device) < input_lengths[:, None]
    fallback = torch.where(frames, scores.argmax(dim=-1), blank_id)
    return torch.where(impossible[:, None], fallback, path)
