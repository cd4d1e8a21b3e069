"""The autoregressive baseline and teacher: transformers' own `MarianMTModel`, of a GLAT preset's sizes.

GLAT is compared with, reranked by and distilled from this model, so it shares GLAT's sizes and tokenizer;
nothing autoregressive is written by hand.
"""

from __future__ import annotations

from transformers import GenerationConfig, MarianConfig, MarianMTModel

from .configuration_glat import preset_sizes

# A CTranslate2 conversion keeps the MarianConfig here (CTranslate2 writes its own config.json); its presence marks
# such a folder, also where ctranslate2 is not installed (glat_hf.ctranslate2_baseline, glat_hf.cli).
MARIAN_CONFIG = "marian_config.json"


def marian_baseline_config(preset: str, tokenizer, max_position_embeddings: int = 256) -> MarianConfig:
    """A MarianConfig with the sizes of `preset` ("wmt14", "iwslt16", "multi30k") and the ids of `tokenizer`."""
    return MarianConfig(
        **preset_sizes(preset),
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        activation_function="relu",
        scale_embedding=True,
    )


def marian_baseline(config: MarianConfig, max_target_length: int = 128) -> MarianMTModel:
    """A new MarianMTModel that decodes greedily by default (`num_beams=1`) and never emits `<pad>`."""
    model = MarianMTModel(config)
    model.generation_config = GenerationConfig(
        max_length=max_target_length,
        num_beams=1,
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        forced_eos_token_id=config.eos_token_id,
        bad_words_ids=[[config.pad_token_id]],
    )
    return model
