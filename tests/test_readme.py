"""The README's Python examples run as written, against a small saved model at the paths they name."""

import json
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
    tokenizer.save_pretrained(tmp_path / "outputs/multi30k_en_de_ar")  # train.py saves it beside the teacher
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
    assert namespace["ids_onnx"].shape[0] == namespace["ids_deployed"].shape[0] == 2
    assert namespace["fresh"].config.vocab_size == len(namespace["tokenizer"])


def test_todays_table_holds_the_rows_its_command_selects():
    """The README's table of today's recipes: every measured number is a row its `--systems` command selects, every
    mean is the mean of its seeds, the gap row is GLAT minus NAT-base and the last column is the system against AR
    greedy, so the table cannot drift from the rows."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("### Today's recipes")[1].split("\n### ")[0]
    pattern = re.search(r"--systems \\\n\s+'(.+?)'\n", section).group(1)
    by_system = {}
    for row in json.loads((REPO / "results/multi30k_en_de.json").read_text()):
        if re.search(pattern, row["system"]):
            by_system.setdefault(row["system"], {})[row["test_set"]] = f"{row['bleu']:.2f}"
    measured = {(sets["test_2016_flickr"], sets["test_2017_flickr"]) for sets in by_system.values()}
    pair = re.compile(r"^\**([+-]?\d+\.\d\d?) / ([+-]?\d+\.\d\d?)\**$")
    lines = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    table = {}
    for line in lines[1:]:
        system, *cells = [cell.strip() for cell in line.strip("|").split("|")]
        table[system] = [pair.match(cell).groups() if pair.match(cell) else None for cell in cells]

    def close(first, second, tolerance):
        return all(abs(float(a) - float(b)) <= tolerance for a, b in zip(first, second))

    (*_, ar, _), checked = table.pop("AR greedy (the shared teacher)"), 1
    assert ar in measured, f"AR greedy: {ar} is not a selected row"
    gap = table.pop("GLAT - NAT-base")
    for system, (seed42, seed43, mean, against_ar) in table.items():
        seeds = [seed for seed in (seed42, seed43) if seed]
        for seed in seeds:
            assert seed in measured, f"{system}: {seed} is not a selected row"
            checked += 1
        if mean:
            assert close(mean, [(float(a) + float(b)) / 2 for a, b in zip(*seeds)], 0.0051), system
        assert close(against_ar, [float(a) - float(b) for a, b in zip(mean or seeds[0], ar)], 0.051), system
    for glat, nat, difference in zip(table["GLAT, one pass"], table["NAT-base, one pass"], gap[:3]):
        assert close(difference, [float(a) - float(b) for a, b in zip(glat, nat)], 0.011)
    assert checked >= 7
