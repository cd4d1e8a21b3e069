"""GLAT on ONNX Runtime (glat_hf.onnx): the same tokens as PyTorch, the same checks, clear errors for bad folders.

The models are small but trained (on 100 real Multi30k pairs), so their argmax is not a near-tie that fp32
rounding differences between the two engines could flip.
"""

import copy
import shutil
import sys

import numpy as np
import pytest
import torch
from helpers import TINY_SIZES, load_script, read_pairs, tiny_marian, tokenizer_for
from transformers import DataCollatorForSeq2Seq

from glat_hf import GlatConfig, GlatForConditionalGeneration, GlatTranslationPipeline
from glat_hf.translation import check_vocabulary, translate

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import glat_hf.onnx as onnx_module  # noqa: E402
from glat_hf.onnx import GlatOnnxModel, _argmax, export_onnx, graph_files, main  # noqa: E402

SIZES = dict(TINY_SIZES, encoder_attention_heads=4, decoder_attention_heads=4, dropout=0.0)


def _trained(tokenizer, batch, steps, **overrides):
    torch.manual_seed(0)
    model = GlatForConditionalGeneration(GlatConfig(vocab_size=len(tokenizer), **SIZES, **overrides))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


MAX_TOKENS = 24  # sources and targets are truncated: short batches train fast


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Train and decode with one thread: with two on two shared cores, torch's threads wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(multi30k_dir):
    sources, targets = read_pairs(multi30k_dir, count=100)
    tokenizer = tokenizer_for(sources + targets, vocab_size=1000)
    features = [tokenizer(s, text_target=t, truncation=True, max_length=MAX_TOKENS) for s, t in zip(sources, targets)]
    batch = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")(features)
    return sources, tokenizer, batch


@pytest.fixture(scope="module")
def glat(data, tmp_path_factory):
    """(PyTorch model, ONNX Runtime fp32 model, folder): exported with int8 copies, the tokenizer beside them."""
    _, tokenizer, batch = data
    model = _trained(tokenizer, batch, steps=150)
    folder = tmp_path_factory.mktemp("glat_onnx")
    export_onnx(model, folder, int8=True, tokenizer=tokenizer)
    return model, GlatOnnxModel.from_pretrained(folder, threads=1), folder


@pytest.fixture(scope="module")
def ctc(data, tmp_path_factory):
    _, tokenizer, batch = data
    model = _trained(tokenizer, batch, steps=100, use_ctc=True)
    folder = tmp_path_factory.mktemp("ctc_onnx")
    export_onnx(model, folder)
    return model, GlatOnnxModel.from_pretrained(folder, threads=1), folder


def _batches(data, size=16):
    """Padded batches in corpus order: every batch mixes lengths."""
    sources, tokenizer, _ = data
    for start in range(0, len(sources), size):
        yield _tokenize(tokenizer, sources[start : start + size])


def _tokenize(tokenizer, sources):
    return tokenizer(sources, return_tensors="pt", padding=True, truncation=True, max_length=MAX_TOKENS)


def _assert_same(pytorch_model, onnx_model, inputs, **kwargs):
    expected = pytorch_model.generate(**inputs, **kwargs)
    got = onnx_model.generate(**inputs, **kwargs)
    assert got.dtype == expected.dtype == torch.long
    assert torch.equal(got, expected), (got, expected)


def test_the_graphs_are_written_beside_the_config_and_the_tokenizer(glat):
    _, _, folder = glat
    names = {path.name for path in folder.iterdir()}
    assert {*graph_files(False), *graph_files(True), "config.json", "generation_config.json"} <= names
    assert "tokenizer.json" in names


def test_single_sentences_give_the_tokens_of_pytorch(glat, data):
    model, onnx_model, _ = glat
    sources, tokenizer, _ = data
    for source in sources:
        _assert_same(model, onnx_model, _tokenize(tokenizer, source))


def test_padded_batches_give_the_tokens_of_pytorch(glat, data):
    model, onnx_model, _ = glat
    for inputs in _batches(data):
        assert not bool(inputs["attention_mask"].all())  # the batch is padded
        _assert_same(model, onnx_model, inputs)


def test_noisy_parallel_decoding_with_self_rerank_gives_the_tokens_of_pytorch(glat, data):
    model, onnx_model, _ = glat
    for inputs in _batches(data):
        _assert_same(model, onnx_model, inputs, length_beam_size=3)  # the generation config's length prior
        _assert_same(model, onnx_model, inputs, length_beam_size=3, remove_repeats=True)
        for weight in (0.0, 1.0):
            _assert_same(model, onnx_model, inputs, length_beam_size=5, length_prior_weight=weight)


def test_mask_predict_refinement_gives_the_tokens_of_pytorch(glat, data):
    model, onnx_model, _ = glat
    for inputs in _batches(data, size=32):
        _assert_same(model, onnx_model, inputs, num_iterations=3)


def test_ar_reranker_and_oracle_lengths_give_the_tokens_of_pytorch(glat, data):
    model, onnx_model, _ = glat
    _, tokenizer, batch = data
    reranker = tiny_marian(len(tokenizer))
    inputs = next(_batches(data))
    _assert_same(model, onnx_model, inputs, length_beam_size=3, reranker=reranker)
    target_lengths = (batch["labels"][:16] != -100).sum(1)
    _assert_same(model, onnx_model, inputs, target_lengths=target_lengths)
    _assert_same(model, onnx_model, inputs, max_length=5)


def test_the_graphs_handle_padding_whatever_batch_the_trace_ran_on(glat, data, tmp_path, monkeypatch):
    """Traced on one unpadded sentence, the graphs still mask padding: the model's "nothing is padded" shortcuts
    (no attention mask, no gather of the real positions) are not frozen into them."""
    model, _, _ = glat
    _, tokenizer, _ = data

    def unpadded_example(config):
        input_ids = torch.tensor([[10, 11, 12, 2]])
        decoder_mask = torch.ones(1, 5, dtype=torch.bool)
        return input_ids, torch.ones_like(input_ids), 1, decoder_mask, torch.full((1, 5), -1)

    monkeypatch.setattr(onnx_module, "_example_inputs", unpadded_example)
    export_onnx(model, tmp_path)
    onnx_model = GlatOnnxModel.from_pretrained(tmp_path, threads=1)
    inputs = next(_batches(data))
    feeds = {name: inputs[name].numpy() for name in ("input_ids", "attention_mask")}
    feeds.update(length_beam_size=np.array(1), max_length=np.array(model.config.max_target_length))
    tokens, _, decoder_mask, states, _ = onnx_model.first_pass_session.run(
        None,
        {
            **feeds,
            "target_lengths": np.zeros(len(inputs["input_ids"]), dtype=np.int64),
            "with_scores": np.array(False),
        },
    )
    with torch.no_grad():
        expected = model.model.encode(inputs["input_ids"], inputs["attention_mask"]).last_hidden_state
    real = model.model.encoder_mask(inputs["attention_mask"])
    torch.testing.assert_close(torch.from_numpy(states)[real], expected[real], atol=1e-4, rtol=1e-4)
    assert not decoder_mask.all() and torch.equal(torch.from_numpy(tokens), model.generate(**inputs))
    _assert_same(model, onnx_model, inputs, length_beam_size=3)


def test_the_first_pass_scores_only_when_asked(glat, data):
    """with_scores=False skips the LogSoftmax over the vocabulary (an If in the graph): the same tokens, zero
    scores. With it, every real position has its log-probability (NPD and Mask-Predict, above, rank by them)."""
    _, onnx_model, _ = glat
    inputs = next(_batches(data))
    feeds = {name: inputs[name].numpy() for name in ("input_ids", "attention_mask")}
    feeds.update(length_beam_size=np.array(2), max_length=np.array(onnx_model.config.max_target_length))
    feeds.update(target_lengths=np.zeros(len(inputs["input_ids"]), dtype=np.int64))
    session = onnx_model.first_pass_session
    tokens, scores, mask = session.run(None, {**feeds, "with_scores": np.array(True)})[:3]
    unscored_tokens, unscored = session.run(None, {**feeds, "with_scores": np.array(False)})[:2]
    assert np.array_equal(tokens, unscored_tokens) and not unscored.any()
    assert (scores[mask] < 0).all() and not scores[~mask].any()
    ops = {node.op_type for node in onnx.load(onnx_model.name_or_path + "/model.onnx").graph.node}
    assert "If" in ops and "LogSoftmax" not in ops  # the LogSoftmax runs only inside the If's branch


def test_graphs_exported_before_with_scores_load_and_decode_as_now(glat, data, tmp_path):
    """A model.onnx of an earlier glat-export has no with_scores input and always scores: it is fed without it."""
    _, onnx_model, folder = glat
    for path in folder.iterdir():
        shutil.copy(path, tmp_path)
    graph = onnx.load(folder / "model.onnx")
    graph.graph.input.remove(next(node for node in graph.graph.input if node.name == "with_scores"))
    graph.graph.initializer.append(onnx.numpy_helper.from_array(np.array(True), "with_scores"))
    onnx.save(graph, tmp_path / "model.onnx")
    earlier = GlatOnnxModel.from_pretrained(tmp_path, threads=1)
    assert "with_scores" not in earlier._first_pass_inputs
    inputs = next(_batches(data))
    for kwargs in ({}, {"length_beam_size": 3}, {"num_iterations": 2}):
        assert torch.equal(earlier.generate(**inputs, **kwargs), onnx_model.generate(**inputs, **kwargs))


def test_graphs_exported_before_the_length_prior_rank_without_it_or_say_to_export_again(glat, data, tmp_path):
    """A model.onnx of an earlier glat-export has no length_log_probs output: NPD's self rerank with a length
    prior cannot run on it, and the error says how to export again; without the prior it decodes as now."""
    _, onnx_model, folder = glat
    for path in folder.iterdir():
        shutil.copy(path, tmp_path)
    graph = onnx.load(folder / "model.onnx")
    graph.graph.output.remove(next(node for node in graph.graph.output if node.name == "length_log_probs"))
    onnx.save(graph, tmp_path / "model.onnx")
    earlier = GlatOnnxModel.from_pretrained(tmp_path, threads=1)
    inputs = next(_batches(data))
    with pytest.raises(ValueError, match=f"exported before NPD's length prior.*glat-export {tmp_path}"):
        earlier.generate(**inputs, length_beam_size=3)
    for kwargs in ({}, {"length_beam_size": 3, "length_prior_weight": 0}):
        assert torch.equal(earlier.generate(**inputs, **kwargs), onnx_model.generate(**inputs, **kwargs))


@pytest.mark.parametrize("vocab", [8000, 7919, 12])
def test_the_exported_argmax_is_the_first_maximum(vocab, tmp_path):
    """_argmax (blocks of the vocabulary, padded with -inf where the size has no divisor near its square root)
    gives torch.argmax's index, the first of equal maxima, in PyTorch and on ONNX Runtime."""
    torch.manual_seed(0)
    logits = torch.randn(40, vocab)
    logits[::2, [1, vocab - 2]] = 10.0  # ties: the first one wins
    logits[1::4, vocab - 1] = 10.0  # the last entry (past every block boundary)
    expected = logits.argmax(-1)
    assert torch.equal(_argmax(logits), expected)

    class Argmax(torch.nn.Module):
        def forward(self, logits):
            return _argmax(logits)

    path = tmp_path / "argmax.onnx"
    onnx_module._export(Argmax(), (logits[:3],), path, ["logits"], ["argmax"], {"logits": {0: "rows"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert np.array_equal(session.run(None, {"logits": logits.numpy()})[0], expected.numpy())


def test_ctc_gives_the_tokens_of_pytorch(ctc, data):
    model, onnx_model, _ = ctc
    sources, tokenizer, _ = data
    for source in sources[:20]:
        _assert_same(model, onnx_model, _tokenize(tokenizer, source))
    for inputs in _batches(data):
        _assert_same(model, onnx_model, inputs)


def test_int8_runs_and_gives_ids_of_the_right_shape(glat, data):
    _, _, folder = glat
    sources, tokenizer, _ = data
    int8_model = GlatOnnxModel.from_pretrained(folder, int8=True, threads=1)
    inputs = next(_batches(data))
    for kwargs in ({}, {"length_beam_size": 3}):
        ids = int8_model.generate(**inputs, **kwargs)
        assert ids.dtype == torch.long and ids.dim() == 2 and ids.shape[0] == inputs["input_ids"].shape[0]
        assert 1 <= ids.shape[1] <= int8_model.config.max_target_length
        assert bool(((ids >= 0) & (ids < len(tokenizer))).all())
    assert len(translate(int8_model, tokenizer, sources[:8])) == 8


def test_translate_and_the_pipeline_match_pytorch(glat, data):
    model, onnx_model, _ = glat
    sources, tokenizer, _ = data
    check_vocabulary(onnx_model, tokenizer)
    assert translate(onnx_model, tokenizer, sources + [""], batch_size=32) == translate(
        model, tokenizer, sources + [""], batch_size=32
    )
    three = sources[:3]
    pipeline_kwargs = dict(batch_size=2, length_beam_size=3)
    expected = GlatTranslationPipeline(model=model, tokenizer=tokenizer)(three, **pipeline_kwargs)
    assert GlatTranslationPipeline(model=onnx_model, tokenizer=tokenizer)(three, **pipeline_kwargs) == expected


def _same_error(pytorch_model, onnx_model, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as expected:
        pytorch_model.generate(*args, **kwargs)
    with pytest.raises(ValueError) as got:
        onnx_model.generate(*args, **kwargs)
    assert str(got.value) == str(expected.value)
    return str(got.value)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(length_beam_size=0), "length_beam_size"),
        (dict(length_beam_size=2.0), "length_beam_size"),
        (dict(length_beam_size=41), "length_beam_size"),
        (dict(num_iterations=0), "num_iterations"),
        (dict(remove_repeats=1), "remove_repeats"),
        (dict(length_beam_size=2, length_prior_weight=-1.0), "length_prior_weight"),
        (dict(target_lengths=torch.tensor([3, 4])), "target_lengths"),
        (dict(target_lengths=torch.tensor([0])), "target_lengths"),
        (dict(target_lengths=torch.tensor([3]), length_beam_size=2), "target_lengths"),
    ],
)
def test_bad_arguments_are_rejected_with_the_message_of_pytorch(glat, kwargs, words):
    model, onnx_model, _ = glat
    assert words in _same_error(model, onnx_model, torch.tensor([[10, 11, 2]]), **kwargs)


def test_bad_inputs_are_rejected_with_the_message_of_pytorch(glat, ctc):
    model, onnx_model, _ = glat
    assert "(batch, length)" in _same_error(model, onnx_model, torch.tensor([[[10, 11, 2]]]))
    too_long = torch.full((1, model.config.max_source_positions + 1), 10)
    assert "holds at most" in _same_error(model, onnx_model, too_long)
    other_vocabulary = tiny_marian(vocab_size=model.config.vocab_size + 1)
    ids = torch.tensor([[10, 11, 2]])
    assert "vocabulary" in _same_error(model, onnx_model, ids, length_beam_size=2, reranker=other_vocabulary)
    ctc_model, ctc_onnx, _ = ctc
    assert "CTC" in _same_error(ctc_model, ctc_onnx, ids, length_beam_size=2)
    too_long = torch.full((1, ctc_model.config.max_source_positions + 1), 10)
    assert "holds at most" in _same_error(ctc_model, ctc_onnx, too_long)


def test_a_missing_graph_is_named(glat, tmp_path):
    _, _, folder = glat
    shutil.copytree(folder, tmp_path / "model")
    (tmp_path / "model" / graph_files(True)[1]).unlink()
    GlatOnnxModel.from_pretrained(tmp_path / "model")  # the fp32 graphs are still there
    with pytest.raises(FileNotFoundError, match=graph_files(True)[1]) as error:
        GlatOnnxModel.from_pretrained(tmp_path / "model", int8=True)
    assert "glat-export" in str(error.value) and "--int8" in str(error.value)
    with pytest.raises(FileNotFoundError, match="config.json"):
        GlatOnnxModel.from_pretrained(tmp_path)
    (tmp_path / "model" / graph_files(False)[0]).rename(tmp_path / "model" / "encoder_model.onnx")
    with pytest.raises(FileNotFoundError, match="earlier glat-export") as error:  # a folder exported before model.onnx
        GlatOnnxModel.from_pretrained(tmp_path / "model")
    assert graph_files(False)[0] in str(error.value)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_graph_is_named(glat, tmp_path, damage):
    _, _, folder = glat
    shutil.copytree(folder, tmp_path / "model")
    path = tmp_path / "model" / graph_files(False)[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not an onnx graph" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated") as error:
        GlatOnnxModel.from_pretrained(tmp_path / "model")
    assert str(path) in str(error.value)


def test_session_threads_are_set_and_idle_threads_do_not_spin(glat):
    onnx_model = GlatOnnxModel.from_pretrained(glat[2], threads=2)
    for session in (onnx_model.first_pass_session, onnx_model.decoder_session):
        options = session.get_session_options()
        assert options.intra_op_num_threads == 2
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(ValueError, match="threads"):
        GlatOnnxModel.from_pretrained(onnx_model.name_or_path, threads=0)


def test_sessions_keep_layer_norm_unfused(glat, tmp_path):
    """GlatOnnxModel's sessions optimise the graph without SkipLayerNormFusion (slower here than what it fuses):
    the optimised graph keeps LayerNormalization and has no SkipLayerNormalization."""
    _, _, folder = glat
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnx_module._session(ort, folder / graph_files(True)[0], options)
    ops = {node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node}
    assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops
    ort.InferenceSession(str(folder / graph_files(True)[0]), options, providers=["CPUExecutionProvider"])
    fused = {node.op_type for node in onnx.load(tmp_path / "optimized.onnx").graph.node}
    assert "SkipLayerNormalization" in fused  # what the default optimisations would have made of it


def test_without_onnxruntime_the_error_says_how_to_install_it(glat, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ImportError, match=r"pip install glat-hf\[onnx\]"):
        GlatOnnxModel.from_pretrained(glat[2])


def test_glat_export_command(glat, data, tmp_path, capsys):
    model, _, _ = glat
    _, tokenizer, _ = data
    model.save_pretrained(tmp_path / "saved")
    tokenizer.save_pretrained(tmp_path / "saved")
    assert main([str(tmp_path / "saved")]) == 0
    assert sorted(p.name for p in tmp_path.joinpath("saved").glob("*.onnx")) == sorted(graph_files(False))
    inputs = next(_batches(data))
    _assert_same(model, GlatOnnxModel.from_pretrained(tmp_path / "saved", threads=1), inputs)
    capsys.readouterr()
    assert main([str(tmp_path / "nowhere")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("glat-export: error: model folder not found") and error.count("\n") == 1
    tiny_marian().save_pretrained(tmp_path / "marian")
    assert main([str(tmp_path / "marian"), "--int8"]) == 1
    assert "not a GLAT model" in capsys.readouterr().err


def test_glat_translate_backends_onnx_and_onnx_int8(glat, data, tmp_path, capsys):
    """glat-translate --backend onnx writes what the torch backend writes; onnx-int8 writes one line per input."""
    from glat_hf.cli import main as glat_translate

    model, _, folder = glat
    sources, tokenizer, _ = data
    model.save_pretrained(folder)  # the graphs' folder also holds the PyTorch model for the torch backend
    source = tmp_path / "in.txt"
    source.write_text("".join(line + "\n" for line in sources[:20] + [""]), encoding="utf-8")
    outputs = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        target = tmp_path / f"{backend}.txt"
        argv = [str(folder), "--input", str(source), "--output", str(target), "--backend", backend, "--no_progress"]
        assert glat_translate(argv) == 0, capsys.readouterr().err
        outputs[backend] = target.read_text(encoding="utf-8").split("\n")[:-1]
    assert outputs["onnx"] == outputs["torch"] and len(outputs["onnx-int8"]) == 21 and outputs["onnx-int8"][-1] == ""


def test_profile_script_shares_the_first_pass_time_among_its_operators(glat, multi30k_dir, tmp_path, capsys):
    """training/profile_onnx.py: the int8 graph's kernels are its quantized MatMuls, the fp32 graph's MatMul; the
    shares cover every operator; NPD's LogSoftmax (the If's branch that scores) runs only with m > 1; a folder
    without graphs stops with the message that names the file."""
    script = load_script("training/profile_onnx.py")
    common = [str(glat[2]), "--data_folder", str(multi30k_dir), "--sentences", "8", "--repeats", "1"]
    int8 = script.main(common + ["--int8", "--batch_size", "4"])
    assert "| DynamicQuantizeMatMul |" in capsys.readouterr().out
    fp32 = script.main(common)
    npd = script.main(common + ["--length_beam_size", "3"])
    quantized = {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
    assert quantized <= set(int8["operators"]) and not quantized & set(fp32["operators"])
    for result in (int8, fp32, npd):
        assert result["timed_ms"] > 0 and result["profiled_ms"] > 0 and result["nodes"] > 50
        assert sum(row["share"] for row in result["operators"].values()) == pytest.approx(1.0)
        assert "If" not in result["operators"]  # its branch's nodes are counted instead
    assert "LogSoftmax" in npd["operators"] and "LogSoftmax" not in fp32["operators"]

    shutil.copy(glat[2] / "config.json", tmp_path / "config.json")
    with pytest.raises(SystemExit, match="model.onnx not found"):
        script.main([str(tmp_path), "--data_folder", str(multi30k_dir)])


def test_profile_script_counts_the_multiply_adds_that_torch_counts(glat, data, multi30k_dir, capsys):
    """The multiply-adds of the matrix products, counted from the profiled shapes, equal torch's FLOP counter / 2
    over the eager PyTorch model's `generate` of the same sentence (the fp32 graph decodes PyTorch's lengths), for
    one pass and NPD; the int8 graph runs the same products; --reference_gemm gives this CPU's int8 GEMM rate."""
    from torch.utils.flop_counter import FlopCounterMode

    script = load_script("training/profile_onnx.py")
    model, _, folder = glat
    eager = copy.deepcopy(model)
    eager.config._attn_implementation = "eager"  # attention as matmuls, which the counter counts (SDPA it skips)
    sentence = read_pairs(multi30k_dir, "test_2016_flickr", count=1)[0]
    common = [str(folder), "--data_folder", str(multi30k_dir), "--sentences", "1", "--repeats", "1"]
    counted = {}
    for m in (1, 3):
        with FlopCounterMode(display=False) as counter:
            eager.generate(**_tokenize(data[1], sentence), length_beam_size=m)
        fp32 = script.main(common + ["--length_beam_size", str(m)])
        int8 = script.main(common + ["--length_beam_size", str(m), "--int8", "--reference_gemm"])
        assert fp32["multiply_adds"] == int8["multiply_adds"] == counter.get_total_flops() / 2
        assert fp32["gmac_per_s"] > 0 and int8["reference_gmac_per_s"] > 0
        counted[m] = fp32["multiply_adds"]
    assert counted[3] > counted[1]  # NPD decodes three candidates
    assert "GMAC/s" in capsys.readouterr().out
