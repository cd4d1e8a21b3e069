"""Reading parallel text: the Multi30k folder, and errors that name the file and line."""

import gzip
import json
from pathlib import Path

import pytest

from glat_hf.data import data_dir, load_multi30k, load_parallel_folder, read_parallel_text, read_translation_jsonl


def test_multi30k_folder_finds_every_split(multi30k_dir):
    splits = load_parallel_folder(multi30k_dir, "en", "de")
    assert sorted(splits) == ["test_2016_flickr", "test_2017_flickr", "train", "val"]
    assert splits["train"].num_rows == 29000
    assert splits["val"].num_rows == 1014
    first = splits["train"][0]["translation"]
    assert first == {
        "en": "Two young, White males are outside near many bushes.",
        "de": "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    }


def test_requested_split_that_is_missing(multi30k_dir):
    splits = load_parallel_folder(multi30k_dir, "en", "fr", splits=["val"])
    assert list(splits) == ["val"] and splits["val"].num_rows == 1014
    with pytest.raises(FileNotFoundError, match=r"dev\.en or dev\.en\.gz.*dev\.fr or dev\.fr\.gz") as error:
        load_parallel_folder(multi30k_dir, "en", "fr", splits=["dev"])
    assert str(multi30k_dir) in str(error.value)


def test_plain_and_gzip_files_and_newlines(tmp_path):
    source = tmp_path / "train.en"
    source.write_bytes(b"  a dog \nthe cat\xe2\x80\xa8sat\r\n\n")  # spaces, U+2028 inside a line, CRLF, empty line
    target = tmp_path / "train.de.gz"
    with gzip.open(target, "wb") as handle:
        handle.write(b"ein Hund\ndie Katze\nleer")
    rows = read_parallel_text(source, target, "en", "de")["translation"]
    assert [row["en"] for row in rows] == ["  a dog ", "the cat\u2028sat", ""]
    assert [row["de"] for row in rows] == ["ein Hund", "die Katze", "leer"]


def test_different_line_counts_name_both_files(tmp_path):
    source, target = tmp_path / "a.en", tmp_path / "a.de"
    source.write_text("one\ntwo\nthree\n")
    target.write_text("eins\nzwei\n")
    with pytest.raises(ValueError) as error:
        read_parallel_text(source, target, "en", "de")
    message = str(error.value)
    assert f"{source} has 3 lines" in message and f"{target} has 2 lines" in message


def test_invalid_utf8_names_file_and_line(tmp_path):
    source, target = tmp_path / "a.en", tmp_path / "a.de"
    source.write_text("one\ntwo\nthree\n")
    target.write_bytes(b"eins\nzwei\n" + b"dr\xe9i\n")  # Latin-1 é on line 3
    with pytest.raises(ValueError, match=rf"{target}, line 3: not valid UTF-8"):
        read_parallel_text(source, target, "en", "de")


def _write_jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_jsonl_reads_translation_pairs(tmp_path):
    path = tmp_path / "train.json"
    records = [
        {"translation": {"en": "a dog", "de": "ein Hund", "fr": "un chien"}},
        {"translation": {"en": "", "de": "ä"}},
    ]
    _write_jsonl(path, [json.dumps(record, ensure_ascii=False) for record in records] + [""])
    dataset = read_translation_jsonl(path, "en", "de")
    assert dataset["translation"] == [{"en": "a dog", "de": "ein Hund"}, {"en": "", "de": "ä"}]


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"translation": {"en": "a"}}', r"line 2: \"translation\" has no 'de' key"),
        ('{"text": "a"}', r'line 2: expected an object with a "translation" key'),
        ('{"translation": {"en": "a", "de": 3}}', r"line 2: translation\['de'\] is int, expected a string"),
        ('{"translation": {"en": "a", "de": "b"}', r"line 2: invalid JSON"),
    ],
)
def test_jsonl_errors_name_the_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.json"
    _write_jsonl(path, ['{"translation": {"en": "a", "de": "b"}}', bad_line])
    with pytest.raises(ValueError, match=message) as error:
        read_translation_jsonl(path, "en", "de")
    assert str(path) in str(error.value)


def test_jsonl_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"translation": {"en": "a", "de": "b"}}\n{"translation": {"en": "a", "de": "\xff"}}\n')
    with pytest.raises(ValueError, match="line 2: not valid UTF-8"):
        read_translation_jsonl(path, "en", "de")


def test_data_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GLAT_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    monkeypatch.setenv("GLAT_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing is not a folder"):
        data_dir()


def test_no_data_dir_is_none_and_an_empty_one_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("GLAT_DATA_DIR", raising=False)
    assert data_dir() is None
    monkeypatch.setenv("GLAT_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="holds no multi30k/ folder"):
        load_multi30k(["train"])


def hub_layout(folder: Path, pairs: dict[str, int]) -> Path:
    """A local dataset folder laid out like the Hub's bentrevett/multi30k: one JSON lines file a split, en and de."""
    folder.mkdir()
    for split, count in pairs.items():
        rows = [json.dumps({"en": f"A dog {split} {i}.", "de": f"Ein Hund {split} {i}."}) for i in range(count)]
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_multi30k_from_the_hub_layout_without_a_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("GLAT_DATA_DIR", raising=False)
    hub = hub_layout(tmp_path / "multi30k_hub", {"train": 5, "validation": 3, "test": 2})
    loaded = load_multi30k(["train", "val", "test_2016_flickr"], "de", "en", hub_id=str(hub))
    assert {split: len(data) for split, data in loaded.items()} == {"train": 5, "val": 3, "test_2016_flickr": 2}
    assert loaded["val"][1]["translation"] == {"de": "Ein Hund validation 1.", "en": "A dog validation 1."}
    with pytest.raises(ValueError, match="no split 'test_2017_flickr'.*GLAT_DATA_DIR"):
        load_multi30k(["test_2017_flickr"], hub_id=str(hub))
    with pytest.raises(ValueError, match="no 'fr' column"):
        load_multi30k(["train"], "en", "fr", hub_id=str(hub))


def test_offline_without_data_says_to_set_the_data_dir(monkeypatch):
    monkeypatch.delenv("GLAT_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="set GLAT_DATA_DIR") as error:
        load_multi30k(["train"])  # the tests run offline, so the Hub cannot be reached
    assert "\n" not in str(error.value)
