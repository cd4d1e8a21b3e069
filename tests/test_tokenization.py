"""The joint BPE tokenizer: fixed special ids, save/load round trip, lossless decode on Multi30k."""

import gzip
import unicodedata
from itertools import islice

import pytest
from transformers import AutoTokenizer

from glat_hf.tokenization import BLANK_ID, EOS_ID, LENGTH_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, train_tokenizer

TRAIN_LINES_PER_LANGUAGE = 3000


def _head(path, count):
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in islice(handle, count)]


@pytest.fixture(scope="module")
def sentences(multi30k_dir):
    """A few thousand real English and German training sentences (German brings umlauts and ß)."""
    return {lang: _head(multi30k_dir / f"train.{lang}.gz", TRAIN_LINES_PER_LANGUAGE) for lang in ("en", "de")}


@pytest.fixture(scope="module")
def tokenizer(sentences):
    texts = (line for lang in ("en", "de") for line in sentences[lang])  # a generator: read once
    return train_tokenizer(texts, vocab_size=2000, model_max_length=128)


def test_special_tokens_have_fixed_ids(tokenizer):
    assert SPECIAL_TOKENS == ["<pad>", "<s>", "</s>", "<unk>", "<mask>", "<length>", "<blank>"]
    assert [tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS] == list(range(7))
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert (tokenizer.unk_token_id, tokenizer.mask_token_id) == (3, 4)
    assert tokenizer.length_token == "<length>" and tokenizer.length_token_id == LENGTH_ID == 5
    assert tokenizer.blank_token == "<blank>" and tokenizer.blank_token_id == BLANK_ID == 6
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 128
    assert len(tokenizer) == 2000


def test_every_sequence_ends_with_eos_also_labels(tokenizer):
    encoded = tokenizer("A dog runs.", text_target="Ein Hund rennt.")
    assert encoded["input_ids"][-1] == EOS_ID
    assert encoded["labels"][-1] == EOS_ID
    assert encoded["input_ids"].count(EOS_ID) == 1
    pair = tokenizer("A dog.", "Ein Hund.")
    assert pair["input_ids"].count(EOS_ID) == 2 and pair["input_ids"][-1] == EOS_ID


def test_padding_is_right_with_pad_id(tokenizer):
    batch = tokenizer(["A dog.", "A small dog runs across the green grass."], padding=True)
    short, long = batch["input_ids"]
    assert len(short) == len(long)
    assert short[-1] == PAD_ID and long[-1] == EOS_ID
    assert batch["attention_mask"][0][-1] == 0


def test_decode_gives_back_the_sentence(tokenizer, sentences):
    for lang in ("en", "de"):
        for sentence in sentences[lang]:
            ids = tokenizer(sentence)["input_ids"]
            assert tokenizer.decode(ids, skip_special_tokens=True) == sentence


def test_decode_of_unseen_validation_sentences(tokenizer, multi30k_dir):
    checked = 0
    for sentence in _head(multi30k_dir / "val.de.gz", 200):
        ids = tokenizer(sentence)["input_ids"]
        if UNK_ID in ids:  # a character never seen in training cannot come back
            continue
        # NFKC is part of the tokenizer: validation has a no-break space that comes back as a space
        assert tokenizer.decode(ids, skip_special_tokens=True) == unicodedata.normalize("NFKC", sentence)
        checked += 1
    assert checked > 150


def test_skip_special_tokens_drops_all_seven(tokenizer):
    word_ids = tokenizer("Hund", add_special_tokens=False)["input_ids"]
    ids = list(range(7)) + word_ids + list(reversed(range(7)))
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Hund"
    assert set(range(7)) <= set(tokenizer.all_special_ids)


def test_unseen_characters_become_unk(tokenizer):
    ids = tokenizer("Ein Hund 日本 ☃")["input_ids"]
    assert UNK_ID in ids
    assert tokenizer.decode(ids, skip_special_tokens=True).startswith("Ein Hund")


def test_save_and_load_round_trip(tokenizer, sentences, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = sentences["de"][:50] + sentences["en"][:50]
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert loaded("a", text_target="b")["labels"] == tokenizer("a", text_target="b")["labels"]
    assert loaded.blank_token == "<blank>" and loaded.blank_token_id == BLANK_ID
    assert loaded.length_token == "<length>" and loaded.length_token_id == LENGTH_ID
    assert loaded.all_special_ids == tokenizer.all_special_ids
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.padding_side, loaded.model_max_length) == ("right", 128)


def test_rejects_empty_texts_and_tiny_vocabulary():
    with pytest.raises(ValueError, match="empty"):
        train_tokenizer(iter([]))
    with pytest.raises(ValueError, match="vocab_size=10"):
        train_tokenizer(["ein Hund"], vocab_size=10)
    with pytest.raises(TypeError, match="text number 1"):
        train_tokenizer(["ein Hund", 3])
