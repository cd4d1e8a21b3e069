#!/usr/bin/env bash
# The long runs of issue 12: GLAT, NAT-base (and GLAT+CTC) with today's defaults on the distilled (or raw)
# Multi30k data, one schedule of STEPS steps for every model and seed, evaluated at each third of it (predicted and
# oracle lengths, the length predictor's report, glanced accuracy), so the rows show how the gap moves with the budget.
#
#   bash training/long_runs.sh [RUNS_DIR]                      (default outputs/long; run from the repo root)
#   SEEDS="42 43" MODELS="glat nat" STEPS=3150 JOBS=2 bash training/long_runs.sh
#   VARIANT=non_glanced_length_loss ARGS="--config_overrides length_loss_weighting=non_glanced" bash training/long_runs.sh
#   DATA=raw SEEDS=42 JOBS=2 bash training/long_runs.sh           (the raw training data, the teacher's tokenizer)
#
# VARIANT names a variant of the recipe whose extra train.py flags are ARGS: its runs are
# <model>_<STEPS>_<VARIANT>_s<seed>, its rows say "<system>, <VARIANT>, <STEPS>-step schedule, ..." with method
# <method>_<VARIANT>. The rows' commands name the data folder as $GLAT_DATA_DIR (evaluate_model.py writes them so).
# JOBS (default 1) trainings run side by side, each with OMP_NUM_THREADS=$THREADS (default: 1 when JOBS > 1): on
# the 2-core CPU two runs of one thread each finish sooner than one after the other. On a GPU machine train.py
# takes the GPU by itself; keep JOBS=1 there. A finished run is skipped and an interrupted one resumes from its
# last checkpoint (saved every sixth of the schedule), so rerunning the script continues it. Rows go to RESULTS
# (default results/multi30k_en_de.json) as "<system>, <STEPS>-step schedule, seed <seed>, at <k> steps".
# DATA=raw trains on the raw Multi30k pairs ($GLAT_DATA_DIR/multi30k) instead of the teacher's distillation, with
# the same tokenizer: runs <model>_<STEPS>_raw[_<VARIANT>]_s<seed>, rows "<system>, raw data, ..." with data "raw".
set -euo pipefail
R=${1:-outputs/long}
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-results/multi30k_en_de.json}
DISTILLED=${DISTILLED:-${GLAT_DATA_DIR:?set GLAT_DATA_DIR or DISTILLED}/multi30k_distilled}
VARIANT=${VARIANT:-}
DATA=${DATA:-distilled}
case $DATA in
  distilled) TRAIN_DATA=$DISTILLED ;;
  raw) TRAIN_DATA=${GLAT_DATA_DIR:?DATA=raw reads \$GLAT_DATA_DIR/multi30k}/multi30k ;;
  *) echo "DATA must be distilled or raw, got $DATA" >&2; exit 2 ;;
esac
RAW=${DATA#distilled}  # "raw" or empty: the runs' and rows' names
ARGS=${ARGS:-}
STEPS=${STEPS:-3150}
JOBS=${JOBS:-1}
THREADS=${THREADS:-$([ "$JOBS" -gt 1 ] && echo 1 || nproc)}
[ $((STEPS % 6)) = 0 ] || { echo "STEPS must be a multiple of 6 (checkpoints every sixth), got $STEPS" >&2; exit 2; }
THIRD=$((STEPS / 3))
declare -A RECIPE=([glat]=glat [nat]=nat [ctc]=glat_ctc)
declare -A SYSTEM=([glat]=GLAT [nat]=NAT-base [ctc]="GLAT + CTC")
declare -A METHOD=([glat]=glat [nat]=nat [ctc]=glat_ctc)
mkdir -p "$R"

run_dir() {  # MODEL SEED
  echo "$R/${1}_${STEPS}${RAW:+_$RAW}${VARIANT:+_$VARIANT}_s$2"
}

train_command() {  # MODEL SEED: the train.py command line of one run
  echo "python training/train.py training/recipes/multi30k_en_de_${RECIPE[$1]}.json --data_folder $TRAIN_DATA" \
    "--tokenizer_name $DISTILLED/teacher --max_steps $STEPS --eval_steps $THIRD --save_steps $((STEPS / 6))" \
    "--save_total_limit 7 --seed $2${ARGS:+ $ARGS} --output_dir $(run_dir "$1" "$2")"
}

running=0
for seed in ${SEEDS:-42 43}; do
  for model in ${MODELS:-glat nat}; do
    out=$(run_dir "$model" "$seed")
    [ -f "$out/all_results.json" ] && continue
    command=$(train_command "$model" "$seed")
    # eval: ARGS may hold shell quoting (a JSON value), written into the rows' commands as it is
    eval "OMP_NUM_THREADS=$THREADS $PY ${command#python } --disable_tqdm true" > "$out.log" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
  done
done
wait

for seed in ${SEEDS:-42 43}; do
  for model in ${MODELS:-glat nat}; do
    out=$(run_dir "$model" "$seed")
    for step in $THIRD $((2 * THIRD)) $STEPS; do
      checkpoint="$out/checkpoint-$step"
      [ "$step" = "$STEPS" ] && checkpoint=$out  # the final model
      schedule="${RAW:+raw data, }${VARIANT:+$VARIANT, }$STEPS-step schedule"
      system="${SYSTEM[$model]}, $schedule, seed $seed, at $step steps"
      method="${METHOD[$model]}${VARIANT:+_$VARIANT}"
      $PY training/evaluate_model.py "$checkpoint" --system "$system" --method "$method" \
        --data "$DATA" --data_folder "$TRAIN_DATA" --results "$RESULTS" \
        --train_command "$(train_command "$model" "$seed")" --skip_existing
    done
  done
done
$PY training/evaluate_model.py --table "$RESULTS"
