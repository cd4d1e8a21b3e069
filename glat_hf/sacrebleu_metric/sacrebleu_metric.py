"""Corpus BLEU by sacreBLEU as an `evaluate` metric that ships with glat_hf, so `evaluate.load` works offline.

`evaluate.load("sacrebleu")` fetches its script from the Hub; this module is the same computation from a
local path: `evaluate.load(glat_hf.metrics.SACREBLEU_METRIC)`. One reference per hypothesis.
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    pages = "186--191",
}
"""

_DESCRIPTION = "Corpus BLEU of detokenized hypotheses (sacreBLEU, tokenizer 13a), with the sacreBLEU signature."

_INPUTS = """
Args:
    predictions: detokenized hypotheses, one string each.
    references: one detokenized reference string per hypothesis.
Returns:
    score: corpus BLEU (0-100); signature: the sacreBLEU signature that makes the score comparable.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class SacrebleuMetric(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        bleu = BLEU()
        result = bleu.corpus_score(list(predictions), [list(references)])
        return {"score": result.score, "signature": str(bleu.get_signature())}
