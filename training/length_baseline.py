"""How much of the target length the source length alone tells: the yardstick for GLAT's length predictor.

    python training/length_baseline.py --train_folder $GLAT_DATA_DIR/multi30k_distilled \\
        --test_folder $GLAT_DATA_DIR/multi30k --tokenizer_name $GLAT_DATA_DIR/multi30k_distilled/teacher

For each source length (in tokens, as the model sees it) the baseline predicts the target length most frequent among
the training pairs with that source length, and falls back to the source length itself where training has no such
source. It prints the training pairs' mean source and target lengths (how many target tokens a batch of pairs
holds), then the report of the result rows (`glat_hf.metrics.length_prediction`: exact, within 2 tokens) for each
test set, against the references' lengths: a learned length predictor that beats it has learned from the words, not
just from how many there are. A missing folder, split, file or tokenizer stops with one line that names it.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from transformers import AutoTokenizer

from glat_hf.data import column, load_parallel_folder
from glat_hf.metrics import length_prediction, token_lengths

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--train_folder", required=True, help="a folder of train.{lang}[.gz] files")
parser.add_argument("--test_folder", required=True, help="a folder of {split}.{lang}[.gz] files with the references")
parser.add_argument("--tokenizer_name", required=True, help="the models' tokenizer")
parser.add_argument("--test_splits", nargs="+", default=["test_2016_flickr", "test_2017_flickr"])
parser.add_argument("--source_lang", default="en")
parser.add_argument("--target_lang", default="de")
args = parser.parse_args()

try:  # a missing tokenizer, folder, split or file: one line that names it, not a traceback
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name)
except (OSError, ValueError) as error:
    sys.exit(f"error: --tokenizer_name {args.tokenizer_name}: {error}")
try:
    train = load_parallel_folder(args.train_folder, args.source_lang, args.target_lang, splits=["train"])["train"]
    tests = load_parallel_folder(args.test_folder, args.source_lang, args.target_lang, splits=args.test_splits)
except (OSError, ValueError) as error:
    sys.exit(f"error: {error}")


def source_lengths(sentences) -> torch.Tensor:
    return torch.tensor([len(ids) for ids in tokenizer(list(sentences))["input_ids"]])


train_source = source_lengths(column(train, args.source_lang))
train_target = token_lengths(tokenizer, column(train, args.target_lang))
# counts[s, t]: training pairs with source length s and target length t; the baseline is each row's argmax
size = int(max(train_source.max(), train_target.max())) + 1
counts = torch.zeros(size, size, dtype=torch.long).index_put_(
    (train_source, train_target), torch.ones_like(train_source), accumulate=True
)
most_frequent = torch.where(counts.sum(1) > 0, counts.argmax(1), torch.arange(size))
mean_lengths = {"mean_source_tokens": round(float(train_source.float().mean()), 2)}
mean_lengths["mean_target_tokens"] = round(float(train_target.float().mean()), 2)
print(json.dumps({"train_folder": args.train_folder, "train_pairs": len(train_source), **mean_lengths}))

for split, pairs in tests.items():
    source = source_lengths(column(pairs, args.source_lang))
    predicted = torch.where(source < size, most_frequent[source.clamp(max=size - 1)], source)
    report = length_prediction(predicted, token_lengths(tokenizer, column(pairs, args.target_lang)))
    print(json.dumps({"train_folder": args.train_folder, "test_set": split, "length_prediction": report}))
