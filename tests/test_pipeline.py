import logging

import pytest
from helpers import read_pairs, tiny_model, tokenizer_for
from transformers import pipeline

from glat_hf import GlatTranslationPipeline


@pytest.fixture(scope="module")
def translator(multi30k_dir):
    sources, targets = read_pairs(multi30k_dir, count=200)
    tokenizer = tokenizer_for(sources + targets, vocab_size=300)
    model = tiny_model(vocab_size=len(tokenizer))
    return pipeline("glat-translation", model=model, tokenizer=tokenizer), sources


def test_call_shapes_match_the_translation_task(translator):
    pipe, sources = translator
    assert isinstance(pipe, GlatTranslationPipeline)
    single = pipe(sources[0])
    assert isinstance(single, list) and len(single) == 1 and isinstance(single[0]["translation_text"], str)
    many = pipe(sources[:5], batch_size=2)
    assert len(many) == 5 and all(set(item) == {"translation_text"} for item in many)


def test_batched_equals_unbatched_and_order_is_kept(translator):
    pipe, sources = translator
    one_by_one = [pipe(text)[0]["translation_text"] for text in sources[:7]]
    batched = [item["translation_text"] for item in pipe(sources[:7], batch_size=3)]
    assert batched == one_by_one


def test_generate_kwargs_pass_through(translator):
    pipe, sources = translator
    direct = pipe.model.generate(**pipe.tokenizer(sources[:1], return_tensors="pt"), length_beam_size=4)
    expected = pipe.tokenizer.decode(direct[0], skip_special_tokens=True).strip()
    assert pipe(sources[0], length_beam_size=4)[0]["translation_text"] == expected
    with pytest.raises(ValueError, match="length_beam_size"):
        pipe(sources[0], length_beam_size=0)


def test_empty_sentences_translate_to_empty_text_inside_a_batch(translator):
    pipe, sources = translator
    out = pipe(["", sources[0], "   "], batch_size=3)
    assert out[0]["translation_text"] == "" and out[2]["translation_text"] == ""
    assert out[1] == pipe(sources[0])[0]


def test_too_long_input_is_truncated_with_a_warning(translator, caplog):
    pipe, sources = translator
    very_long = " ".join(sources[:20])  # far more than the 63 source positions of the tiny model
    with caplog.at_level(logging.WARNING):
        out = pipe(very_long)
    assert isinstance(out[0]["translation_text"], str)
    assert "truncated" in caplog.text


def test_unseen_characters_do_not_crash(translator):
    pipe, _ = translator
    assert isinstance(pipe("Ein 猫 sitzt ☃ auf 🐈.")[0]["translation_text"], str)


def test_non_string_input_is_rejected(translator):
    pipe, _ = translator
    with pytest.raises(TypeError, match="string"):
        pipe([1, 2])
