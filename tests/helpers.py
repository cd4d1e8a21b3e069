"""Small models and data shared by the tests."""

import gzip
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from transformers import MarianConfig, MarianMTModel

from glat_hf import GlatConfig, GlatForConditionalGeneration, train_tokenizer

REPO = Path(__file__).resolve().parents[1]

TINY_SIZES = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=64,
    max_target_length=40,
)


def tiny_config(vocab_size=60, **overrides) -> GlatConfig:
    return GlatConfig(vocab_size=vocab_size, **{**TINY_SIZES, **overrides})


def tiny_model(vocab_size=60, **overrides) -> GlatForConditionalGeneration:
    return GlatForConditionalGeneration(tiny_config(vocab_size, **overrides)).eval()


def tiny_marian(vocab_size=60) -> MarianMTModel:
    """An autoregressive model with the same vocabulary: the reranker of the NPD tests."""
    sizes = {name: value for name, value in TINY_SIZES.items() if name != "max_target_length"}
    config = MarianConfig(
        vocab_size=vocab_size,
        **sizes,
        pad_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
        forced_eos_token_id=None,
    )
    return MarianMTModel(config).eval()


def small_config(vocab_size: int) -> GlatConfig:
    """A model that memorises 64 real pairs in a few hundred steps: the learning tests' size."""
    sizes = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4)
    return GlatConfig(
        vocab_size=vocab_size,
        **sizes,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        dropout=0.0,
        max_target_length=64,
        max_position_embeddings=128,
    )


def load_script(relative_path: str) -> ModuleType:
    """Import a script of the repository ("training/benchmark.py") as a module, afresh on each call.

    It is registered in sys.modules as "training_benchmark": dataclasses look their module up there.
    """
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location("_".join(Path(relative_path).with_suffix("").parts), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def read_pairs(multi30k_dir: Path, split="train", count=64, source="en", target="de"):
    def lines(lang):
        with gzip.open(multi30k_dir / f"{split}.{lang}.gz", "rt", encoding="utf-8") as file:
            return [next(file).rstrip("\n") for _ in range(count)]

    return lines(source), lines(target)


def tokenizer_for(texts, vocab_size=400):
    return train_tokenizer(texts, vocab_size=vocab_size, min_frequency=1)
