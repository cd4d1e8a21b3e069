"""BLEU (sacrebleu), token repetition ratio, BLEU by source length, and the Trainer's compute_metrics."""

import numpy as np
import pytest
import sacrebleu
from helpers import read_pairs
from transformers import EvalPrediction

from glat_hf.metrics import (
    bleu_by_length,
    compute_translation_metrics,
    corpus_bleu,
    paired_bootstrap,
    repetition_ratio,
)
from glat_hf.tokenization import train_tokenizer

HYPOTHESES = ["the cat sat on the mat .", "a dog runs in the park", "two men are playing soccer outside"]
REFERENCES = ["the cat sat on a mat .", "a dog is running in the park", "two men play soccer outside ."]


def test_bleu_equals_sacrebleu():
    result = corpus_bleu(HYPOTHESES, REFERENCES)
    expected = sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    assert result["score"] == pytest.approx(expected)
    assert 0 < result["score"] < 100
    assert "tok:13a" in result["signature"]


def test_bleu_of_identical_text_is_100():
    assert corpus_bleu(REFERENCES, REFERENCES)["score"] == pytest.approx(100.0)


def test_bleu_rejects_unequal_lengths():
    with pytest.raises(ValueError, match="3 hypotheses but 2 references"):
        corpus_bleu(HYPOTHESES, REFERENCES[:2])


def test_repetition_ratio_counts_consecutive_repeats():
    # "a a a b": 2 repeats of 4 tokens; "c d": 0 of 2  ->  2 / 6 over the corpus
    assert repetition_ratio([["a", "a", "a", "b"], ["c", "d"]]) == pytest.approx(2 / 6)
    assert repetition_ratio(["a a a b", "c d"]) == pytest.approx(2 / 6)
    assert repetition_ratio([[7, 7, 8, 7]]) == pytest.approx(1 / 4)  # a non-adjacent repeat does not count
    assert repetition_ratio([["a"], ["a"]]) == 0.0  # nor does one across sentences
    assert repetition_ratio([]) == 0.0
    assert repetition_ratio([[5, 5, 5, 5]]) == pytest.approx(3 / 4)


def test_bleu_by_length_buckets():
    sources = ["one two", "w " * 15, "w " * 60, "three words here"]
    hypotheses = [HYPOTHESES[0], HYPOTHESES[1], HYPOTHESES[2], REFERENCES[0]]
    references = [REFERENCES[0], REFERENCES[1], REFERENCES[2], REFERENCES[0]]
    rows = bleu_by_length(sources, hypotheses, references)
    assert [row["bucket"] for row in rows] == ["1-10", "11-20", "21-30", "31-40", "41-50", ">50"]
    assert [row["count"] for row in rows] == [2, 1, 0, 0, 0, 1]
    assert rows[0]["bleu"] == pytest.approx(corpus_bleu(hypotheses[::3], references[::3])["score"])
    assert rows[2]["bleu"] is None
    with pytest.raises(ValueError, match="equally many"):
        bleu_by_length(sources[:2], hypotheses, references)


def _damaged(sentences, every):
    """Every `every`-th sentence with its words reversed: a worse system, sentence by sentence."""
    return [" ".join(reversed(s.split())) if i % every == 0 else s for i, s in enumerate(sentences)]


def test_paired_bootstrap_of_a_clear_lead_and_of_no_lead(multi30k_dir):
    _, references = read_pairs(multi30k_dir, split="val", count=300)
    good, bad, worse = _damaged(references, 4), _damaged(references, 2), _damaged(references, 1)
    result = paired_bootstrap([good, bad], [bad, worse], references, samples=300, target=100.0)
    # the point estimates are corpus BLEU, and their mean
    differences = [
        corpus_bleu(s, references)["score"] - corpus_bleu(b, references)["score"]
        for s, b in ((good, bad), (bad, worse))
    ]
    assert [pair["difference"] for pair in result["pairs"]] == pytest.approx(differences)
    assert result["pairs"][0]["system"] == pytest.approx(corpus_bleu(good, references)["score"])
    assert result["difference"] == pytest.approx(np.mean(differences))
    low, high = result["interval_95"]
    assert 0 < low < result["difference"] < high  # a lead of ~20 BLEU is not the test set's luck
    assert result["share_no_lead"] == 0.0 and result["share_at_target"] == 0.0

    same = paired_bootstrap([good], [good], references, samples=50, target=0.0)
    assert same["interval_95"] == (0.0, 0.0) and same["share_no_lead"] == 1.0 and same["share_at_target"] == 1.0


def test_paired_bootstrap_resamples_the_same_sentences_for_both_systems(multi30k_dir):
    # One damaged sentence in 300: paired, every resample differs by that sentence at most, so the interval is
    # narrow; the seed fixes the resamples.
    _, references = read_pairs(multi30k_dir, split="val", count=300)
    one_worse = [" ".join(reversed(references[0].split()))] + references[1:]
    result = paired_bootstrap([references], [one_worse], references, samples=200, seed=1)
    low, high = result["interval_95"]
    assert 0 <= low <= result["difference"] <= high < 2 * result["difference"] + 0.5
    assert paired_bootstrap([references], [one_worse], references, samples=200, seed=1) == result
    with pytest.raises(ValueError, match="1 systems but 2 baselines"):
        paired_bootstrap([references], [one_worse, one_worse], references)
    with pytest.raises(ValueError, match="299 hypotheses but 300 references"):
        paired_bootstrap([references[1:]], [one_worse], references)


@pytest.fixture(scope="module")
def tokenizer():
    texts = REFERENCES + HYPOTHESES + ["a cat and a dog play in the grass ."] * 3
    return train_tokenizer(texts, vocab_size=200, min_frequency=1)


def test_compute_metrics_handles_minus_100_padding(tokenizer):
    predictions = [tokenizer(text)["input_ids"] for text in HYPOTHESES]
    labels = [tokenizer(text)["input_ids"] for text in REFERENCES]
    width = max(map(len, predictions + labels)) + 3
    # Seq2SeqTrainer pads across batches with -100, labels are padded with -100 by the collator
    padded_predictions = np.array([row + [-100] * (width - len(row)) for row in predictions])
    padded_labels = np.array([row + [-100] * (width - len(row)) for row in labels])
    padded_predictions[0, len(predictions[0])] = tokenizer.pad_token_id  # a real pad before the -100s

    compute_metrics = compute_translation_metrics(tokenizer)
    metrics = compute_metrics(EvalPrediction(predictions=padded_predictions, label_ids=padded_labels))

    assert metrics["bleu"] == pytest.approx(corpus_bleu(HYPOTHESES, REFERENCES)["score"])
    content = [[t for t in row if t not in tokenizer.all_special_ids] for row in predictions]
    assert metrics["repetition_ratio"] == pytest.approx(repetition_ratio(content))


def test_compute_metrics_sees_repeated_tokens(tokenizer):
    dog = tokenizer("dog", add_special_tokens=False)["input_ids"]
    assert len(dog) == 1
    prediction = np.array([dog * 4 + [tokenizer.eos_token_id, -100]])
    labels = np.array([dog + [tokenizer.eos_token_id, -100, -100, -100, -100]])
    metrics = compute_translation_metrics(tokenizer)(EvalPrediction(predictions=prediction, label_ids=labels))
    assert metrics["repetition_ratio"] == pytest.approx(3 / 4)


def test_bundled_evaluate_metric_loads_offline_and_equals_sacrebleu(multi30k_dir):
    """evaluate.load("sacrebleu") needs the Hub; the module bundled in glat_hf gives the same score offline."""
    import evaluate

    from glat_hf.metrics import SACREBLEU_METRIC

    _, references = read_pairs(multi30k_dir, split="val", count=50)
    hypotheses = [" ".join(reversed(line.split())) if i % 3 else line for i, line in enumerate(references)]
    metric = evaluate.load(SACREBLEU_METRIC)
    direct = corpus_bleu(hypotheses, references)
    assert 0 < direct["score"] < 100
    assert metric.compute(predictions=hypotheses, references=references) == direct
