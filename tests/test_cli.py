"""The `glat-translate` command: same translations as `model.generate`, in input order, with clear errors."""

import io
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import read_pairs, tiny_marian, tiny_model, tokenizer_for
from transformers.utils import logging as hf_logging

from glat_hf import GlatForConditionalGeneration, GlatTranslationPipeline
from glat_hf.cli import main
from glat_hf.translation import iter_translations


@pytest.fixture(scope="module")
def saved(multi30k_dir, tmp_path_factory):
    """A tiny GLAT model folder, rerankers with the same and with another vocabulary, and source sentences."""
    torch.manual_seed(0)
    sources, targets = read_pairs(multi30k_dir, count=200)
    tokenizer = tokenizer_for(sources + targets, vocab_size=300)
    model = tiny_model(vocab_size=len(tokenizer))
    root = tmp_path_factory.mktemp("cli")
    model.save_pretrained(root / "glat")
    tokenizer.save_pretrained(root / "glat")
    reranker = tiny_marian(vocab_size=len(tokenizer))
    reranker.save_pretrained(root / "reranker")
    tiny_marian(vocab_size=len(tokenizer) + 7).save_pretrained(root / "other_vocab")
    return types.SimpleNamespace(
        root=root, folder=root / "glat", model=model, tokenizer=tokenizer, reranker=reranker, sources=sources
    )


def reference(saved, lines, **generate_kwargs):
    """What the command must print: model.generate on each line alone, "" for an empty line."""
    out = []
    for line in lines:
        if not line.strip():
            out.append("")
            continue
        ids = saved.model.generate(**saved.tokenizer([line], return_tensors="pt"), **generate_kwargs)
        out.append(saved.tokenizer.decode(ids[0], skip_special_tokens=True).strip())
    return out


def run_cli(*argv) -> int:
    """main()'s exit status, also where argparse exits."""
    try:
        return main([str(arg) for arg in argv])
    except SystemExit as exit_:
        return exit_.code


def write_lines(path: Path, lines) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_output(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def test_translates_a_file_in_input_order_with_length_sorted_batches(saved, tmp_path, capsys):
    lines = saved.sources[:13]
    lengths = [len(ids) for ids in saved.tokenizer(lines)["input_ids"]]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)  # sorting changes the batches
    source = write_lines(tmp_path / "in.txt", lines)
    assert run_cli(saved.folder, "--input", source, "--output", tmp_path / "out.txt", "--batch_size", 4) == 0
    assert read_output(tmp_path / "out.txt") == reference(saved, lines)
    assert capsys.readouterr().err == ""  # no progress bar (stderr is not a terminal) and no loading bars


def test_stdin_to_stdout_keeps_empty_lines_and_reads_crlf(saved, monkeypatch, capsys):
    lines = ["", saved.sources[0], "   ", saved.sources[1], saved.sources[2], ""]
    data = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    assert run_cli(saved.folder, "--batch_size", 2, "--device", "cpu", "--no_progress") == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == len(lines)
    assert printed.split("\n")[:-1] == reference(saved, lines)


def test_empty_input_gives_empty_output(saved, tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"")
    assert run_cli(saved.folder, "--input", source, "--output", tmp_path / "out.txt") == 0
    assert (tmp_path / "out.txt").read_bytes() == b""


def test_noisy_parallel_decoding_flags_pass_through(saved, tmp_path):
    lines = saved.sources[:6]
    source = write_lines(tmp_path / "in.txt", lines)
    npd = reference(saved, lines, length_beam_size=3)
    assert npd != reference(saved, lines)  # the flag would be visible if it were dropped
    assert run_cli(saved.folder, "--input", source, "--output", tmp_path / "npd.txt", "--length_beam_size", 3) == 0
    assert read_output(tmp_path / "npd.txt") == npd

    reranked = reference(saved, lines, length_beam_size=3, reranker=saved.reranker)
    assert reranked != npd
    argv = ["--length_beam_size", 3, "--reranker", saved.root / "reranker", "--output", tmp_path / "reranked.txt"]
    assert run_cli(saved.folder, "--input", source, *argv) == 0
    assert read_output(tmp_path / "reranked.txt") == reranked


def test_the_reranker_can_be_its_ctranslate2_conversion(saved, tmp_path):
    pytest.importorskip("ctranslate2")
    from glat_hf.ctranslate2_baseline import convert_marian

    saved.reranker.save_pretrained(tmp_path / "reranker")
    saved.tokenizer.save_pretrained(tmp_path / "reranker")
    convert_marian(tmp_path / "reranker", tmp_path / "reranker_ct2")
    lines = saved.sources[:6]
    source = write_lines(tmp_path / "in.txt", lines)
    argv = ["--length_beam_size", 3, "--reranker", tmp_path / "reranker_ct2", "--output", tmp_path / "out.txt"]
    assert run_cli(saved.folder, "--input", source, *argv) == 0
    assert read_output(tmp_path / "out.txt") == reference(saved, lines, length_beam_size=3, reranker=saved.reranker)


@pytest.mark.parametrize(
    "flag, name, value",
    [
        ("--num_iterations", "num_iterations", 3),
        ("--remove_repeats", "remove_repeats", True),
        ("--length_prior_weight", "length_prior_weight", 0.5),
    ],
)
def test_generation_flags_reach_generate(saved, tmp_path, monkeypatch, flag, name, value):
    seen = []
    original_generate = GlatForConditionalGeneration.generate

    def recording_generate(self, *args, **kwargs):
        seen.append(kwargs.get(name))
        return original_generate(self, *args, **kwargs)

    monkeypatch.setattr(GlatForConditionalGeneration, "generate", recording_generate)
    lines = saved.sources[:3]
    source = write_lines(tmp_path / "in.txt", lines)
    argv = [flag] if value is True else [flag, value]
    assert run_cli(saved.folder, "--input", source, "--output", tmp_path / "out.txt", *argv) == 0
    assert seen and set(seen) == {value}
    monkeypatch.undo()
    assert read_output(tmp_path / "out.txt") == reference(saved, lines, **{name: value})


def test_too_long_line_is_truncated_with_a_warning(saved, tmp_path, capsys):
    lines = [saved.sources[0], " ".join(saved.sources[:20]), saved.sources[1]]  # the middle one: far over 63 tokens
    source = write_lines(tmp_path / "in.txt", lines)
    assert run_cli(saved.folder, "--input", source, "--output", tmp_path / "out.txt") == 0
    out = read_output(tmp_path / "out.txt")
    assert len(out) == 3 and out[0] == reference(saved, lines[:1])[0] and out[1]
    assert "truncated" in capsys.readouterr().err


def test_transformers_progress_bars_are_restored(saved, tmp_path):
    assert hf_logging.is_progress_bar_enabled()
    source = write_lines(tmp_path / "in.txt", saved.sources[:1])
    assert run_cli(saved.folder, "--input", source, "--output", tmp_path / "out.txt") == 0
    assert hf_logging.is_progress_bar_enabled()


def expect_error(capsys, status, *fragments):
    err = capsys.readouterr().err
    assert status != 0, err
    assert "Traceback" not in err
    assert err.startswith("glat-translate: error") or "usage: glat-translate" in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_missing_or_wrong_model_folder(saved, tmp_path, capsys):
    source = write_lines(tmp_path / "in.txt", ["A dog."])
    expect_error(capsys, run_cli(tmp_path / "nowhere", "--input", source), "model folder not found", "nowhere")
    (tmp_path / "empty").mkdir()
    expect_error(capsys, run_cli(tmp_path / "empty", "--input", source), "no config.json")
    expect_error(capsys, run_cli(saved.root / "reranker", "--input", source), "not a GLAT model", "marian")


def test_missing_input_file_and_output_folder(saved, tmp_path, capsys):
    expect_error(capsys, run_cli(saved.folder, "--input", tmp_path / "missing.txt"), "input file not found")
    source = write_lines(tmp_path / "in.txt", ["A dog."])
    status = run_cli(saved.folder, "--input", source, "--output", tmp_path / "no_such_dir" / "out.txt")
    expect_error(capsys, status, "no_such_dir")


def test_bad_device(saved, tmp_path, capsys):
    source = write_lines(tmp_path / "in.txt", ["A dog."])
    expect_error(capsys, run_cli(saved.folder, "--input", source, "--device", "banana"), "unknown device")
    expect_error(capsys, run_cli(saved.folder, "--input", source, "--device", "mps"), "unsupported device")
    if not torch.cuda.is_available():
        expect_error(capsys, run_cli(saved.folder, "--input", source, "--device", "cuda"), "no CUDA GPU")
    else:
        bad_index = f"cuda:{torch.cuda.device_count()}"
        expect_error(capsys, run_cli(saved.folder, "--input", source, "--device", bad_index), "CUDA GPU(s)")


def test_bad_length_beam_size_leaves_the_output_file_alone(saved, tmp_path, capsys):
    source = write_lines(tmp_path / "in.txt", ["A dog.", "Two cats."])
    output = tmp_path / "out.txt"
    output.write_text("previous run\n")
    expect_error(capsys, run_cli(saved.folder, "--input", source, "--length_beam_size", 0), "--length_beam_size")
    status = run_cli(saved.folder, "--input", source, "--output", output, "--length_beam_size", 1000)
    expect_error(capsys, status, "length_beam_size must be an integer")
    assert output.read_text() == "previous run\n"
    expect_error(capsys, run_cli(saved.folder, "--input", source, "--batch_size", "many"), "--batch_size")
    expect_error(capsys, run_cli(saved.folder, "--input", source, "--length_prior_weight", -1), "a number >= 0")


def test_reranker_with_another_vocabulary_or_missing(saved, tmp_path, capsys):
    source = write_lines(tmp_path / "in.txt", ["A dog."])
    argv = ["--input", source, "--length_beam_size", 3, "--reranker"]
    expect_error(capsys, run_cli(saved.folder, *argv, saved.root / "other_vocab"), "vocabulary", "share the tokenizer")
    expect_error(capsys, run_cli(saved.folder, *argv, tmp_path / "no_teacher"), "reranker folder not found")


def test_invalid_utf8_names_the_line(saved, tmp_path, capsys):
    source = tmp_path / "in.txt"
    source.write_bytes(b"A dog runs.\nTwo \xff\xfe cats.\n")
    expect_error(capsys, run_cli(saved.folder, "--input", source), "line 2", "UTF-8", str(source))


def test_pipeline_streams_a_generator_in_order(saved):
    """The command relies on this: one pass over a generator, results lazily and in order."""
    pipe = GlatTranslationPipeline(model=saved.model, tokenizer=saved.tokenizer)
    lines = saved.sources[:5] + [""]
    streamed = pipe((line for line in lines), batch_size=2)
    assert not isinstance(streamed, list)
    assert [item["translation_text"] for item in streamed] == reference(saved, lines)
    with pytest.raises(TypeError, match="string"):
        list(pipe(item for item in ["A dog.", 3]))


def installed_script() -> Path:
    script = Path(sys.executable).parent / "glat-translate"
    assert script.exists(), f"{script} is missing: install the project (pip install -e .) to register the command"
    return script


def test_installed_command_translates_stdin(saved):
    lines = [saved.sources[3], "", saved.sources[4]]
    result = subprocess.run(
        [str(installed_script()), str(saved.folder), "--device", "cpu"],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:-1] == reference(saved, lines)


def test_installed_command_fails_with_one_clear_line(tmp_path):
    result = subprocess.run(
        [str(installed_script()), str(tmp_path / "missing_model")],
        input="A dog.\n",
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"glat-translate: error: model folder not found: {tmp_path / 'missing_model'}"
    ]


def test_streaming_keeps_input_order_across_chunk_boundaries(saved, tmp_path):
    lines = [saved.sources[i] if i % 4 else "" for i in range(11)]
    source = write_lines(tmp_path / "in.txt", lines)
    output = tmp_path / "out.txt"
    assert run_cli(saved.folder, "--input", source, "--output", output, "--chunk_size", 3, "--batch_size", 2) == 0
    assert read_output(output) == reference(saved, lines)
    assert not (tmp_path / "out.txt.partial").exists()


def test_the_first_chunk_is_translated_before_the_last_is_read(saved):
    """A generator input: translations of chunk 1 come out while later lines are still unread."""
    read = []

    def lines():
        for line in saved.sources[:10]:
            read.append(line)
            yield line

    translations = iter_translations(saved.model, saved.tokenizer, lines(), batch_size=2, chunk_size=3)
    first = [next(translations) for _ in range(3)]
    assert len(read) == 3 and first == reference(saved, saved.sources[:3])
    assert list(translations) == reference(saved, saved.sources[3:10]) and len(read) == 10


def test_an_interruption_keeps_what_was_translated(saved, tmp_path, monkeypatch):
    """Ctrl-C after the first chunk: OUTPUT.partial holds its lines, an existing OUTPUT is left alone."""
    import glat_hf.cli as cli

    lines = saved.sources[:6]
    source, output = write_lines(tmp_path / "in.txt", lines), tmp_path / "out.txt"
    output.write_text("previous run\n")
    real = cli.iter_translations

    def interrupted(*args, **kwargs):
        for index, text in enumerate(real(*args, **kwargs)):
            if index == 3:
                raise KeyboardInterrupt
            yield text

    monkeypatch.setattr(cli, "iter_translations", interrupted)
    assert run_cli(saved.folder, "--input", source, "--output", output, "--chunk_size", 3) == 130
    assert output.read_text() == "previous run\n"
    assert read_output(tmp_path / "out.txt.partial") == reference(saved, lines[:3])
