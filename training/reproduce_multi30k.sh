#!/usr/bin/env bash
# Rebuild results/multi30k_en_de.json (issue 4): the autoregressive teacher, sequence-level distillation,
# NAT-base / GLAT / GLAT+CTC on raw and distilled data, two ablations, the offset length predictor, and every
# evaluation row.
#
#   bash training/reproduce_multi30k.sh [RUNS_DIR]        (default outputs/multi30k; run from the repo root)
#
# A step whose output already exists is skipped, so rerunning the script resumes it; train.py itself resumes
# an interrupted run from its last checkpoint. On the 2-core CPU it takes about 3 hours in all.
# PYTHON (default .venv/bin/python) and RESULTS (default results/multi30k_en_de.json) can be set;
# EVALUATE_ONLY=1 skips every training step and evaluates the models that are there; SKIP_EVALUATED=1 keeps
# the rows RESULTS already has.
set -euo pipefail
R=${1:-outputs/multi30k}
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-results/multi30k_en_de.json}
RECIPES=training/recipes
DISTILLED="--data_folder $R/distilled --tokenizer_name $R/ar"  # the teacher's tokenizer: the AR reranker needs it
RAW="--tokenizer_name $R/ar"

train() {  # train NAME ARGS...: python training/train.py ARGS --output_dir R/NAME, unless it has finished
  local name=$1; shift
  [ -f "$R/$name/all_results.json" ] || [ -n "${EVALUATE_ONLY:-}" ] || $PY training/train.py "$@" --output_dir "$R/$name"
  TRAIN_COMMAND="python training/train.py $* --output_dir $R/$name"
}

evaluate() {  # evaluate MODEL SYSTEM DATA [generation flags]: one row per test set in RESULTS
  local model=$1 system=$2 data=$3; shift 3
  $PY training/evaluate_model.py "$R/$model" --system "$system" --data "$data" --results "$RESULTS" \
    --train_command "$TRAIN_COMMAND" ${SKIP_EVALUATED:+--skip_existing} "$@"
}

# The teacher (2100 steps) and the AR rows; its checkpoint-1050 is the AR system at the NAT systems' budget.
train ar $RECIPES/multi30k_en_de_ar.json
evaluate ar "AR (beam 4)" raw --num_beams 4
evaluate ar "AR (greedy)" raw --num_beams 1
evaluate ar/checkpoint-1050 "AR at 1050 steps (beam 4)" raw --num_beams 4

[ -f "$R/distilled/distill_results.json" ] || [ -n "${EVALUATE_ONLY:-}" ] || $PY training/distill.py --teacher "$R/ar" --output_dir "$R/distilled" --num_beams 4 --batch_size 128

train glat_distilled $RECIPES/multi30k_en_de_glat.json $DISTILLED
evaluate glat_distilled "GLAT" distilled
evaluate glat_distilled "GLAT + NPD (m=7, self rerank)" distilled --length_beam_size 7
evaluate glat_distilled "GLAT + NPD (m=7, AR rerank)" distilled --length_beam_size 7 --reranker "$R/ar"

train nat_distilled $RECIPES/multi30k_en_de_nat.json $DISTILLED
evaluate nat_distilled "NAT-base" distilled
evaluate nat_distilled "NAT-base + NPD (m=7, self rerank)" distilled --length_beam_size 7

train glat_raw $RECIPES/demo.json  # make demo's run: the GLAT recipe's training (its BPE is the teacher's, byte for byte)
evaluate glat_raw "GLAT" raw
evaluate glat_raw "GLAT + NPD (m=7, self rerank)" raw --length_beam_size 7

train nat_raw $RECIPES/multi30k_en_de_nat.json $RAW
evaluate nat_raw "NAT-base" raw

# Ablations on distilled data, compared at checkpoint-525 of the same 1050-step schedule (GLAT's own checkpoint-525
# is their baseline): the adaptive count against a fixed one (Tables 3-4), glancing against uniform sampling (Table 7).
evaluate glat_distilled/checkpoint-525 "GLAT at 525 steps (ablation baseline)" distilled
evaluate nat_distilled/checkpoint-525 "NAT-base at 525 steps" distilled
train glat_fixed_distilled $RECIPES/multi30k_en_de_glat.json $DISTILLED --glance_count fixed
evaluate glat_fixed_distilled/checkpoint-525 "GLAT, fixed count, at 525 steps (ablation)" distilled
train glat_uniform_distilled $RECIPES/multi30k_en_de_glat.json $DISTILLED --glancing uniform
evaluate glat_uniform_distilled/checkpoint-525 "GLAT, uniform sampling, at 525 steps (ablation)" distilled

# GLAT+CTC last: the longest run (~1.8x a GLAT step)
train glat_ctc_distilled $RECIPES/multi30k_en_de_glat_ctc.json $DISTILLED
evaluate glat_ctc_distilled/checkpoint-525 "GLAT + CTC at 525 steps" distilled
evaluate glat_ctc_distilled "GLAT + CTC" distilled

# The length predictor scoring target - source length offsets (the official --pred-length-offset) instead of
# target lengths: GLAT and NAT-base again, on distilled data.
OFFSET="--config_overrides predict_length_offset=true"
train glat_offset_distilled $RECIPES/multi30k_en_de_glat.json $DISTILLED $OFFSET
evaluate glat_offset_distilled/checkpoint-525 "GLAT, offset lengths, at 525 steps" distilled
evaluate glat_offset_distilled "GLAT, offset lengths" distilled
evaluate glat_offset_distilled "GLAT + NPD (m=7, self rerank), offset lengths" distilled --length_beam_size 7
train nat_offset_distilled $RECIPES/multi30k_en_de_nat.json $DISTILLED $OFFSET
evaluate nat_offset_distilled/checkpoint-525 "NAT-base, offset lengths, at 525 steps" distilled
evaluate nat_offset_distilled "NAT-base, offset lengths" distilled
evaluate nat_offset_distilled "NAT-base + NPD (m=7, self rerank), offset lengths" distilled --length_beam_size 7

$PY training/evaluate_model.py --table "$RESULTS"
