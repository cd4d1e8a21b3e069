"""Bad input and safety: what happens, and what the error says.

Cases already tested elsewhere (the README table "Bad input and safety" lists where) are not repeated here.
"""

import logging
import pickle

import pytest
import torch
from helpers import read_pairs, tiny_model, tokenizer_for
from transformers import AutoModelForSeq2SeqLM, pipeline

import glat_hf  # noqa: F401  (registers "glat" with the Auto classes)
from glat_hf import GlatForConditionalGeneration

SOURCE = torch.tensor([[7, 8, 9, 10, 2], [11, 12, 2, 0, 0]])
LOADERS = [GlatForConditionalGeneration, AutoModelForSeq2SeqLM]


# ------------------------------------------------------------------- targets longer than the length classes
def _labels(lengths, pad=-100):
    longest = max(lengths)
    return torch.tensor([[9] * (n - 1) + [2] + [pad] * (longest - n) for n in lengths])


def test_training_on_a_target_longer_than_the_length_classes_is_a_clear_error():
    model = tiny_model().train()  # max_target_length 40: length classes 0..40; 63 decoder positions
    assert model.config.max_target_length == 40 and model.config.max_position_embeddings == 64
    with pytest.raises(ValueError, match=r"target of 41 tokens.*max_target_length=40\. Truncate the targets to 40"):
        model(SOURCE, labels=_labels([41, 3]))
    with pytest.raises(ValueError, match="target of 41 tokens"):  # also with the glancing trainer's two passes
        model(SOURCE, labels=_labels([5, 41], pad=0), glance_fn=lambda logits, labels, mask: (mask & False, labels))


def test_evaluating_on_a_longer_target_warns_and_counts_it_as_the_longest_class(caplog):
    """An evaluation loss may meet long references (train.py --do_predict with a saved model): no error there."""
    model = tiny_model(dropout=0.0).eval()
    with caplog.at_level(logging.WARNING):
        out = model(SOURCE, labels=_labels([45, 3]))
    assert "target of 45 tokens" in caplog.text and "max_target_length=40" in caplog.text
    expected = torch.nn.functional.cross_entropy(out.length_logits, torch.tensor([40, 3]))
    torch.testing.assert_close(out.length_loss, expected)


def test_target_of_exactly_max_target_length_trains():
    model = tiny_model()
    out = model(SOURCE, labels=_labels([40, 3]))
    assert torch.isfinite(out.loss) and out.length_logits.shape[-1] == 41


def test_ctc_has_no_length_classes_so_long_targets_are_not_refused():
    model = tiny_model(use_ctc=True)
    out = model(torch.full((1, 30), 9), labels=_labels([45]))  # 60 decoder positions for 45 target tokens
    assert torch.isfinite(out.loss)


# --------------------------------------------------------------------------- missing or corrupt weights
@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "model"
    tiny_model().save_pretrained(folder)
    return folder


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _cut_last_bytes(path):
    data = path.read_bytes()
    path.write_bytes(data[:-16])


def _garbage(path):
    path.write_bytes(b"this is not a safetensors file" * 50)


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _cut_last_bytes, _garbage, _empty], ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("loader", LOADERS, ids=lambda cls: cls.__name__)
def test_corrupt_weights_name_the_folder_and_the_file(saved, loader, damage):
    weights = saved / "model.safetensors"
    damage(weights)
    with pytest.raises(OSError) as error:
        loader.from_pretrained(saved)
    assert f"{weights} is corrupt or truncated" in str(error.value)


@pytest.mark.parametrize("loader", LOADERS, ids=lambda cls: cls.__name__)
def test_missing_weights_name_the_folder_and_the_file(saved, loader):
    (saved / "model.safetensors").unlink()
    with pytest.raises(OSError, match="has no model.safetensors") as error:
        loader.from_pretrained(saved)
    assert str(saved) in str(error.value)


def test_a_corrupt_shard_is_named(tmp_path):
    folder = tmp_path / "sharded"
    tiny_model().save_pretrained(folder, max_shard_size="20KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    _truncate(shards[1])
    with pytest.raises(OSError, match=f"{shards[1]} is corrupt or truncated"):
        AutoModelForSeq2SeqLM.from_pretrained(folder)


# ------------------------------------------------------------------------------ weights only as safetensors
class _Exploit:
    """A pickle that creates a file when it is unpickled: what a malicious pytorch_model.bin could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("loader", LOADERS, ids=lambda cls: cls.__name__)
def test_pickle_weights_are_never_loaded(saved, loader, tmp_path):
    marker = tmp_path / "unpickled"
    (saved / "model.safetensors").unlink()
    (saved / "pytorch_model.bin").write_bytes(pickle.dumps({"model.shared.weight": _Exploit(marker)}))
    with pytest.raises(OSError, match=r"has no model\.safetensors.*pytorch_model\.bin: pickle files"):
        loader.from_pretrained(saved)
    with pytest.raises(ValueError, match="use_safetensors=False is not supported"):
        loader.from_pretrained(saved, use_safetensors=False)
    with pytest.raises(ValueError, match="never from a pickle"):
        GlatForConditionalGeneration.from_pretrained(saved / "pytorch_model.bin", config=saved / "config.json")
    assert not marker.exists(), "a pickle was unpickled"


def test_saved_folder_holds_no_pickle(tmp_path, multi30k_dir):
    """save_pretrained writes the weights as safetensors only; nothing in the folder is a pickle or torch.save zip."""
    sources, targets = read_pairs(multi30k_dir, count=100)
    tokenizer = tokenizer_for(sources + targets, vocab_size=200)
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    names = sorted(path.name for path in tmp_path.iterdir())
    assert "model.safetensors" in names and not [
        name for name in names if name.endswith((".bin", ".pt", ".pth", ".pkl"))
    ]
    for path in tmp_path.iterdir():
        head = path.read_bytes()[:2]
        assert head != b"PK" and not head.startswith(b"\x80"), f"{path.name} looks like a pickle or a torch.save file"


# --------------------------------------------------------------------------------------- odd characters
def test_sentences_of_only_unseen_or_control_characters_translate(multi30k_dir):
    """Characters the tokenizer never saw become <unk> (tests/test_tokenization.py); a sentence of nothing
    else, control characters or a zero-width space still translates to a string, also inside a batch."""
    sources, targets = read_pairs(multi30k_dir, count=100)
    tokenizer = tokenizer_for(sources + targets, vocab_size=200)
    translator = pipeline("glat-translation", model=tiny_model(vocab_size=len(tokenizer)), tokenizer=tokenizer)
    odd = ["日本語のみ", "\x00\x07\x1b", "\u200b", "🐈🐈🐈", "A dog\tin the\u2028snow."]
    assert tokenizer.unk_token_id in tokenizer(odd[0])["input_ids"]
    out = translator(odd, batch_size=len(odd))
    assert len(out) == len(odd) and all(isinstance(item["translation_text"], str) for item in out)


def test_auto_class_runs_the_installed_code_not_the_files_beside_the_weights(saved):
    """After `import glat_hf`, no trust_remote_code is needed, and the .py files saved for it are never run:
    here they are replaced by code that fails, and loading still works with glat_hf's own classes."""
    assert (saved / "modeling_glat.py").is_file() and "auto_map" in (saved / "config.json").read_text()
    for name in ("modeling_glat.py", "configuration_glat.py"):
        (saved / name).write_text('raise RuntimeError("the copied code ran")\n')
    model = AutoModelForSeq2SeqLM.from_pretrained(saved)
    assert type(model) is GlatForConditionalGeneration and type(model).__module__ == "glat_hf.modeling_glat"
