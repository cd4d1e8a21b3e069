"""Read parallel text into `datasets`, in the `{"translation": {src: ..., tgt: ...}}` shape of run_translation.py.

Corpus files are often slightly broken (one line too many, a stray Latin-1 byte, a JSON line
without a key); every error here names the file and, where there is one, the line, so the fix
is one look away instead of a silent misalignment of sources and targets.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Value

DATA_DIR_VARIABLE = "GLAT_DATA_DIR"
logger = logging.getLogger(__name__)


def _translation_features(source_lang: str, target_lang: str) -> Features:
    """Explicit column types, so that an empty file still gives a well-typed dataset."""
    return Features({"translation": {source_lang: Value("string"), target_lang: Value("string")}})


def _check_languages(source_lang: str, target_lang: str) -> None:
    if not source_lang or not target_lang or source_lang == target_lang:
        raise ValueError(
            f"source_lang and target_lang must be two different codes, got {source_lang!r} and {target_lang!r}"
        )


def read_text_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file (plain, or gzip when named *.gz), without their newline.

    Only the line ending ("\\n", or "\\r\\n") is removed; spaces and other characters stay.
    Splitting on "\\n" alone (not str.splitlines) keeps characters such as U+2028 or form
    feed inside their sentence instead of cutting it in two.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = raw.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{path}, line {line_number}: not valid UTF-8 ({error.reason} at byte {error.start})"
        ) from None
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":  # the file's final newline ends the last line; it does not start a new one
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_parallel_text(
    source_file: str | os.PathLike, target_file: str | os.PathLike, source_lang: str, target_lang: str
) -> Dataset:
    """Pair two line-aligned files (line i of one translates line i of the other) into a Dataset."""
    _check_languages(source_lang, target_lang)
    sources = read_text_lines(source_file)
    targets = read_text_lines(target_file)
    if len(sources) != len(targets):
        raise ValueError(
            f"parallel files differ in length: {source_file} has {len(sources)} lines, "
            f"{target_file} has {len(targets)} lines"
        )
    pairs = [{source_lang: source, target_lang: target} for source, target in zip(sources, targets)]
    return Dataset.from_dict({"translation": pairs}, features=_translation_features(source_lang, target_lang))


def read_translation_jsonl(path: str | os.PathLike, source_lang: str, target_lang: str) -> Dataset:
    """Read JSON lines of {"translation": {source_lang: ..., target_lang: ...}} (run_translation.py's files).

    Blank lines are skipped; other languages in a record are dropped.
    """
    _check_languages(source_lang, target_lang)
    pairs = []
    for line_number, line in enumerate(read_text_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict) or "translation" not in record:
            raise ValueError(f'{where}: expected an object with a "translation" key')
        translation = record["translation"]
        if not isinstance(translation, dict):
            raise ValueError(f'{where}: "translation" is {type(translation).__name__}, expected an object')
        pair = {}
        for lang in (source_lang, target_lang):
            if lang not in translation:
                raise ValueError(f'{where}: "translation" has no {lang!r} key (it has {sorted(translation)})')
            if not isinstance(translation[lang], str):
                raise ValueError(
                    f"{where}: translation[{lang!r}] is {type(translation[lang]).__name__}, expected a string"
                )
            pair[lang] = translation[lang]
        pairs.append(pair)
    return Dataset.from_dict({"translation": pairs}, features=_translation_features(source_lang, target_lang))


def _language_file(folder: Path, split: str, lang: str) -> Path | None:
    """The file of one split and language, `{split}.{lang}` or `{split}.{lang}.gz`; None if neither."""
    candidates = [path for path in (folder / f"{split}.{lang}", folder / f"{split}.{lang}.gz") if path.is_file()]
    if len(candidates) > 1:
        raise ValueError(f"{folder}: both {candidates[0].name} and {candidates[1].name} exist; keep one")
    return candidates[0] if candidates else None


def _splits_with_language(folder: Path, lang: str) -> set[str]:
    splits = set()
    for path in folder.iterdir():
        name = path.name[: -len(".gz")] if path.name.endswith(".gz") else path.name
        if path.is_file() and name.endswith(f".{lang}") and len(name) > len(lang) + 1:
            splits.add(name[: -len(lang) - 1])
    return splits


def load_parallel_folder(
    folder: str | os.PathLike, source_lang: str, target_lang: str, splits: list[str] | None = None
) -> DatasetDict:
    """Load a Multi30k-style folder of `{split}.{lang}[.gz]` files into a DatasetDict, one entry per split.

    Without `splits`, every split that has files for both languages is loaded (sorted by name);
    split names stay as the files spell them (Multi30k's "val" stays "val").
    """
    _check_languages(source_lang, target_lang)
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    if splits is None:
        splits = sorted(_splits_with_language(folder, source_lang) & _splits_with_language(folder, target_lang))
        if not splits:
            raise FileNotFoundError(
                f"{folder}: no split has both {{split}}.{source_lang}[.gz] and {{split}}.{target_lang}[.gz] files"
            )

    datasets = {}
    for split in splits:
        files = {lang: _language_file(folder, split, lang) for lang in (source_lang, target_lang)}
        missing = [lang for lang, path in files.items() if path is None]
        if missing:
            expected = ", ".join(f"{split}.{lang} or {split}.{lang}.gz" for lang in missing)
            raise FileNotFoundError(f"{folder}: split {split!r} is missing; expected {expected}")
        datasets[split] = read_parallel_text(files[source_lang], files[target_lang], source_lang, target_lang)
    return DatasetDict(datasets)


# Split names of a Multi30k-style folder, and of JSON lines files and Hub datasets.
FOLDER_SPLITS = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
HUB_SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def load_translation_splits(
    splits: list[str],
    source_lang: str,
    target_lang: str,
    files: dict[str, str | None] | None = None,
    data_folder: str | os.PathLike | None = None,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    split_names: dict[str, str | None] | None = None,
    max_samples: dict[str, int | None] | None = None,
) -> tuple[DatasetDict, dict[str, str]]:
    """Translation datasets keyed by role ("train", "validation", "test"), and each one's name in its source.

    The source is, in this order: `files` (JSON lines per role, run_translation's format), the Hub dataset
    `dataset_name`, a folder of `{split}.{lang}` files, or Multi30k (`load_multi30k`). `split_names` renames the
    roles' splits (defaults: FOLDER_SPLITS for folders, HUB_SPLITS for the Hub); `max_samples` keeps the first N.
    """
    files = {role: path for role, path in (files or {}).items() if path}
    if files and not dataset_name:
        missing = [role for role in splits if role not in files]
        if missing:
            raise ValueError(f"no {missing[0]} file: JSON lines files were given for {sorted(files)} only")
        names = {role: str(files[role]) for role in splits}
        loaded = {names[role]: read_translation_jsonl(files[role], source_lang, target_lang) for role in splits}
    else:
        defaults = HUB_SPLITS if dataset_name else FOLDER_SPLITS
        names = {role: (split_names or {}).get(role) or defaults[role] for role in splits}
        wanted = [names[role] for role in splits]
        if dataset_name:
            import datasets

            loaded = datasets.load_dataset(dataset_name, dataset_config_name)
        elif data_folder:
            loaded = load_parallel_folder(data_folder, source_lang, target_lang, splits=wanted)
        else:
            loaded = load_multi30k(wanted, source_lang, target_lang)
        absent = [name for name in wanted if name not in loaded]
        if absent:
            raise ValueError(f"{dataset_name or data_folder} has no split {absent[0]!r} (it has {list(loaded)})")
    result = DatasetDict()
    for role in splits:
        dataset = loaded[names[role]]
        example = dataset[0]["translation"] if len(dataset) else {source_lang: "", target_lang: ""}
        if source_lang not in example or target_lang not in example:
            raise ValueError(
                f"{names[role]} has no {source_lang!r} or {target_lang!r} text (it has {sorted(example)})"
            )
        limit = (max_samples or {}).get(role)
        result[role] = dataset.select(range(min(limit, len(dataset)))) if limit is not None else dataset
    return result, names


def column(dataset: Dataset, lang: str) -> list[str]:
    """One language's sentences of a translation dataset, in order."""
    return dataset.flatten()[f"translation.{lang}"]


MULTI30K_HUB_ID = "bentrevett/multi30k"
# The Hub copy names the splits differently and holds only the 2016 test set.
MULTI30K_HUB_SPLITS = {"train": "train", "val": "validation", "test_2016_flickr": "test"}


def data_dir() -> Path | None:
    """$GLAT_DATA_DIR, the folder that holds the corpora (multi30k/, ...); None when it is not set."""
    configured = os.environ.get(DATA_DIR_VARIABLE)
    if not configured:
        return None
    path = Path(configured).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{DATA_DIR_VARIABLE}={configured} is not a folder")
    return path


def load_multi30k(
    splits: list[str],
    source_lang: str = "en",
    target_lang: str = "de",
    folder: str | os.PathLike | None = None,
    hub_id: str = MULTI30K_HUB_ID,
) -> DatasetDict:
    """Multi30k task 1 (Elliott et al. 2016), keyed by the corpus' split names (train, val, test_2016_flickr, ...).

    Read from `folder`, else from $GLAT_DATA_DIR/multi30k; with neither, `hub_id` is loaded with
    `datasets.load_dataset` into the datasets cache (columns `en` and `de`; train / validation / test =
    test_2016_flickr, 29,000 / 1,014 / 1,000 pairs). Offline with no data folder, it stops with one line that
    says to set GLAT_DATA_DIR.
    """
    if folder is None and data_dir() is not None:
        folder = data_dir() / "multi30k"
        if not folder.is_dir():
            raise FileNotFoundError(f"{DATA_DIR_VARIABLE}={data_dir()} holds no multi30k/ folder")
    if folder is not None:
        return load_parallel_folder(folder, source_lang, target_lang, splits=splits)
    _check_languages(source_lang, target_lang)
    unknown = [split for split in splits if split not in MULTI30K_HUB_SPLITS]
    if unknown:
        raise ValueError(
            f"{hub_id} has no split {unknown[0]!r} (it has {sorted(MULTI30K_HUB_SPLITS)}); "
            f"set {DATA_DIR_VARIABLE} to a folder holding multi30k/ for the others"
        )
    import datasets

    logger.info(f"No {DATA_DIR_VARIABLE} set: loading Multi30k from the Hub ({hub_id}) into the datasets cache.")
    try:
        hub = datasets.load_dataset(hub_id)
    except (ConnectionError, OSError, ValueError) as error:
        raise FileNotFoundError(
            f"no Multi30k data: set {DATA_DIR_VARIABLE} to a folder holding multi30k/ "
            f"({hub_id} could not be loaded: {str(error).splitlines()[0]})"
        ) from None
    loaded = {}
    for split in splits:
        part = hub[MULTI30K_HUB_SPLITS[split]]
        missing = [lang for lang in (source_lang, target_lang) if lang not in part.column_names]
        if missing:
            raise ValueError(f"{hub_id} has no {missing[0]!r} column (it has {part.column_names})")
        pairs = [{source_lang: s, target_lang: t} for s, t in zip(part[source_lang], part[target_lang])]
        loaded[split] = Dataset.from_dict(
            {"translation": pairs}, features=_translation_features(source_lang, target_lang)
        )
    return DatasetDict(loaded)
