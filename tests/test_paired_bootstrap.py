"""training/paired_bootstrap.py: the test set's share of a BLEU lead, from translation files."""

import json
import subprocess
import sys

import pytest
from helpers import REPO, read_pairs

from glat_hf.metrics import corpus_bleu


def run_script(*arguments):
    command = [sys.executable, "training/paired_bootstrap.py", *map(str, arguments)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_two_seeds_of_a_lead_against_a_target(tmp_path, multi30k_dir):
    _, references = read_pairs(multi30k_dir, split="val", count=200)
    reversed_every = {
        k: [" ".join(s.split()[::-1]) if i % k == 0 else s for i, s in enumerate(references)] for k in (1, 2, 3)
    }
    refs = write_lines(tmp_path / "refs.de", references)
    systems = [write_lines(tmp_path / f"glat_{k}.txt", reversed_every[k]) for k in (2, 3)]
    baselines = [write_lines(tmp_path / f"nat_{k}.txt", reversed_every[1]) for k in (2, 3)]

    result = run_script(
        "--references", refs, "--systems", *systems, "--baselines", *baselines, "--samples", 100, "--target", 3
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    worst = corpus_bleu(reversed_every[1], references)["score"]
    expected = [corpus_bleu(reversed_every[k], references)["score"] - worst for k in (2, 3)]
    assert [pair["difference"] for pair in report["pairs"]] == pytest.approx(expected)
    assert report["pairs"][1]["system_file"] == str(systems[1])
    assert report["interval_95"][0] > 3 and report["share_at_target"] == 1.0 and report["samples"] == 100


def test_a_short_or_missing_file_is_one_line_that_names_it(tmp_path):
    refs = write_lines(tmp_path / "refs.de", ["ein Hund", "eine Katze"])
    short = write_lines(tmp_path / "short.txt", ["ein Hund"])
    result = run_script("--references", refs, "--systems", short, "--baselines", refs)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{short} has 1 lines, the references {refs} 2" in result.stderr
    result = run_script("--references", refs, "--systems", tmp_path / "none.txt", "--baselines", refs)
    assert result.returncode != 0 and "none.txt: no such file" in result.stderr and "Traceback" not in result.stderr
    result = run_script("--references", refs, "--systems", refs, refs, "--baselines", refs)
    assert result.returncode == 2 and "2 --systems but 1 --baselines" in result.stderr
    empty = write_lines(tmp_path / "empty.de", [])
    result = run_script("--references", empty, "--systems", empty, "--baselines", empty)
    assert result.returncode != 0 and "no references, an empty test set" in result.stderr
    assert "Traceback" not in result.stderr
