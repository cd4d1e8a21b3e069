"""glat_hf.ctranslate2_baseline: a MarianMTModel that has memorised 64 real Multi30k pairs, converted to CTranslate2.

The pad-id-0 vocabulary converts (CTranslate2's Marian loader expects <pad> last); fp32 greedy search is
transformers' token for token, one sentence at a time and in padded batches; int8 still translates; as GLAT's NPD
reranker it scores candidates as the transformers model does.
"""

import importlib
import sys

import pytest
import torch
from helpers import read_pairs, tiny_model, tokenizer_for

from glat_hf.baseline import marian_baseline, marian_baseline_config
from glat_hf.translation import translate

pytest.importorskip("ctranslate2")
from glat_hf.ctranslate2_baseline import CTranslate2Translator, convert_marian, main  # noqa: E402

COUNT, BATCH = 64, 16
SIZES = dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2)
SIZES.update(encoder_ffn_dim=128, decoder_ffn_dim=128, dropout=0.0)


@pytest.fixture(scope="module")
def converted(tmp_path_factory, multi30k_dir):
    """The trained model, its sources and references, and its fp32 and int8 CTranslate2 folders."""
    sources, targets = read_pairs(multi30k_dir, count=400)
    shortest = sorted(range(400), key=lambda i: len(sources[i]) + len(targets[i]))[:COUNT]  # quick to memorise
    sources, targets = [sources[i] for i in shortest], [targets[i] for i in shortest]
    tokenizer = tokenizer_for(sources + targets, vocab_size=600)
    assert tokenizer.pad_token_id == 0  # the case CTranslate2's own Marian loader cannot convert
    config = marian_baseline_config("multi30k", tokenizer, max_position_embeddings=64)
    config.update(SIZES)
    torch.manual_seed(0)
    model = marian_baseline(config, max_target_length=48)
    batch = tokenizer(sources, text_target=targets, padding=True, return_tensors="pt")
    batch["labels"][batch["labels"] == tokenizer.pad_token_id] = -100
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a few seconds; two threads on a busy 2-core machine can take minutes
    try:
        for _ in range(150):  # loss 6.4 -> 0.02: memorised
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    assert model.model.decoder.embed_tokens.weight[0].any()  # tied to the output layer: <pad>'s row is not zero
    folder = tmp_path_factory.mktemp("marian")
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
    fp32 = convert_marian(folder / "hf", folder / "fp32")
    int8 = convert_marian(folder / "hf", folder / "int8", quantization="int8")
    return dict(
        model=model, tokenizer=tokenizer, sources=sources, targets=targets, folder=folder, fp32=fp32, int8=int8
    )


def test_fp32_greedy_is_transformers_token_for_token(converted):
    model, tokenizer, sources = converted["model"], converted["tokenizer"], converted["sources"]
    engine = CTranslate2Translator(converted["fp32"], intra_threads=1)
    assert engine.config.pad_token_id == 0 and engine.device == torch.device("cpu")
    with torch.inference_mode():
        for text in sources[:16]:  # one at a time: no padding
            inputs = tokenizer([text], return_tensors="pt")
            assert engine.generate(**inputs).tolist() == model.generate(**inputs).tolist(), text
        for start in range(0, COUNT, BATCH):  # padded batches, as transformers pads them
            inputs = tokenizer(sources[start : start + BATCH], padding=True, return_tensors="pt")
            expected = model.generate(**inputs)
            assert torch.equal(engine.generate(**inputs), expected)
            assert not inputs["attention_mask"].all(), "batches of one length test no padding"
        lengths = dict(min_new_tokens=9, max_new_tokens=9)  # the benchmark's fixed length: <eos> forced last
        assert torch.equal(engine.generate(**inputs, **lengths), model.generate(**inputs, **lengths))

    # translate() takes it for the model; the model translates real sentences: most of its memorised references
    hypotheses = translate(engine, engine.tokenizer, sources, batch_size=BATCH)
    assert hypotheses == translate(model, tokenizer, sources, batch_size=BATCH)
    assert sum(h == t for h, t in zip(hypotheses, converted["targets"])) >= COUNT // 2


def test_pad_stays_barred_as_transformers_bars_it(converted):
    model, tokenizer, folder = converted["model"], converted["tokenizer"], converted["folder"]
    with torch.no_grad():
        model.final_logits_bias[0, tokenizer.pad_token_id] += 30.0  # <pad> the likeliest token everywhere
    try:
        model.save_pretrained(folder / "pad_likely")
        tokenizer.save_pretrained(folder / "pad_likely")
        engine = CTranslate2Translator(convert_marian(folder / "pad_likely", folder / "pad_likely_ct2"))
        inputs = tokenizer(converted["sources"][:BATCH], padding=True, return_tensors="pt")
        with torch.inference_mode():
            expected = model.generate(**inputs)
        assert torch.equal(engine.generate(**inputs), expected)
    finally:
        with torch.no_grad():
            model.final_logits_bias[0, tokenizer.pad_token_id] -= 30.0


def test_beam_search_runs_and_mostly_agrees(converted):
    engine = CTranslate2Translator(converted["fp32"], intra_threads=1)
    sources, model, tokenizer = converted["sources"][:BATCH], converted["model"], converted["tokenizer"]
    beam = translate(engine, engine.tokenizer, sources, num_beams=4)
    expected = translate(model, tokenizer, sources, num_beams=4)  # length scores may differ in the details
    assert sum(a == b for a, b in zip(beam, expected)) >= BATCH * 3 // 4


def test_int8_translates_and_is_smaller(converted):
    engine = CTranslate2Translator(converted["int8"], compute_type="int8", intra_threads=1)
    hypotheses = translate(engine, engine.tokenizer, converted["sources"], batch_size=BATCH)
    assert len(hypotheses) == COUNT and all(hypotheses)  # sentences; they may differ from fp32's
    assert sum(h == t for h, t in zip(hypotheses, converted["targets"])) >= COUNT // 4
    size = {name: (converted[name] / "model.bin").stat().st_size for name in ("fp32", "int8")}
    assert size["int8"] < 0.6 * size["fp32"]


def test_loading_leaves_torchs_thread_count_alone(converted):
    """CTranslate2 sets the OpenMP thread count of the thread that loads it, which is torch's: the benchmark's
    engines would then run with each other's thread counts."""
    threads = torch.get_num_threads()
    try:
        for wanted in (1, 2):
            torch.set_num_threads(wanted)
            translator = CTranslate2Translator(converted["int8"], intra_threads=3 - wanted)
            translator.generate(**converted["tokenizer"](converted["sources"][:2], padding=True, return_tensors="pt"))
            assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(threads)


def test_generate_refuses_what_it_cannot_do(converted):
    engine = CTranslate2Translator(converted["fp32"], intra_threads=1)
    inputs = converted["tokenizer"](["A dog ."], return_tensors="pt")
    with pytest.raises(TypeError, match="do_sample"):
        engine.generate(**inputs, do_sample=True)
    with pytest.raises(TypeError, match="length_beam_size"):
        engine.generate(**inputs, length_beam_size=3)


def test_a_folder_that_is_not_a_marian_model_is_refused(converted, tmp_path):
    tiny_model(60).save_pretrained(tmp_path / "glat")
    with pytest.raises(ValueError, match="GlatConfig model; only a MarianMTModel converts"):
        convert_marian(tmp_path / "glat", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a saved MarianMTModel folder"):
        convert_marian(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="must not be the model's folder"):
        convert_marian(converted["folder"] / "hf", converted["folder"] / "hf")
    assert (converted["folder"] / "hf" / "config.json").is_file()


def test_without_ctranslate2_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import ctranslate2 now fails
    monkeypatch.delitem(sys.modules, "glat_hf.ctranslate2_baseline")
    with pytest.raises(ImportError, match=r"pip install glat-hf\[bench\]"):
        importlib.import_module("glat_hf.ctranslate2_baseline")


def test_candidate_scores_are_the_transformers_rerankers(converted):
    """NPD's rerank score (mean log-probability by teacher forcing) from CTranslate2 equals reranker_scores with
    the transformers model: candidates that end in </s> (CTranslate2 appends its own), one cut before its end, one
    empty, two candidates a source, padded sources."""
    model, tokenizer, sources = converted["model"], converted["tokenizer"], converted["sources"][:4]
    engine = CTranslate2Translator(converted["fp32"], intra_threads=1)
    glat = tiny_model(len(tokenizer))  # reranker_scores reads its config (pad id) only
    inputs = tokenizer(sources, padding=True, return_tensors="pt")
    assert not inputs["attention_mask"].all()
    labels = tokenizer(text_target=converted["targets"][:4] + converted["sources"][:4], padding=True)["input_ids"]
    candidates = torch.tensor(labels)[[0, 4, 1, 5, 2, 6, 3, 7]]  # a reference and a wrong sentence per source
    eos = tokenizer.eos_token_id
    candidates[3, (candidates[3] == eos).nonzero()[0, 0] - 2 :] = 0  # cut: no </s>
    candidates[7] = 0  # empty
    assert (candidates == eos).sum() == 6
    with torch.inference_mode():
        expected = glat.reranker_scores(model, inputs["input_ids"], inputs["attention_mask"], candidates, 2)
        scores = engine.candidate_scores(inputs["input_ids"], inputs["attention_mask"], candidates, 2)
        assert torch.allclose(scores, expected, atol=1e-4), (scores, expected)
        assert (scores[0:6:2] > scores[1:6:2]).all()  # a memorised reference wins over another sentence

        # NPD reranked by CTranslate2 keeps the candidates the transformers model keeps, not GLAT's own choice
        torch.manual_seed(0)
        glat = tiny_model(len(tokenizer))
        reranked = glat.generate(**inputs, length_beam_size=4, reranker=engine)
        assert torch.equal(reranked, glat.generate(**inputs, length_beam_size=4, reranker=model))
        assert not torch.equal(reranked, glat.generate(**inputs, length_beam_size=4))


def test_a_reranker_of_another_vocabulary_is_refused(converted):
    engine = CTranslate2Translator(converted["fp32"], intra_threads=1)
    glat = tiny_model(len(converted["tokenizer"]) + 1)
    inputs = converted["tokenizer"](["A dog ."], return_tensors="pt")
    with pytest.raises(ValueError, match="reranker's vocabulary"):
        glat.generate(**inputs, length_beam_size=2, reranker=engine)


def test_the_conversion_command(converted, tmp_path, capsys):
    main([str(converted["folder"] / "hf"), str(tmp_path / "ct2"), "--int8"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "ct2")
    assert (tmp_path / "ct2" / "model.bin").stat().st_size < 0.6 * (converted["fp32"] / "model.bin").stat().st_size
    with pytest.raises(SystemExit):
        main([str(tmp_path / "missing"), str(tmp_path / "out")])
    assert "is not a saved MarianMTModel folder" in capsys.readouterr().err
