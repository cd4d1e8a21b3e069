#!/usr/bin/env bash
# The ablation grid of the official model's differences (issue 12): each variant trained as GLAT and as NAT-base
# with the same settings on the distilled Multi30k data, then evaluated with predicted and with oracle lengths.
#
#   bash training/ablation_grid.sh [RUNS_DIR]          (default outputs/grid; run from the repo root)
#   VARIANTS="noscale official" MODELS=glat bash training/ablation_grid.sh     # only some variants or models
#
# DISTILLED (default $GLAT_DATA_DIR/multi30k_distilled, the teacher's beam-4 distillation with the teacher in
# teacher/) holds the data; STEPS (default 1050) the budget of every run. A finished run is skipped and an
# interrupted one resumes, so rerunning the script continues it. Rows go to RESULTS
# (default results/multi30k_ablations.json), each with its method, data, test set, BLEU, oracle-length BLEU,
# steps, seed, hardware and the commands that rebuild it.
set -euo pipefail
R=${1:-outputs/grid}
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-results/multi30k_ablations.json}
DISTILLED=${DISTILLED:-${GLAT_DATA_DIR:?set GLAT_DATA_DIR or DISTILLED}/multi30k_distilled}
STEPS=${STEPS:-1050}
DATA="--data_folder $DISTILLED --tokenizer_name $DISTILLED/teacher --max_steps $STEPS --eval_steps $STEPS"

# name -> config overrides and training flags, on top of the Multi30k recipes (offset lengths everywhere).
declare -A VARIANT=(
  [scaled]="--config_overrides predict_length_offset=true,scale_embedding=true"
  [noscale]="--config_overrides predict_length_offset=true,scale_embedding=false"
  [official]="--config_overrides predict_length_offset=true,scale_embedding=false,decoder_positions=every_layer,soft_copy_form=official,length_predictor=mean_pool,length_loss_weighting=non_glanced"
  [every_layer]="--config_overrides predict_length_offset=true,scale_embedding=false,decoder_positions=every_layer"
  [official_soft_copy]="--config_overrides predict_length_offset=true,scale_embedding=false,soft_copy_form=official"
  [mean_pool]="--config_overrides predict_length_offset=true,scale_embedding=false,length_predictor=mean_pool"
  [non_glanced]="--config_overrides predict_length_offset=true,scale_embedding=false,length_loss_weighting=non_glanced"
  [official_gelu]="--config_overrides predict_length_offset=true,scale_embedding=false,decoder_positions=every_layer,soft_copy_form=official,length_predictor=mean_pool,length_loss_weighting=non_glanced,activation_function=gelu"
)
ORDER=(scaled noscale official every_layer official_soft_copy mean_pool non_glanced official_gelu)
declare -A SYSTEM=([glat]=GLAT [nat]=NAT-base)
mkdir -p "$R"

for name in ${VARIANTS:-${ORDER[@]}}; do
  for model in ${MODELS:-glat nat}; do
    out="$R/${model}_$name"
    train="python training/train.py training/recipes/multi30k_en_de_$model.json $DATA ${VARIANT[$name]} --output_dir $out"
    [ -f "$out/all_results.json" ] || $PY ${train#python } --disable_tqdm true > "$out.log" 2>&1
    $PY training/evaluate_model.py "$out" --system "${SYSTEM[$model]} ($name)" --method "${model}_$name" --data distilled \
      --data_folder "$DISTILLED" --results "$RESULTS" --train_command "$train" --skip_existing
  done
done
$PY training/evaluate_model.py --table "$RESULTS"
