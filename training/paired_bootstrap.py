"""Is GLAT's lead over NAT-base more than the luck of the test set? The paired bootstrap (Koehn 2004) of the mean
BLEU difference between systems and their baselines, one pair per seed (a recipe's lead is its mean over seeds).

    python training/paired_bootstrap.py --references $GLAT_DATA_DIR/multi30k/test_2016_flickr.de.gz \\
        --systems GLAT_s42.txt GLAT_s43.txt --baselines NAT_s42.txt NAT_s43.txt --target 3

The files hold detokenized translations, one a line in the order of the references (evaluate_model.py writes them
into MODEL_DIR/predictions/). It prints one JSON line (`glat_hf.metrics.paired_bootstrap`): each pair's BLEU and
difference, the mean difference, its 95% interval over --samples resamples of the test sentences, the share of
resamples without a lead and, with --target, the share that reaches it. A missing file, one with another number of
lines than the references, or an empty test set stops with one line that names it.
"""

from __future__ import annotations

import argparse
import json
import sys

from glat_hf.data import read_text_lines
from glat_hf.metrics import paired_bootstrap

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--references", required=True, help="the reference translations, one a line (plain or .gz)")
parser.add_argument("--systems", nargs="+", required=True, help="the systems' translations, one file per seed")
parser.add_argument("--baselines", nargs="+", required=True, help="the baselines' translations, in the same order")
parser.add_argument("--samples", type=int, default=1000, help="bootstrap resamples of the test sentences")
parser.add_argument("--seed", type=int, default=12345, help="the resamples' random seed (sacreBLEU's default)")
parser.add_argument("--target", type=float, help="a difference to test against, e.g. 3 (BLEU)")
args = parser.parse_args()
if len(args.systems) != len(args.baselines):
    parser.error(f"{len(args.systems)} --systems but {len(args.baselines)} --baselines: one baseline for each system")

try:
    references = read_text_lines(args.references)
    translations = {path: read_text_lines(path) for path in args.systems + args.baselines}
except (OSError, ValueError) as error:
    sys.exit(f"error: {error}")
for path, lines in translations.items():
    if len(lines) != len(references):
        sys.exit(f"error: {path} has {len(lines)} lines, the references {args.references} {len(references)}")

try:  # an empty test set or --samples below 1: one line, as paired_bootstrap words it
    result = paired_bootstrap(
        [translations[path] for path in args.systems],
        [translations[path] for path in args.baselines],
        references,
        samples=args.samples,
        seed=args.seed,
        target=args.target,
    )
except ValueError as error:
    sys.exit(f"error: {error}")
result["pairs"] = [
    {"system_file": s, "baseline_file": b, **pair} for s, b, pair in zip(args.systems, args.baselines, result["pairs"])
]
print(json.dumps({"references": args.references, **result}))
