"""The README's Python examples run as written, against a small saved model at the paths they name."""

import re

from helpers import REPO, read_pairs, tiny_marian, tiny_model, tokenizer_for

import glat_hf  # noqa: F401


def readme_python_blocks():
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_readme_examples_run(tmp_path, monkeypatch, multi30k_dir):
    sources, targets = read_pairs(multi30k_dir, count=300)
    tokenizer = tokenizer_for(sources + targets, vocab_size=400)
    tiny_model(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "outputs/glat-multi30k-en-de")
    tokenizer.save_pretrained(tmp_path / "outputs/glat-multi30k-en-de")
    tiny_marian(vocab_size=len(tokenizer)).save_pretrained(tmp_path / "outputs/multi30k_en_de_ar")
    monkeypatch.chdir(tmp_path)

    blocks = readme_python_blocks()
    assert len(blocks) >= 5
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)

    assert len(namespace["translations"]) == 2 and all(isinstance(text, str) for text in namespace["translations"])
    assert namespace["ids"].shape[0] == namespace["ids_npd"].shape[0] == namespace["ids_reranked"].shape[0] == 2
    assert set(namespace["single"][0]) == {"translation_text"}
    assert len(namespace["several"]) == 3 and namespace["several"][1]["translation_text"] == ""
    assert namespace["ids_onnx"].shape[0] == 2
    assert namespace["fresh"].config.vocab_size == len(namespace["tokenizer"])
