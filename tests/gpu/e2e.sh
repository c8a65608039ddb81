#!/usr/bin/env bash
# End to end on one GPU: two GiGPO iterations on generated ALFWorld games with the tiny Molmo2 through Ray +
# FSDP + vLLM with real weight sync, validation and a checkpoint; then a second run resumes from that checkpoint
# and trains a third iteration. tests/gpu/check_e2e_log.py reads both logs: finite losses, metrics logged,
# vLLM's token probabilities equal to the trainer's (the weights were synced), resume.
#
#   bash tests/gpu/e2e.sh [train|resume|all]    (from the repository root; logs under $OUT or ./e2e-out)
#
# `train` runs the first run, `resume` the second and the log check (both fit in one 10-minute call each; the
# logs are kept in the work folder, so the phases can run in separate calls, and copied to $OUT);
# `all` (default) both. The tiny checkpoint's weights are redrawn at unit gain (vllm_harness.resample_weights):
# at the default init every token has probability ~1/vocab whatever the weights, and the trainer-vs-vLLM
# comparison could not tell synced weights from any others.
# Variables: GAMES (an existing game tree; default: generate 4 train + 2 + 2 validation games), E2E_S (time
# limit of each run, default 540 s), E2E_WORK (work folder, default $HOME/molmo_agent_e2e: kept between calls).
set -euo pipefail
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 VLLM_USE_FLASHINFER_SAMPLER=0
phase=${1:-all}
OUT=${OUT:-$PWD/e2e-out}
WORK=${E2E_WORK:-$HOME/molmo_agent_e2e}
mkdir -p "$OUT" "$WORK"
PY=${PYTHON:-python3}

run() {  # run STEPS LOG: train until global step STEPS (resuming from $WORK/ckpt when it holds one)
  local status=0
  ray stop --force >/dev/null 2>&1 || true  # a run killed by its time limit may leave Ray's processes behind
  MODEL_PATH=$WORK/model DATA_DIR=$WORK/data N_GPUS=1 TRAIN_BATCH=2 GROUP_SIZE=2 MAX_STEPS=3 OFFLOAD=False \
    PYTHON=$PY timeout "${E2E_S:-540}" bash examples/gigpo_trainer/run_alfworld_molmo2.sh \
    data.max_prompt_length=1536 data.max_response_length=48 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.3 actor_rollout_ref.rollout.enforce_eager=True \
    actor_rollout_ref.rollout.calculate_log_probs=True \
    actor_rollout_ref.rollout.agent.num_workers=1 \
    actor_rollout_ref.rollout.val_kwargs.temperature=0.4 \
    trainer.total_training_steps="$1" trainer.total_epochs=100 trainer.val_before_train=False \
    trainer.test_freq=2 trainer.save_freq=2 trainer.default_local_dir="$WORK/ckpt" \
    trainer.logger='[console,tensorboard]' trainer.experiment_name=e2e \
    2>&1 | tee "$WORK/$2" || status=$?
  cp "$WORK/$2" "$OUT/"
  return "$status"
}

if [ "$phase" = train ] || [ "$phase" = all ]; then
  if [ ! -f "$WORK/model/config.json" ]; then
    $PY -m molmo_agent.models.molmo2.make_checkpoint "$WORK/model-init" --size tiny
    $PY -c "import sys; from pathlib import Path; sys.path.insert(0, 'tests/gpu'); import vllm_harness as h; \
h.resample_weights(Path('$WORK/model-init'), Path('$WORK/model'), seed=1)"
  fi
  GAMES=${GAMES:-$WORK/games}
  [ -d "$GAMES" ] || $PY -m molmo_agent.envs.alfworld.generate --out "$GAMES" --train 4 --valid-seen 2 \
    --valid-unseen 2 --seed 0
  $PY examples/data_preprocess/alfworld.py --data "$GAMES" --out "$WORK/data"
  rm -rf "$WORK/ckpt"
  run 2 e2e_train.log
  test -d "$WORK/ckpt/global_step_2/actor" || { echo "e2e FAILED: no checkpoint at $WORK/ckpt/global_step_2"; exit 1; }
fi
if [ "$phase" = resume ] || [ "$phase" = all ]; then
  run 3 e2e_resume.log
  $PY tests/gpu/check_e2e_log.py "$WORK/e2e_train.log" "$WORK/e2e_resume.log" | tee "$OUT/e2e_check.txt"
fi
