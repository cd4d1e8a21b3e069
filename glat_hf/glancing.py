"""Glancing sampling (Qian et al. 2021, §3.1-3.2): how many reference tokens to show the decoder, and which.

Pure tensor functions, vectorised over the batch, with no model in sight, so the trainer composes them
and the tests check each one alone.

Conventions: `predictions` and `references` are LongTensors (B, T); `mask` is a bool (B, T) that marks
the real (non-padding) target positions. Padding is never counted and never glanced. Every function
follows the device of its inputs. A `generator` (torch.Generator) makes the sampling reproducible; it
may live on any device (the random numbers are drawn there and moved to the inputs' device).
"""

from __future__ import annotations

import torch

COUNT_RULES = ("adaptive", "fixed", "decreasing")
SELECTION_STRATEGIES = ("random", "p_ref", "1-p_ref", "most_certain", "most_uncertain")
DISTANCES = ("hamming", "levenshtein")
RATIO_SCHEDULES = ("constant", "linear", "decay")
ROUNDINGS = ("floor", "round", "stochastic")

# Added before flooring (also in "round"), so that a product that is an integer or a half in exact
# arithmetic (0.7 x 10, 0.3 x 5) is not pushed below it by floating-point error (0.7 is 0.69999999 in
# float32).
_FLOOR_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------------------------
# Distances d(Y, Ŷ) (paper eq. 2; Hamming in the main results, Levenshtein in Table 6)
# ----------------------------------------------------------------------------------------------


def hamming_distance(predictions: torch.Tensor, references: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Number of real positions where the prediction differs from the reference, (B,) long (paper eq. 2)."""
    return ((predictions != references) & mask).sum(dim=1)


def _left_pack(tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the front (order kept); returns (tokens, lengths)."""
    order = torch.sort((~mask).to(torch.uint8), dim=1, stable=True).indices
    return tokens.gather(1, order), mask.sum(dim=1)


def _edit_distance(
    first: torch.Tensor,
    second: torch.Tensor,
    first_mask: torch.Tensor,
    second_mask: torch.Tensor,
    substitution_cost: int,
) -> torch.Tensor:
    """Batched edit distance between masked sequences; insertions and deletions cost 1.

    The DP table D[i, j] (first i tokens of `first` vs first j of `second`) is filled one row at a
    time, vectorised over the batch and the columns. Within a row the insertion chain
    D[i, j] = min(D[i, j-1] + 1, ...) is a running minimum: D[i, j] = j + cummin_k<=j(C[k] - k), with
    C the row's values before insertions. Each sentence reads its answer at row len(first), column
    len(second); the rows and columns beyond are computed on padding and never read.
    """
    first, first_lengths = _left_pack(first, first_mask)
    second, second_lengths = _left_pack(second, second_mask)
    batch_size, num_columns = second.shape
    columns = torch.arange(num_columns + 1, device=second.device)
    row = columns.expand(batch_size, -1).clone()  # D[0, j] = j
    distance = row.gather(1, second_lengths[:, None]).squeeze(1)  # sentences with an empty `first`
    for i in range(first.shape[1]):
        mismatch = (first[:, i : i + 1] != second).long()  # (B, M)
        deletion = row[:, 1:] + 1
        substitution = row[:, :-1] + substitution_cost * mismatch
        before_insertions = torch.cat([row[:, :1] + 1, torch.minimum(deletion, substitution)], dim=1)
        row = (before_insertions - columns).cummin(dim=1).values + columns
        finished = first_lengths == i + 1
        distance = torch.where(finished, row.gather(1, second_lengths[:, None]).squeeze(1), distance)
    return distance


def levenshtein_distance(
    predictions: torch.Tensor, references: torch.Tensor, pred_mask: torch.Tensor, ref_mask: torch.Tensor
) -> torch.Tensor:
    """Levenshtein distance (insert, delete, substitute: cost 1 each) between the masked sequences, (B,) long.

    The alternative d of paper Table 6. The two sides may have different lengths; the real tokens of
    each row are taken in order (the masks need not be prefixes).
    """
    return _edit_distance(predictions, references, pred_mask, ref_mask, substitution_cost=1)


def lcs_distance(
    predictions: torch.Tensor, references: torch.Tensor, pred_mask: torch.Tensor, ref_mask: torch.Tensor
) -> torch.Tensor:
    """len(pred) + len(ref) - 2·LCS(pred, ref), (B,) long: the distance GLAT+CTC uses between sequences
    of different lengths. It is the edit distance without substitutions (a substitution costs a
    deletion plus an insertion), so it shares the Levenshtein DP with substitution cost 2.
    """
    return _edit_distance(predictions, references, pred_mask, ref_mask, substitution_cost=2)


# ----------------------------------------------------------------------------------------------
# How many tokens to glance: S (paper eq. 2 and the count rules of Tables 3-4)
# ----------------------------------------------------------------------------------------------


def glancing_ratio(
    step: int,
    total_steps: int,
    schedule: str = "linear",
    start: float = 0.5,
    end: float = 0.3,
    anneal_start: int = 0,
) -> float:
    """λ at a training step (§4.1): "constant" is always `start` (IWSLT16: 0.5); "linear" holds `start` until
    `anneal_start`, anneals it to `end` at `total_steps` and then stays at `end` (WMT14: 0.5 -> 0.3 from step
    0). "decay" is "linear" over the learning rate's decay phase: the trainer passes where that begins.

    The same schedule gives the "decreasing" count rule of Table 3 (λs·T -> λe·T): pass its value as
    the `ratio` of `glance_count(..., rule="decreasing")`.
    """
    if schedule == "constant":
        return float(start)
    if schedule not in RATIO_SCHEDULES:
        raise ValueError(f"Unknown glancing ratio schedule {schedule!r}; choose one of {RATIO_SCHEDULES}.")
    span = total_steps - anneal_start
    progress = 1.0 if span <= 0 else min(max((step - anneal_start) / span, 0.0), 1.0)
    return float(start + (end - start) * progress)


def glance_count(
    distance: torch.Tensor,
    target_lengths: torch.Tensor,
    ratio: float | torch.Tensor,
    rule: str = "adaptive",
    rounding: str = "floor",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Number of reference tokens S to glance per sentence, (B,) long.

    - "adaptive": S = λ·d(Y, Ŷ), the glancing sampling of paper eq. 2: the worse the first-pass
      prediction, the more of the reference is shown.
    - "fixed": S = λ·T, a constant share of the target (the baseline of Tables 3-4).
    - "decreasing": S = λ·T with λ annealed linearly from λs to λe over training (Table 3). The
      schedule lives in one place, `glancing_ratio`: the caller passes its current value as `ratio`,
      so here "decreasing" computes the same product as "fixed".

    `rounding` turns the product x = λ·d (or λ·T) into a count, the same way for every rule:
    - "floor": floor(x), as the official GLAT code does (`(d * ratio).long()`). It glances fewer
      tokens than x, on short sentences noticeably: λ·d = 1.8 glances 1.
    - "round": floor(x + 1/2), the nearest integer (halves round up).
    - "stochastic": floor(x + u) with u ~ U[0, 1) drawn per sentence (from `generator`), which is
      x in expectation: 1.8 glances 2 tokens 80% of the time and 1 token 20% of it.
    "floor" and "round" add a 1e-6 tolerance first, so that an exactly-integer (or half) product is
    not lost to float error. The count is then clamped to [0, T]. `ratio` is a float or a (B,) tensor
    (one λ per sentence). `distance` is ignored by the length-based rules (any tensor of the right
    shape, or None, will do).
    """
    if rule not in COUNT_RULES:
        raise ValueError(f"Unknown glance count rule {rule!r}; choose one of {COUNT_RULES}.")
    if rounding not in ROUNDINGS:
        raise ValueError(f"Unknown glance count rounding {rounding!r}; choose one of {ROUNDINGS}.")
    if rule == "adaptive":
        if distance is None:
            raise ValueError("glance_count(rule='adaptive') needs the distance d(Y, Ŷ) of each sentence.")
        basis = distance
    else:
        basis = target_lengths
    ratio = torch.as_tensor(ratio, dtype=torch.float64, device=target_lengths.device)
    product = basis.to(torch.float64) * ratio
    if rounding == "floor":
        product = product + _FLOOR_TOLERANCE
    elif rounding == "round":
        product = product + (0.5 + _FLOOR_TOLERANCE)
    else:
        product = product + _uniform(product.shape, product.device, generator).to(torch.float64)
    count = torch.floor(product).long()
    return torch.minimum(count.clamp_min(0), target_lengths.long())


# ----------------------------------------------------------------------------------------------
# Which tokens to glance (paper Table 5)
# ----------------------------------------------------------------------------------------------


def _uniform(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform numbers in [0, 1) drawn on the generator's device, returned on `device`."""
    if generator is None:  # no generator keyword: torch.compile cannot trace rand(generator=None) of a dynamic shape
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _gumbel(shape: torch.Size, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Gumbel noise; adding it to log-weights and taking the top k samples k items without
    replacement with probability proportional to the weights (the Gumbel-top-k trick)."""
    uniform = _uniform(shape, device, generator).clamp(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


def _top_k_mask(scores: torch.Tensor, counts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The counts[b] real positions of row b with the highest scores; padding ranks after every real
    position (its score is -inf, real ones are clamped to the lowest finite value)."""
    lowest = torch.finfo(scores.dtype).min
    scores = torch.where(mask, scores.nan_to_num(nan=lowest).clamp_min(lowest), float("-inf"))
    order = scores.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    counts = torch.minimum(counts.long(), mask.sum(dim=1))
    return ranks < counts[:, None]


def select_glance_positions(
    counts: torch.Tensor,
    mask: torch.Tensor,
    strategy: str = "random",
    reference_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose exactly counts[b] real positions of each row to glance, bool (B, T) (paper Table 5).

    Strategies (`reference_probs` (B, T) is the model's probability of the reference token, needed
    by all but "random"):
    - "random": uniformly without replacement (the paper's choice);
    - "p_ref": sampled without replacement with probability proportional to p_ref;
    - "1-p_ref": the same, proportional to 1 - p_ref;
    - "most_certain": exactly the positions with the highest p_ref;
    - "most_uncertain": exactly the positions with the lowest p_ref.
    Each builds a score per position and keeps the top counts[b]; counts beyond a row's real length
    are clamped to it, and padding is never chosen.
    """
    if strategy not in SELECTION_STRATEGIES:
        raise ValueError(f"Unknown glancing strategy {strategy!r}; choose one of {SELECTION_STRATEGIES}.")
    if strategy == "random":
        scores = _uniform(mask.shape, mask.device, generator)
        return _top_k_mask(scores, counts, mask)
    if reference_probs is None:
        raise ValueError(
            f"Glancing strategy {strategy!r} needs reference_probs (the model's p of each reference token)."
        )
    probs = reference_probs.detach().float()
    if strategy == "most_certain":
        scores = probs
    elif strategy == "most_uncertain":
        scores = -probs
    else:
        weights = probs if strategy == "p_ref" else 1.0 - probs
        scores = torch.log(weights.clamp_min(0.0)) + _gumbel(mask.shape, mask.device, generator)
    return _top_k_mask(scores, counts, mask)


def uniform_mask_positions(mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask-Predict's training rule (Ghazvininejad et al. 2019; the baseline of paper Table 7).

    Per sentence of length T, draw n uniformly from 1..T and choose n positions at random to be
    masked and predicted. Returns the OBSERVED positions, bool (B, T): the T - n (0 to T-1) real
    positions given to the decoder as reference tokens, i.e. the complement of the predicted ones
    within `mask`. It plugs in wherever a glance mask goes. Empty rows observe nothing.
    """
    lengths = mask.sum(dim=1)
    uniform = _uniform(lengths.shape, mask.device, generator)
    num_predicted = torch.minimum((uniform * lengths).long() + 1, lengths)
    predicted = select_glance_positions(num_predicted, mask, "random", generator=generator)
    return mask & ~predicted


# ----------------------------------------------------------------------------------------------
# Everything the trainer needs in one call
# ----------------------------------------------------------------------------------------------


def glance_mask(
    predictions: torch.Tensor,
    references: torch.Tensor,
    mask: torch.Tensor,
    ratio: float | torch.Tensor,
    rule: str = "adaptive",
    distance: str = "hamming",
    strategy: str = "random",
    reference_probs: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    rounding: str = "floor",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Glancing sampling GS(Y, Ŷ) of paper §3.1: returns (glanced positions bool (B, T), counts (B,) long).

    d is "hamming" or "levenshtein" (the prediction under the same `mask` against the reference,
    Table 6); `rule`, `ratio` and `rounding` give S as in `glance_count`; `strategy` picks the
    positions as in `select_glance_positions`.
    """
    if distance not in DISTANCES:
        raise ValueError(f"Unknown glancing distance {distance!r}; choose one of {DISTANCES}.")
    target_lengths = mask.sum(dim=1)
    if rule != "adaptive":
        distances = None
    elif distance == "hamming":
        distances = hamming_distance(predictions, references, mask)
    else:
        distances = levenshtein_distance(predictions, references, mask, mask)
    counts = glance_count(distances, target_lengths, ratio, rule, rounding, generator)
    return select_glance_positions(counts, mask, strategy, reference_probs, generator), counts
