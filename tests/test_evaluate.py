"""training/evaluate_model.py: result rows, and the length predictor's report, on a few real Multi30k pairs."""

import json

import pytest
import torch
from helpers import load_script, read_pairs, tiny_marian, tiny_model, tokenizer_for

from glat_hf.metrics import corpus_bleu
from glat_hf.modeling_glat import LENGTH_PRIOR_WEIGHT

evaluate_model = load_script("training/evaluate_model.py")

COUNT = 16


def saved_model_and_data(multi30k_dir, tmp_path, offset=True):
    """A tiny GLAT whose length predictor says "as long as the source" (offset) or 12, saved with its tokenizer,
    and a data folder of COUNT real test pairs."""
    sources, targets = read_pairs(multi30k_dir, split="test_2016_flickr", count=COUNT)
    data = tmp_path / "data"
    data.mkdir()
    for lang, lines in (("en", sources), ("de", targets)):
        (data / f"test_2016_flickr.{lang}").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    tokenizer = tokenizer_for(sources + targets)
    model = tiny_model(len(tokenizer), predict_length_offset=offset, max_target_length=60)
    with torch.no_grad():  # every class but one scores -10: the offset 0 ("as long as the source") or length 12
        model.length_head.weight.zero_()
        model.length_head.bias.fill_(-10.0)
        model.length_head.bias[model.config.max_source_positions if offset else 12] = 10.0
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    return model, tokenizer, sources, targets, data


def evaluate(tmp_path, data, *flags):
    return evaluate_model.main(
        [str(tmp_path / "model"), "--system", "GLAT", "--data", "raw", "--results", str(tmp_path / "results.json")]
        + ["--data_folder", str(data), "--test_splits", "test_2016_flickr", "--device", "cpu", *flags]
    )


@pytest.mark.parametrize("offset", [True, False])
def test_rows_carry_bleu_of_the_written_translations_and_the_length_predictor_report(
    multi30k_dir, tmp_path, offset, monkeypatch
):
    monkeypatch.setenv("GLAT_DATA_DIR", str(tmp_path))  # the row's command names the data folder through it
    model, tokenizer, sources, targets, data = saved_model_and_data(multi30k_dir, tmp_path, offset)
    results = tmp_path / "results.json"
    rows = evaluate(tmp_path, data)
    assert json.loads(results.read_text()) == rows and len(rows) == 1
    row = rows[0]
    written = (tmp_path / "model" / "predictions" / "GLAT.raw.test_2016_flickr.txt").read_text(encoding="utf-8")
    assert row["bleu"] == round(corpus_bleu(written.split("\n")[:-1], targets)["score"], 2)

    predicted = [len(ids) for ids in tokenizer(sources)["input_ids"]] if offset else [12] * COUNT
    reference = [len(ids) for ids in tokenizer(text_target=targets)["input_ids"]]
    report = row["length_prediction"]
    assert report["exact"] == pytest.approx(sum(p == r for p, r in zip(predicted, reference)) / COUNT, abs=1e-4)
    assert report["within_2"] == pytest.approx(
        sum(abs(p - r) <= 2 for p, r in zip(predicted, reference)) / COUNT, abs=1e-4
    )
    assert report["distinct_lengths"] == len(set(predicted))
    assert report["mean_reference"] == pytest.approx(sum(reference) / COUNT, abs=0.01)
    # the written translations' lengths, in tokens with </s> as the references': the same report
    lines = written.split("\n")[:-1]
    output = [len(ids) for ids in tokenizer(text_target=lines)["input_ids"]]
    assert row["output_lengths"]["exact"] == pytest.approx(sum(o == r for o, r in zip(output, reference)) / COUNT)
    assert row["output_lengths"]["mean_predicted"] == pytest.approx(sum(output) / COUNT, abs=0.01)
    # BLEU by source length (paper Figure 4): every sentence in one bucket, each bucket's BLEU its sentences'
    by_length = row["bleu_by_length"]
    assert [bucket["bucket"] for bucket in by_length] == ["1-10", "11-15", "16-20", ">20"]
    assert sum(bucket["count"] for bucket in by_length) == COUNT
    short = [index for index, source in enumerate(sources) if len(source.split()) <= 10]
    expected = corpus_bleu([lines[index] for index in short], [targets[index] for index in short])["score"]
    assert by_length[0]["count"] == len(short) and by_length[0]["bleu"] == round(expected, 2)

    # Oracle length: the same model decoding at the reference lengths, through generate's target_lengths.
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    oracle = model.eval().generate(**batch, target_lengths=torch.tensor(reference))
    hypotheses = [" ".join(text.split()) for text in tokenizer.batch_decode(oracle, skip_special_tokens=True)]
    assert row["oracle_length_bleu"] == round(corpus_bleu(hypotheses, targets)["score"], 2)
    assert row["method"] is None and row["seed"] is None and row["test_set"] == "test_2016_flickr"
    assert "--data_folder $GLAT_DATA_DIR/data " in row["command"] and str(tmp_path) not in row["command"]
    glance = row["glanced_accuracy"]
    assert glance["fraction"] == 0.25 and 0.0 <= glance["accuracy"] <= 1.0 and 0.0 <= glance["accuracy_glanced"] <= 1.0


def test_oracle_lengths_from_other_translations(multi30k_dir, tmp_path):
    """--oracle_lengths FILE: the oracle pass decodes at the lengths of FILE's lines (the teacher's translations,
    say), and the length predictor is also reported against them; a file that does not fit stops the run first."""
    model, tokenizer, sources, targets, data = saved_model_and_data(multi30k_dir, tmp_path)
    others = [" ".join(target.split()[: 2 + i % 5]) for i, target in enumerate(targets)]  # shorter, all different
    (tmp_path / "teacher.test_2016_flickr.de").write_text("".join(line + "\n" for line in others), encoding="utf-8")
    (row,) = evaluate(tmp_path, data, "--oracle_lengths", str(tmp_path / "teacher.{split}.de"))

    lengths = [len(ids) for ids in tokenizer(text_target=others)["input_ids"]]
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    oracle = model.eval().generate(**batch, target_lengths=torch.tensor(lengths))
    hypotheses = [" ".join(text.split()) for text in tokenizer.batch_decode(oracle, skip_special_tokens=True)]
    assert row["oracle_length_bleu"] == round(corpus_bleu(hypotheses, targets)["score"], 2)
    assert row["oracle_lengths"] == str(tmp_path / "teacher.test_2016_flickr.de")
    predicted = [len(ids) for ids in tokenizer(sources)["input_ids"]]  # the offset predictor says "the source's"
    assert row["oracle_length_prediction"]["mean_reference"] == pytest.approx(sum(lengths) / COUNT, abs=0.01)
    assert row["oracle_length_prediction"]["exact"] == pytest.approx(
        sum(p == n for p, n in zip(predicted, lengths)) / COUNT, abs=1e-4
    )
    reference = [len(ids) for ids in tokenizer(text_target=targets)["input_ids"]]
    assert row["length_prediction"]["mean_reference"] == pytest.approx(sum(reference) / COUNT, abs=0.01)

    (tmp_path / "short.test_2016_flickr.de").write_text("one line\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="has 1 lines; the test set has 16 sentences"):
        evaluate(tmp_path, data, "--oracle_lengths", str(tmp_path / "short.{split}.de"))
    with pytest.raises(SystemExit, match="cannot read .*missing.test_2016_flickr.de"):
        evaluate(tmp_path, data, "--oracle_lengths", str(tmp_path / "missing.{split}.de"))


def test_npd_rows_rank_with_the_length_prior_they_state(multi30k_dir, tmp_path):
    """--length_prior_weight W (default LENGTH_PRIOR_WEIGHT, whatever the model's generation config says) is the
    weight NPD's self rerank used for the row's translations, and the row says it."""
    model, tokenizer, sources, targets, data = saved_model_and_data(multi30k_dir, tmp_path, offset=False)
    with torch.no_grad():  # a broad length predictor: lengths 10..16, 16 likeliest, so the prior can matter
        model.length_head.bias[10:17] = torch.arange(7.0)
    model.generation_config.length_prior_weight = 0.0  # a saved model without the prior: the flag decides
    model.save_pretrained(tmp_path / "model")
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    written = tmp_path / "model" / "predictions" / "GLAT.raw.test_2016_flickr.txt"
    translations = []
    for flags, weight in (
        ((), LENGTH_PRIOR_WEIGHT),
        (("--length_prior_weight", "0"), 0.0),
        (("--length_prior_weight", "2"), 2.0),
    ):
        (row,) = evaluate(tmp_path, data, "--length_beam_size", "5", *flags)
        assert row["generation"]["length_prior_weight"] == weight
        ids = model.eval().generate(**batch, length_beam_size=5, length_prior_weight=weight)
        expected = [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]
        translations.append(written.read_text(encoding="utf-8").split("\n")[:-1])
        assert [" ".join(line.split()) for line in translations[-1]] == [" ".join(t.split()) for t in expected]
    assert translations[1] != translations[2]  # the weight changed what NPD kept
    tiny_marian(len(tokenizer)).save_pretrained(tmp_path / "ar")  # an autoregressive model has no length prior
    tokenizer.save_pretrained(tmp_path / "ar")
    with pytest.raises(ValueError, match="are for GLAT models"):
        evaluate_model.main(
            [
                str(tmp_path / "ar"),
                "--system",
                "AR",
                "--data",
                "raw",
                "--results",
                str(tmp_path / "r.json"),
                "--data_folder",
                str(data),
                "--length_prior_weight",
                "0",
            ]
        )


def test_glanced_accuracy_sees_the_glanced_words(multi30k_dir):
    """With no words glanced the two accuracies agree; with some, a decoder that mixes positions predicts the others
    differently."""
    sources, targets = read_pairs(multi30k_dir, split="test_2016_flickr", count=COUNT)
    tokenizer = tokenizer_for(sources + targets)
    torch.manual_seed(0)
    model = tiny_model(len(tokenizer), max_target_length=60).eval()
    none = evaluate_model.glanced_accuracy(model, tokenizer, sources, targets, batch_size=8, fraction=0.0)
    assert none["accuracy"] == none["accuracy_glanced"]
    # Nothing glanced: the token accuracy of generate at the reference lengths, over every position.
    references = tokenizer(text_target=targets)["input_ids"]
    oracle = model.generate(
        **tokenizer(sources, return_tensors="pt", padding=True),
        target_lengths=torch.tensor(list(map(len, references))),
    )
    right = sum(sum(int(t == r) for t, r in zip(ids, target)) for ids, target in zip(oracle.tolist(), references))
    assert none["accuracy"] == round(right / sum(map(len, references)), 4)
    with torch.no_grad():  # a random decoder barely mixes positions: make its self-attention carry the glanced words
        for layer in model.model.decoder.layers:
            layer.self_attn.out_proj.weight.mul_(50.0)
    half = evaluate_model.glanced_accuracy(model, tokenizer, sources, targets, batch_size=8, fraction=0.5)
    assert half["accuracy"] != half["accuracy_glanced"]


def test_a_re_evaluated_row_keeps_its_place(tmp_path):
    path = tmp_path / "results.json"
    row = lambda system, bleu: {"system": system, "data": "raw", "test_set": "t", "bleu": bleu}  # noqa: E731
    evaluate_model.merge_rows(path, [row("A", 1.0), row("B", 2.0)])
    assert evaluate_model.merge_rows(path, [row("A", 3.0), row("C", 4.0)]) == [
        row("A", 3.0),
        row("B", 2.0),
        row("C", 4.0),
    ]
    assert json.loads(path.read_text()) == [row("A", 3.0), row("B", 2.0), row("C", 4.0)]


def test_a_checkpoint_row_takes_its_own_steps_and_the_seed_of_its_run(tmp_path):
    """train.py writes training_args.json into the run folder when training starts, not into checkpoints: a
    checkpoint's row reads the seed there, and its own steps (not the run's final steps or wall time)."""
    run = tmp_path / "run"
    (run / "checkpoint-525").mkdir(parents=True)
    (run / "training_args.json").write_text(json.dumps({"seed": 43}))
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 3150}))
    (run / "train_results.json").write_text(json.dumps({"train_runtime": 3600.0}))
    (run / "checkpoint-525" / "trainer_state.json").write_text(json.dumps({"global_step": 525}))
    assert evaluate_model.training_facts(run / "checkpoint-525") == {
        "steps": 525,
        "seed": 43,
        "train_wall_time_s": None,
    }
    assert evaluate_model.training_facts(run) == {"steps": 3150, "seed": 43, "train_wall_time_s": 3600.0}


def test_the_table_prints_only_the_systems_asked_for(tmp_path, capsys):
    path = tmp_path / "results.json"
    row = lambda system, bleu: {  # noqa: E731
        **{"system": system, "data": "distilled", "test_set": "t", "bleu": bleu, "repetition_ratio": 0.1},
        **{"hardware": "cpu", "signature": "s", "command": f"train {system}"},
    }
    path.write_text(json.dumps([row("GLAT, seed 42", 29.19), row("NAT-base, seed 42", 26.24), row("GLAT, s43", 1.0)]))
    evaluate_model.main(["--table", str(path), "--systems", "seed 42$"])
    table = capsys.readouterr().out
    assert "| GLAT, seed 42 | distilled | 29.19 |" in table and "| NAT-base, seed 42 | distilled | 26.24 |" in table
    assert "s43" not in table
    with pytest.raises(SystemExit, match="matches no row"):
        evaluate_model.main(["--table", str(path), "--systems", "AR"])
    with pytest.raises(SystemExit):
        evaluate_model.main(["--table", str(path), "--systems", "(GLAT"])
    assert "--systems '(GLAT' is not a regular expression" in capsys.readouterr().err


def test_length_buckets_must_increase(capsys):
    with pytest.raises(SystemExit):
        evaluate_model.main(
            ["model", "--system", "S", "--data", "raw", "--results", "r.json", "--length_buckets", "15", "10"]
        )
    assert "--length_buckets must be positive and increasing, got 15 10" in capsys.readouterr().err


def test_the_table_by_length_prints_each_bucket_of_the_rows_that_have_them(tmp_path, capsys):
    path = tmp_path / "results.json"
    by_length = [{"bucket": "1-10", "count": 3, "bleu": 30.0}, {"bucket": ">10", "count": 0, "bleu": None}]
    rows = [{"system": "GLAT", "data": "raw", "test_set": "t", "bleu": 29.0, "bleu_by_length": by_length}]
    path.write_text(json.dumps(rows + [{"system": "NAT-base", "data": "raw", "test_set": "t", "bleu": 26.0}]))
    evaluate_model.main(["--table", str(path), "--by_length"])
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| system | data | test set | 1-10 words | >10 words |"
    assert table[2:] == ["| GLAT | raw | t | 30.00 (3) |  |"]  # NAT-base has no buckets; an empty one no BLEU
    with pytest.raises(SystemExit, match="no row of .* has bleu_by_length"):
        evaluate_model.main(["--table", str(path), "--systems", "NAT", "--by_length"])
