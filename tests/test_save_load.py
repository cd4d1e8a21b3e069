import os
import subprocess
import sys
import textwrap

import torch
from helpers import read_pairs, tiny_model, tokenizer_for
from transformers import AutoModelForSeq2SeqLM

from glat_hf import GlatForConditionalGeneration

SOURCE = torch.tensor([[7, 8, 9, 10, 2], [11, 12, 2, 0, 0]])


def test_save_load_gives_identical_logits_and_generate(tmp_path):
    model = tiny_model(decoder_input="soft_copy")
    model.generation_config.length_beam_size = 3
    model.generation_config.num_iterations = 2
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()

    for loaded in (
        GlatForConditionalGeneration.from_pretrained(tmp_path),
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path),
    ):
        assert isinstance(loaded, GlatForConditionalGeneration)
        loaded.eval()
        assert loaded.lm_head.weight is loaded.model.shared.weight
        with torch.no_grad():
            torch.testing.assert_close(
                loaded(SOURCE, decoder_lengths=torch.tensor([4, 6])).logits,
                model(SOURCE, decoder_lengths=torch.tensor([4, 6])).logits,
            )
        assert torch.equal(loaded.generate(SOURCE), model.generate(SOURCE))
        # Custom generation settings survive the round trip and are used by default.
        assert loaded.generation_config.length_beam_size == 3
        assert loaded.generation_config.num_iterations == 2


def _run_fresh_python(code: str, cwd) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _save_model_and_tokenizer(directory, multi30k_dir):
    sources, targets = read_pairs(multi30k_dir, count=200)
    tokenizer = tokenizer_for(sources + targets, vocab_size=300)
    model = tiny_model(vocab_size=len(tokenizer))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer, sources


def test_fresh_offline_process_loads_with_auto_classes_and_pipeline(tmp_path, multi30k_dir):
    model, tokenizer, sources = _save_model_and_tokenizer(tmp_path / "model", multi30k_dir)
    expected = tokenizer.decode(
        model.generate(**tokenizer(sources[:1], return_tensors="pt"))[0], skip_special_tokens=True
    )
    out = _run_fresh_python(
        f"""
        import glat_hf
        from transformers import AutoModelForSeq2SeqLM, pipeline
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path / "model")!r})
        print(type(model).__name__)
        translator = pipeline("glat-translation", model={str(tmp_path / "model")!r})
        print(translator({sources[0]!r})[0]["translation_text"])
        """,
        cwd=tmp_path,
    )
    name, text = out.rstrip("\n").split("\n")[-2:]
    assert name == "GlatForConditionalGeneration"
    assert text == expected.strip()


def test_saved_folder_loads_with_trust_remote_code_without_glat_hf(tmp_path, multi30k_dir):
    model, _, _ = _save_model_and_tokenizer(tmp_path / "model", multi30k_dir)
    assert (tmp_path / "model" / "modeling_glat.py").exists()
    out = _run_fresh_python(
        f"""
        import sys
        sys.modules["glat_hf"] = None  # as if glat_hf were not installed
        import torch
        from transformers import AutoModelForSeq2SeqLM
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        print(type(model).__module__)
        print(model.generate(torch.tensor([[7, 8, 9, 2]])).tolist())
        """,
        cwd=tmp_path,
    )
    module, ids = out.rstrip("\n").split("\n")[-2:]
    assert "glat_hf" not in module
    assert ids == str(model.generate(torch.tensor([[7, 8, 9, 2]])).tolist())
