"""The autoregressive baseline as users deploy it: the MarianMTModel converted to CTranslate2 (extra `bench`).

    convert_marian("outputs/ar", "outputs/ar-ct2-int8", quantization="int8")
    model = CTranslate2Translator("outputs/ar-ct2-int8", compute_type="int8", intra_threads=2)
    translate(model, model.tokenizer, sources)  # glat_hf.translation: it stands in for the transformers model
    glat.generate(**batch, length_beam_size=7, reranker=model)  # NPD ranked by the deployed AR model

    python -m glat_hf.ctranslate2_baseline outputs/ar outputs/ar-ct2-int8 --int8   # the conversion, as a command

CTranslate2's own Marian loader follows OPUS-MT, where `<pad>` is the last vocabulary entry: it drops that
row and starts the decoder from a zero embedding. Our `<pad>` is id 0, and training moves its row away from
zero (the embeddings are tied to the output layer, whose `<pad>` logit gets gradients), so the loader here
keeps every row and starts the decoder from the `<pad>` embedding, as transformers does; generate() bars
`<pad>` through the generation config's bad_words_ids, as transformers does. Greedy search is then
transformers' token for token (tests/test_ctranslate2.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, MarianConfig, MarianMTModel

from .baseline import MARIAN_CONFIG

try:
    import ctranslate2
    from ctranslate2.converters.transformers import BartLoader, TransformersConverter
except ImportError as error:
    raise ImportError("glat_hf.ctranslate2_baseline needs CTranslate2: pip install glat-hf[bench]") from error


class _MarianLoader(BartLoader):
    """CTranslate2's MarianMTLoader without its OPUS-MT `<pad>` handling: every row kept, the decoder started
    from `decoder_start_token_id`'s embedding (BartLoader's way)."""

    @property
    def architecture_name(self):
        return "MarianMTModel"

    def get_model_spec(self, model):
        model.config.normalize_before = False  # post-norm, no layer norm on the embeddings: as MarianMTLoader
        model.config.normalize_embedding = False
        return super().get_model_spec(model)


class _MarianConverter(TransformersConverter):
    def _load(self):
        with torch.no_grad():
            model = MarianMTModel.from_pretrained(self._model_name_or_path)
            tokenizer = AutoTokenizer.from_pretrained(self._model_name_or_path)
            return _MarianLoader()(model, tokenizer)


def convert_marian(model_dir, output_dir, quantization: str | None = None) -> Path:
    """Convert a saved MarianMTModel folder (tokenizer beside it) to CTranslate2 at `output_dir` (replaced),
    with int8 weights for `quantization="int8"`; the tokenizer and the transformers configs go along."""
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"{model_dir} is not a saved MarianMTModel folder: {error}") from None
    if not isinstance(config, MarianConfig):
        raise ValueError(f"{model_dir} holds a {type(config).__name__} model; only a MarianMTModel converts")
    if not config.share_encoder_decoder_embeddings:
        raise ValueError(f"{model_dir}: only a MarianMTModel with one vocabulary for both languages converts")
    if Path(output_dir).resolve() == Path(model_dir).resolve():
        raise ValueError("convert_marian replaces output_dir: it must not be the model's folder")
    try:
        generation = GenerationConfig.from_pretrained(model_dir)
    except OSError:
        generation = GenerationConfig.from_model_config(config)
    _MarianConverter(str(model_dir)).convert(str(output_dir), quantization=quantization, force=True)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(output_dir)
    config.to_json_file(Path(output_dir) / MARIAN_CONFIG)
    generation.save_pretrained(output_dir)
    return Path(output_dir)


class CTranslate2Translator:
    """A converted folder behind transformers' `generate`, so it stands in for the model in
    glat_hf.translation.translate and the benchmark. It follows the folder's generation config (max_length,
    min_length, num_beams, bad_words_ids, forced_eos_token_id) and counts lengths as transformers does."""

    engine = "ctranslate2"  # what training/benchmark.py's rows say runs it

    def __init__(self, folder, device: str = "cpu", compute_type: str = "default", intra_threads: int = 0):
        self.device = torch.device(device)  # "cpu", "cuda", "cuda:N"
        where = dict(device=self.device.type, device_index=self.device.index or 0)
        torch_threads = torch.get_num_threads()  # CTranslate2 sets the calling thread's OpenMP count, torch's too
        try:
            self.translator = ctranslate2.Translator(
                str(folder), **where, compute_type=compute_type, intra_threads=intra_threads
            )
        finally:
            torch.set_num_threads(torch_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.config = MarianConfig.from_json_file(Path(folder) / MARIAN_CONFIG)
        self.generation_config = GenerationConfig.from_pretrained(folder)

    def generate(self, input_ids, attention_mask=None, num_beams=None, max_length=None, min_length=None, **kwargs):
        """(B, L) token ids like transformers' generate: the decoder start token, the tokens, `<eos>`, padding.
        Also takes max_new_tokens, min_new_tokens and do_sample=False."""
        max_new, min_new = kwargs.pop("max_new_tokens", None), kwargs.pop("min_new_tokens", None)
        if kwargs.pop("do_sample", False) or kwargs:
            raise TypeError(f"CTranslate2Translator.generate does not take {sorted(kwargs) or 'do_sample=True'}")
        config, generation = self.config, self.generation_config
        if max_new is None:  # transformers' lengths count the decoder start token; no max_length: 20 new tokens
            max_new = (max_length or generation.max_length or min(21, config.max_position_embeddings)) - 1
        if min_new is None:
            min_new = max((min_length or generation.min_length or 0) - 1, 0)
        sources = self._source_tokens(input_ids, attention_mask)
        barred = [self.tokenizer.convert_ids_to_tokens(ids) for ids in generation.bad_words_ids or []]
        lengths = dict(max_decoding_length=max_new, min_decoding_length=min(min_new, max_new), max_input_length=0)
        beams = num_beams or generation.num_beams or 1
        results = self.translator.translate_batch(
            sources, beam_size=beams, suppress_sequences=barred or None, return_end_token=True, **lengths
        )
        rows, forced = [], generation.forced_eos_token_id
        for result in results:
            ids = self.tokenizer.convert_tokens_to_ids(result.hypotheses[0])
            if forced is not None and len(ids) == max_new and ids[-1] != forced:  # as transformers forces it
                ids[-1] = forced
            rows.append([config.decoder_start_token_id, *ids])
        width = max(map(len, rows))
        return torch.tensor([row + [config.pad_token_id] * (width - len(row)) for row in rows])

    def candidate_scores(self, input_ids, attention_mask, candidates, candidates_per_source: int = 1) -> torch.Tensor:
        """The mean log-probability of each candidate by teacher forcing, as
        GlatForConditionalGeneration.reranker_scores computes it with a transformers model, so that this engine
        ranks NPD's candidates (`generate(..., reranker=translator)`). `candidates` holds `candidates_per_source`
        adjacent rows per source, `<pad>` beyond their end. CTranslate2's score_batch ends every target with
        `</s>`: a candidate's own final `</s>` is left to it, and a candidate without one is scored without it."""
        sources = self._source_tokens(input_ids, attention_mask)
        pad, eos = self.config.pad_token_id, self.config.eos_token_id
        targets, ended = [], []
        for row in candidates.tolist():
            ids = [token for token in row if token != pad]
            ended.append(bool(ids) and ids[-1] == eos)
            targets.append(self.tokenizer.convert_ids_to_tokens(ids[:-1] if ended[-1] else ids))
        repeated = [tokens for tokens in sources for _ in range(candidates_per_source)]
        results = self.translator.score_batch(repeated, targets, max_input_length=0)
        scores = [result.log_probs if end else result.log_probs[:-1] for result, end in zip(results, ended)]
        return torch.tensor([statistics.fmean(score) if score else 0.0 for score in scores])

    def _source_tokens(self, input_ids, attention_mask) -> list[list[str]]:
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return [
            self.tokenizer.convert_ids_to_tokens([t for t, keep in zip(ids, keeps) if keep])
            for ids, keeps in zip(input_ids.tolist(), mask.tolist())
        ]


def converted_translators(model: MarianMTModel, tokenizer, intra_threads: int | None = None) -> dict:
    """{"fp32": ..., "int8": ...}: CTranslate2Translators of `model` and `tokenizer` on the model's device, with
    `intra_threads` (default: torch's), converted in a temporary folder (gone once they are loaded)."""
    device, threads = str(model.device), intra_threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="glat-ct2-") as folder:
        model.save_pretrained(f"{folder}/hf")
        tokenizer.save_pretrained(f"{folder}/hf")
        translators = {}
        for variant, quantization in (("fp32", None), ("int8", "int8")):
            path = convert_marian(f"{folder}/hf", f"{folder}/{variant}", quantization)
            # compute_type "default": the type of the weights (int8 where the device has int8 kernels)
            translators[variant] = CTranslate2Translator(path, device, intra_threads=threads)
        return translators


def main(argv: list[str] | None = None) -> None:
    """python -m glat_hf.ctranslate2_baseline MODEL_DIR OUTPUT_DIR [--int8]: convert_marian as a command."""
    parser = argparse.ArgumentParser(prog="python -m glat_hf.ctranslate2_baseline", description=main.__doc__)
    parser.add_argument("model_dir", help="a saved MarianMTModel folder, its tokenizer beside it")
    parser.add_argument("output_dir", help="the CTranslate2 folder to write (replaced)")
    parser.add_argument("--int8", action="store_true", help="int8 weights (CTranslate2's quantization int8)")
    args = parser.parse_args(argv)
    try:
        print(convert_marian(args.model_dir, args.output_dir, "int8" if args.int8 else None))
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    main()
