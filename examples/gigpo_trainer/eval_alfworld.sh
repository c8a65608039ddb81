#!/usr/bin/env bash
# Success of one checkpoint on ALFWorld's validation games, per split and task type, as JSON.
#
#   bash examples/gigpo_trainer/eval_alfworld.sh MODEL [hydra overrides...]
#
# MODEL is a model directory (an SFT or RL checkpoint's huggingface/ folder) or a hub id. verl's validation-only
# mode (trainer.val_only=True after trainer.val_before_train=True) plays every game of DATA_DIR's valid_seen and
# valid_unseen files once (val_kwargs.n=1) at TEMPERATURE, with the RL config's episode and prompt settings
# (MAX_STEPS, HISTORY as in run_alfworld.sh): evaluate every checkpoint of a comparison with the same values.
#
# Variables (defaults in brackets), besides run_alfworld.sh's (DATA_DIR, N_GPUS, MAX_STEPS, HISTORY, ...):
#   TEMPERATURE  validation sampling temperature [0.4, the RL config's val_kwargs]; 0 decodes greedily
#   OUT          the JSON file [eval_alfworld.json]; the run's console log goes beside it (OUT with .log)
#   LAUNCHER     the launcher the run goes through [run_alfworld_molmo2.sh beside this script]
#   DRY_RUN=1    the launcher's config checks and resolved config only: nothing runs, no JSON
# The JSON (molmo_agent.integrations.verl.eval_report): {"model", "temperature", "command", "step", "splits":
# {"valid_seen": {"games", "success", "success_by_task_type", "episode_length", "invalid_action_rate",
# "inadmissible_action_rate"}, ...}}.
# Every argument is passed on as a Hydra override, after the script's own (so it wins).
set -euo pipefail

MODEL=${1:?usage: eval_alfworld.sh MODEL [hydra overrides...]}
shift
TEMPERATURE=${TEMPERATURE:-0.4}
OUT=${OUT:-eval_alfworld.json}
LAUNCHER=${LAUNCHER:-$(dirname "$0")/run_alfworld_molmo2.sh}
DATA_DIR=${DATA_DIR:-$HOME/data/alfworld}
PYTHON=${PYTHON:-python3}
export MODEL_PATH=$MODEL DATA_DIR PYTHON EXPERIMENT=${EXPERIMENT:-eval_alfworld}

do_sample=True
if "$PYTHON" -c "import sys; sys.exit(float(sys.argv[1]) != 0)" "$TEMPERATURE"; then do_sample=False; fi
# resume_mode=disable: a checkpoint left under the experiment's folder must never replace MODEL.
evaluation=(
  trainer.val_before_train=True
  trainer.val_only=True
  trainer.resume_mode=disable
  "trainer.logger=[console]"
  actor_rollout_ref.rollout.val_kwargs.n=1
  actor_rollout_ref.rollout.val_kwargs.temperature="$TEMPERATURE"
  actor_rollout_ref.rollout.val_kwargs.do_sample=$do_sample
  "$@"
)

if [ "${DRY_RUN:-0}" = 1 ]; then
  exec bash "$LAUNCHER" "${evaluation[@]}"
fi

log=${OUT%.json}.log
command="eval_alfworld.sh $MODEL $* (TEMPERATURE=$TEMPERATURE)"
bash "$LAUNCHER" "${evaluation[@]}" 2>&1 | tee "$log"
"$PYTHON" -m molmo_agent.integrations.verl.eval_report "$log" --model "$MODEL" --temperature "$TEMPERATURE" \
  --val-files "$DATA_DIR/valid_seen.parquet" "$DATA_DIR/valid_unseen.parquet" --command "$command" --out "$OUT"
