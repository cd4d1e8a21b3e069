"""The "glat-translation" pipeline: the call shape of transformers' old "translation" task (removed in v5)."""

from __future__ import annotations

import types
from collections.abc import Iterator

import torch
from transformers import Pipeline
from transformers.utils import logging

from .translation import max_source_tokens

logger = logging.get_logger(__name__)


class GlatTranslationPipeline(Pipeline):
    """Translate strings with a GLAT model (or any seq2seq model whose `generate` returns token ids).

    `pipe("A dog runs.")` returns `[{"translation_text": ...}]`; a list of n strings returns n such
    dicts, in order; a generator of strings gives a lazy iterator of such dicts, in order (one pass
    over a large file, results as they come). `batch_size=` batches sentences; generate arguments
    (`length_beam_size`, `reranker`, `num_iterations`, `max_length`, ...) pass through, at
    construction or per call.

    Documented behaviour for bad input: an empty or whitespace-only sentence translates to "" (also
    inside a batch); a sentence longer than the model holds (`config.max_source_positions` tokens, or
    the tokenizer's `model_max_length` if smaller) is truncated with a warning.
    """

    _pipeline_calls_generate = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(self, clean_up_tokenization_spaces=None, **generate_kwargs):
        postprocess_params = {}
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        return {}, generate_kwargs, postprocess_params

    def __call__(self, inputs: str | list[str] | Iterator[str], **kwargs):
        if isinstance(inputs, str):
            return super().__call__(inputs, **kwargs)
        if isinstance(inputs, types.GeneratorType):
            return (result[0] for result in super().__call__(_only_strings(inputs), **kwargs))
        if not isinstance(inputs, (list, tuple)) or not all(isinstance(text, str) for text in inputs):
            raise TypeError("glat-translation takes a string or a list of strings.")
        return [result[0] for result in super().__call__(list(inputs), **kwargs)]

    def preprocess(self, text: str):
        limit = max_source_tokens(self.model, self.tokenizer)
        inputs = self.tokenizer(text, return_tensors="pt")
        if inputs["input_ids"].shape[1] > limit:
            logger.warning(
                f"A source of {inputs['input_ids'].shape[1]} tokens is longer than the model holds ({limit}); "
                f"it is truncated to {limit} tokens: {text[:60]!r}..."
            )
            inputs = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=limit)
        return {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs["attention_mask"],
            "source_is_empty": torch.tensor([[not text.strip()]]),
        }

    def _forward(self, model_inputs, **generate_kwargs):
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        output_ids = self.model.generate(
            input_ids=model_inputs["input_ids"], attention_mask=model_inputs["attention_mask"], **generate_kwargs
        )
        return {"output_ids": output_ids, "source_is_empty": model_inputs["source_is_empty"]}

    def postprocess(self, model_outputs, clean_up_tokenization_spaces=False):
        if bool(model_outputs["source_is_empty"][0, 0]):
            return [{"translation_text": ""}]
        text = self.tokenizer.decode(
            model_outputs["output_ids"][0],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
        )
        return [{"translation_text": text.strip()}]


def _only_strings(texts) -> Iterator[str]:
    """Check a streamed input as it is read, the way a list is checked up front."""
    for text in texts:
        if not isinstance(text, str):
            raise TypeError("glat-translation takes a string or a list of strings.")
        yield text
