"""Behaviour pinned by a golden file: for a fixed seed, the losses the trainer logs and the tokens that
`generate`, the pipeline and `glat-translate` produce are what they were when the file was written.

Refactors must not change them. The model is built from a saved config (`tests/golden/config.json`, written
before later config fields existed), so this also checks that old configs load and decode as they were
trained. Rewrite the file only for an intended change of behaviour:

    python tests/test_golden.py --write
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from helpers import read_pairs, tokenizer_for
from transformers import DataCollatorForSeq2Seq

from glat_hf import GlatConfig, GlatForConditionalGeneration, GlatTrainer, GlatTrainingArguments
from glat_hf.cli import main as glat_translate

GOLDEN = Path(__file__).resolve().parent / "golden"
SOURCES = [
    "Two young guys with shaggy hair look at their hands.",
    "A man in an orange hat starring at something.",
    "",
    "A little girl climbing into a wooden playhouse.",
    "Several men in hard hats are operating a giant pulley system.",
]
TRAINING_ARGS = dict(
    per_device_train_batch_size=16,
    learning_rate=3e-3,
    max_steps=12,
    logging_steps=1,
    seed=0,
    report_to=[],
    save_strategy="no",
    use_cpu=True,
    disable_tqdm=True,
    glancing_schedule="linear",
)


def train_and_translate(multi30k_dir, config_dict, output_dir, use_ctc=False):
    """Train a tiny model from `config_dict` for a few steps, then translate SOURCES every way there is."""
    sources, targets = read_pairs(multi30k_dir, count=64)
    tokenizer = tokenizer_for(sources + targets, vocab_size=300)
    config = GlatConfig.from_dict({**config_dict, "vocab_size": len(tokenizer), "use_ctc": use_ctc})
    torch.manual_seed(0)
    model = GlatForConditionalGeneration(config)
    features = [tokenizer(s, text_target=t, truncation=True, max_length=24) for s, t in zip(sources, targets)]
    trainer = GlatTrainer(
        model=model,
        args=GlatTrainingArguments(output_dir=str(output_dir), **TRAINING_ARGS),
        train_dataset=Dataset.from_list([dict(f) for f in features]),
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    trainer.train()
    logged = [
        {
            key: round(value, 4)
            for key, value in entry.items()
            if key in ("loss", "first_pass_accuracy", "glanced_fraction")
        }
        for entry in trainer.state.log_history
        if "loss" in entry
    ]
    model.eval()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    batch = tokenizer([s for s in SOURCES if s], return_tensors="pt", padding=True)
    ways = (
        {"single": {}}
        if use_ctc
        else {
            "single": {},
            "npd3": {"length_beam_size": 3, "length_prior_weight": 0.0},  # ranked by the mean log-probability
            "npd3_length_prior": {"length_beam_size": 3},  # and the length prior of a new generation config
            "refine3": {"num_iterations": 3},
        }
    )
    tokens = {name: model.generate(**batch, **kwargs).tolist() for name, kwargs in ways.items()}

    from transformers import pipeline

    translator = pipeline("glat-translation", model=str(output_dir))
    piped = [result["translation_text"] for result in translator(SOURCES, batch_size=2)]
    source_file, target_file = Path(output_dir) / "in.txt", Path(output_dir) / "out.txt"
    source_file.write_text("".join(line + "\n" for line in SOURCES), encoding="utf-8")
    assert (
        glat_translate([str(output_dir), "--input", str(source_file), "--output", str(target_file), "--no_progress"])
        == 0
    )
    translated = target_file.read_text(encoding="utf-8").split("\n")[:-1]
    return {"log": logged, "generate": tokens, "pipeline": piped, "glat_translate": translated}


def behaviour(multi30k_dir, tmp_path):
    config_dict = json.loads((GOLDEN / "config.json").read_text())
    return {
        "glat": train_and_translate(multi30k_dir, config_dict, tmp_path / "glat"),
        "glat_ctc": train_and_translate(multi30k_dir, config_dict, tmp_path / "ctc", use_ctc=True),
    }


def assert_same(actual, expected, where="behaviour"):
    if isinstance(expected, dict):
        assert sorted(actual) == sorted(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=2e-3, abs=2e-3), where
    else:
        assert actual == expected, where


@pytest.mark.slow
def test_behaviour_matches_the_golden_file(multi30k_dir, tmp_path):
    expected = json.loads((GOLDEN / "behaviour.json").read_text())
    actual = behaviour(multi30k_dir, tmp_path)
    assert actual["glat"]["log"][0]["loss"] > actual["glat"]["log"][-1]["loss"]  # it learned something
    assert_same(actual, expected)


if __name__ == "__main__" and "--write" in sys.argv:
    import os
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    data = Path(os.environ.get("GLAT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "multi30k"
    with tempfile.TemporaryDirectory() as folder:
        result = behaviour(data, Path(folder))
    (GOLDEN / "behaviour.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {GOLDEN / 'behaviour.json'}")
