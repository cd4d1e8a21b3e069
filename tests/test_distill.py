"""training/distill.py on a handful of real Multi30k pairs with a tiny teacher that has memorised them."""

import json

import pytest
import torch
from helpers import load_script, read_pairs, tokenizer_for
from transformers import MarianConfig, MarianMTModel

from glat_hf.data import load_parallel_folder, read_translation_jsonl

distill = load_script("training/distill.py")

COUNT, SHARD, BATCH, BEAMS = 12, 5, 4, 2  # three shards: 5 + 5 + 2 sentences


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, multi30k_dir):
    """A {split}.{lang} folder (train = val = 12 real pairs, plus a test split) and a teacher that memorised train."""
    sources, targets = read_pairs(multi30k_dir, count=COUNT)
    folder = tmp_path_factory.mktemp("data")
    for split in ("train", "val", "test_2016_flickr"):
        (folder / f"{split}.en").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
        (folder / f"{split}.de").write_text("".join(t + "\n" for t in targets), encoding="utf-8")

    tokenizer = tokenizer_for(sources + targets)
    config = MarianConfig(
        vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        forced_eos_token_id=None,
        dropout=0.0,
    )
    torch.manual_seed(0)
    teacher = MarianMTModel(config)
    batch = tokenizer(sources, text_target=targets, padding=True, return_tensors="pt")
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    for _ in range(150):  # loss 6.0 -> 0.02: memorised
        loss = teacher(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    teacher.generation_config.max_length = 48
    teacher_dir = tmp_path_factory.mktemp("teacher")
    teacher.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    return {"folder": folder, "teacher": teacher_dir, "sources": sources, "targets": targets}


def arguments(corpus, output_dir, *extra):
    return [
        "--teacher",
        str(corpus["teacher"]),
        "--data_folder",
        str(corpus["folder"]),
        "--output_dir",
        str(output_dir),
        "--num_beams",
        str(BEAMS),
        "--batch_size",
        str(BATCH),
        "--shard_size",
        str(SHARD),
        "--device",
        "cpu",
        *extra,
    ]


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("distilled")
    results = distill.main(arguments(corpus, output_dir))
    return output_dir, results


def test_distilled_targets_are_the_teachers_beam_translations(corpus, uninterrupted):
    output_dir, results = uninterrupted
    model, tokenizer = distill.load_teacher(str(corpus["teacher"]), "cpu")
    expected = []
    for source in corpus["sources"]:  # one sentence at a time: no padding, no batching effects
        ids = model.generate(**tokenizer([source], return_tensors="pt"), num_beams=BEAMS)
        expected.append(tokenizer.decode(ids[0], skip_special_tokens=True))
    data = load_parallel_folder(output_dir, "en", "de")
    assert set(data) == {"train", "val", "test_2016_flickr"}  # the other splits are linked beside the distilled one
    train = data["train"].flatten()
    assert train["translation.en"] == corpus["sources"]
    assert train["translation.de"] == expected
    assert data["val"].flatten()["translation.de"] == corpus["targets"]  # evaluation keeps the original references
    # the teacher memorised its data, so most distilled targets are the references and its BLEU is high
    assert sum(h == r for h, r in zip(expected, corpus["targets"])) >= COUNT * 3 // 4
    assert results["teacher_bleu"] > 70 and results["teacher_bleu_signature"].startswith("nrefs:1")
    saved = json.loads((output_dir / distill.RESULTS_FILE).read_text())
    assert saved["teacher_bleu"] == results["teacher_bleu"] and saved["sentences"] == COUNT


def test_an_interrupted_run_resumes_from_its_last_finished_shard(corpus, uninterrupted, tmp_path, monkeypatch):
    output_dir = tmp_path / "distilled"
    translate, calls = distill.translate, []

    def interrupted_at_the_second_shard(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return translate(*args, **kwargs)

    monkeypatch.setattr(distill, "translate", interrupted_at_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        distill.main(arguments(corpus, output_dir))
    shards = sorted(path.name for path in (output_dir / distill.SHARDS).iterdir())
    assert shards == ["train.00000.de"]
    (output_dir / distill.SHARDS / "train.00001.de.partial").write_text("half a shard\n")  # a kill mid-write

    calls.clear()
    monkeypatch.setattr(
        distill, "translate", lambda *args, **kwargs: calls.append(len(args[2])) or translate(*args, **kwargs)
    )
    distill.main(arguments(corpus, output_dir))
    assert calls == [SHARD, COUNT - 2 * SHARD, COUNT]  # shards 1 and 2, then the validation set: shard 0 is not redone
    for name in ("train.en", "train.de"):
        assert (output_dir / name).read_text() == (uninterrupted[0] / name).read_text()


def test_resuming_with_other_settings_is_refused(corpus, uninterrupted):
    output_dir, _ = uninterrupted
    args = arguments(corpus, output_dir)
    args[args.index("--num_beams") + 1] = "3"
    with pytest.raises(ValueError, match=r"other settings \(num_beams: 2 then, 3 now\)"):
        distill.main(args)


def test_json_lines_in_json_lines_out(corpus, uninterrupted, tmp_path):
    train_file = tmp_path / "train.jsonl"
    records = [{"translation": {"en": s, "de": t}} for s, t in zip(corpus["sources"], corpus["targets"])]
    train_file.write_text("".join(json.dumps(record) + "\n" for record in records))
    output_dir = tmp_path / "out"
    args = ["--train_file", str(train_file), *arguments(corpus, output_dir)[:2], *arguments(corpus, output_dir)[4:]]
    results = distill.main(args)
    assert "teacher_bleu" not in results  # no --validation_file given
    distilled = read_translation_jsonl(output_dir / "train.jsonl", "en", "de").flatten()
    assert distilled["translation.en"] == corpus["sources"]
    assert distilled["translation.de"] == (uninterrupted[0] / "train.de").read_text().split("\n")[:-1]


def test_bad_arguments_are_named(corpus, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a saved model folder"):
        distill.main(
            ["--teacher", str(tmp_path), "--data_folder", str(corpus["folder"]), "--output_dir", str(tmp_path / "o")]
        )
    with pytest.raises(ValueError, match="is the data folder"):
        distill.main(arguments(corpus, corpus["folder"]))
    with pytest.raises(ValueError, match="--num_beams must be at least 1"):
        distill.main(arguments(corpus, tmp_path / "o", "--num_beams", "0"))
