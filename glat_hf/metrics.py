"""Translation quality measures of the paper: BLEU, token repetition (Table 2), BLEU by length (Figure 4).

BLEU comes from sacrebleu on detokenized text with its default 13a tokenizer, so the scores and
their signatures compare with published sacreBLEU numbers (not with the paper's tokenized BLEU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from sacrebleu.metrics import BLEU
from transformers import EvalPrediction

# A local `evaluate` metric module (evaluate.load("sacrebleu") needs the Hub); the same score as corpus_bleu.
SACREBLEU_METRIC = str(Path(__file__).resolve().parent / "sacrebleu_metric")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """Corpus BLEU of detokenized hypotheses against one reference each: {"score", "signature"}."""
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} references")
    if len(hypotheses) == 0:
        raise ValueError("corpus_bleu: no hypotheses to score")
    bleu = BLEU()
    result = bleu.corpus_score(list(hypotheses), [list(references)])
    return {"score": result.score, "signature": str(bleu.get_signature())}


def repetition_ratio(token_lists: Sequence[Sequence | str]) -> float:
    """Token repetition of non-autoregressive output (paper Table 2), pooled over the corpus.

    Counts the positions t >= 1 of each sentence whose token equals the token just before it
    (y_t == y_{t-1}), sums these counts over all sentences and divides by the total number of
    tokens over all sentences. Repeats are never counted across sentence boundaries.
    A sentence is a list of tokens (strings or ids) or a string, split on whitespace.
    Returns 0.0 when there are no tokens at all.
    """
    repeats = 0
    total = 0
    for tokens in token_lists:
        if isinstance(tokens, str):
            tokens = tokens.split()
        tokens = list(tokens)
        total += len(tokens)
        repeats += sum(current == previous for previous, current in zip(tokens, tokens[1:]))
    return repeats / total if total else 0.0


def token_lengths(tokenizer, sentences) -> torch.Tensor:
    """Target-side lengths in tokens, `</s>` counted: what the length predictor predicts."""
    return torch.tensor([len(ids) for ids in tokenizer(text_target=list(sentences))["input_ids"]])


def length_prediction(predicted: torch.Tensor, reference: torch.Tensor) -> dict:
    """Predicted (or written) lengths against the references' token counts (with `</s>`): the share exactly right
    and within 2 tokens, and how many distinct lengths are predicted. A predictor that has learned only the
    corpus' most frequent lengths predicts one or two whatever the source."""
    errors = (predicted - reference).abs().float()
    return {
        "exact": round(float((errors == 0).float().mean()), 4),
        "within_2": round(float((errors <= 2).float().mean()), 4),
        "distinct_lengths": int(predicted.unique().numel()),
        "mean_predicted": round(float(predicted.float().mean()), 2),
        "mean_reference": round(float(reference.float().mean()), 2),
    }


def _bucket_labels(buckets: Sequence[int]) -> list[str]:
    """Labels "1-10", "11-20", ..., ">50" for bucket upper bounds (10, 20, ..., 50)."""
    labels = []
    lower = 1
    for upper in buckets:
        labels.append(f"{lower}-{upper}")
        lower = upper + 1
    labels.append(f">{buckets[-1]}")
    return labels


def bleu_by_length(
    sources: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str],
    buckets: Sequence[int] = (10, 20, 30, 40, 50),
) -> list[dict]:
    """BLEU per source-length bucket (paper Figure 4: how quality falls with sentence length).

    A source of n whitespace-separated words goes to the first bucket whose upper bound is >= n,
    and to the last, open bucket (">50") when n exceeds every bound. Returns one dict per bucket,
    in order: {"bucket", "count", "bleu"}, with bleu None for an empty bucket.
    """
    if not (len(sources) == len(hypotheses) == len(references)):
        raise ValueError(
            f"bleu_by_length: {len(sources)} sources, {len(hypotheses)} hypotheses and "
            f"{len(references)} references; they must be equally many"
        )
    buckets = list(buckets)
    if not buckets or any(b <= a for a, b in zip(buckets, buckets[1:])) or buckets[0] < 1:
        raise ValueError(f"bleu_by_length: buckets must be positive and strictly increasing, got {buckets}")

    members: list[list[int]] = [[] for _ in range(len(buckets) + 1)]
    for index, source in enumerate(sources):
        length = len(source.split())
        slot = next((i for i, upper in enumerate(buckets) if length <= upper), len(buckets))
        members[slot].append(index)

    rows = []
    for label, indices in zip(_bucket_labels(buckets), members):
        score = None
        if indices:
            score = corpus_bleu([hypotheses[i] for i in indices], [references[i] for i in indices])["score"]
        rows.append({"bucket": label, "count": len(indices), "bleu": score})
    return rows


def paired_bootstrap(
    systems: Sequence[Sequence[str]],
    baselines: Sequence[Sequence[str]],
    references: Sequence[str],
    samples: int = 1000,
    seed: int = 12345,
    target: float | None = None,
) -> dict:
    """How much of a BLEU lead is the test set's luck: paired bootstrap resampling (Koehn 2004) of the mean
    corpus-BLEU difference systems[i] - baselines[i] (one pair per seed: a recipe's lead is its mean over seeds).

    Every resample draws the same sentences, with replacement, for all the systems (paired), so what varies is
    only which sentences the test set holds; the differences between seeds are in the pairs themselves.
    Sentence statistics and BLEU come from sacrebleu's BLEU (13a, exp smoothing, as `corpus_bleu`), through the
    two methods its own paired test uses. Returns the pairs' BLEU and difference, the mean difference, its 2.5th
    and 97.5th percentiles over the resamples, the share of resamples with a mean difference <= 0 (a one-sided
    p-value for "no lead") and, with `target`, the share >= target.
    """
    if len(systems) != len(baselines) or not systems:
        raise ValueError(f"paired_bootstrap: {len(systems)} systems but {len(baselines)} baselines (one each)")
    if samples < 1:
        raise ValueError(f"paired_bootstrap: samples must be >= 1, got {samples}")
    if not references:
        raise ValueError("paired_bootstrap: no references, an empty test set")
    bleu = BLEU()

    def sentence_statistics(hypotheses):
        if len(hypotheses) != len(references):
            raise ValueError(f"paired_bootstrap: {len(hypotheses)} hypotheses but {len(references)} references")
        return np.asarray(bleu._extract_corpus_statistics(list(hypotheses), [list(references)]), dtype=np.float64)

    def scores(statistics):  # (k, n) summed sentence statistics -> (k,) BLEU
        return np.array([bleu._compute_score_from_stats(row).score for row in statistics])

    n = len(references)
    # how often each sentence is drawn in each resample: (samples, n) counts that sum to n
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=samples)
    pairs, resampled = [], np.zeros(samples)
    for system, baseline in zip(systems, baselines):
        statistics = [sentence_statistics(system), sentence_statistics(baseline)]
        system_bleu, baseline_bleu = (float(scores(stats.sum(0, keepdims=True))[0]) for stats in statistics)
        pairs.append({"system": system_bleu, "baseline": baseline_bleu, "difference": system_bleu - baseline_bleu})
        resampled += scores(counts @ statistics[0]) - scores(counts @ statistics[1])
    resampled /= len(pairs)
    low, high = np.percentile(resampled, [2.5, 97.5])
    result = {
        "pairs": pairs,
        "difference": float(np.mean([pair["difference"] for pair in pairs])),
        "interval_95": (float(low), float(high)),
        "share_no_lead": float(np.mean(resampled <= 0)),
        "samples": samples,
    }
    if target is not None:
        result["share_at_target"] = float(np.mean(resampled >= target))
    return result


def decode_ids(tokenizer, ids) -> list[str]:
    """Detokenized text of generated or label ids; Trainer's -100 padding counts as pad."""
    ids = np.asarray(ids)
    ids = np.where(ids == -100, tokenizer.pad_token_id, ids)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def compute_translation_metrics(tokenizer) -> Callable:
    """Build a `compute_metrics` for Seq2SeqTrainer with `predict_with_generate=True`.

    The Trainer pads predictions and labels with -100 where batches of different lengths meet,
    which no tokenizer can decode: those become the pad id before decoding. BLEU is computed on
    the decoded text; repetition on the predicted ids with pads and other special tokens removed.
    """
    import evaluate  # imported here: it is slow to import, and only training-time evaluation needs it

    pad_id = tokenizer.pad_token_id
    special_ids = set(tokenizer.all_special_ids)
    bleu = evaluate.load(SACREBLEU_METRIC)

    def compute_metrics(eval_prediction) -> dict:
        predictions, label_ids = eval_prediction.predictions, eval_prediction.label_ids
        if isinstance(predictions, tuple):  # some models return (ids, extra outputs)
            predictions = predictions[0]
        predictions = np.where(np.asarray(predictions) == -100, pad_id, np.asarray(predictions))
        hypotheses, references = decode_ids(tokenizer, predictions), decode_ids(tokenizer, label_ids)
        predicted_tokens = [[int(t) for t in row if int(t) not in special_ids] for row in predictions]
        return {
            "bleu": bleu.compute(predictions=hypotheses, references=references)["score"],
            "repetition_ratio": repetition_ratio(predicted_tokens),
        }

    return compute_metrics


class MetricsOnFirst:
    """`compute_metrics` on the first `count` predictions only (the evaluated dataset's size).

    Seq2SeqTrainer gathers predictions across processes with `gather`, not `gather_for_metrics`, so a
    multi-process evaluation also returns samples repeated to even out the last batches; they come after the
    real ones, which stay in order. Set `count` before evaluating another dataset.
    """

    def __init__(self, compute_metrics: Callable, count: int | None):
        self.compute_metrics, self.count = compute_metrics, count

    def __call__(self, eval_prediction: EvalPrediction) -> dict:
        predictions = eval_prediction.predictions
        predictions = predictions[0] if isinstance(predictions, tuple) else predictions
        labels = eval_prediction.label_ids
        return self.compute_metrics(
            EvalPrediction(predictions=predictions[: self.count], label_ids=labels[: self.count])
        )
