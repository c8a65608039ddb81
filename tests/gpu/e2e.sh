#!/usr/bin/env bash
# End to end on one GPU: two GiGPO iterations with the tiny Molmo2 through Ray + FSDP + vLLM with real weight
# sync, validation and a checkpoint; then a second run resumes from that checkpoint and trains a third iteration.
# tests/gpu/check_e2e_log.py reads the logs: finite losses, metrics logged, vLLM's token probabilities equal to
# the trainer's (the weights were synced), validation on every source of the validation files, resume.
#
#   bash tests/gpu/e2e.sh [train|resume|negative|all]    (from the repository root; logs under $OUT or ./e2e-out)
#
# E2E_ENV picks the environment: `alfworld` (default: 4 generated train games, 2 + 2 validation) or `sokoban`
# (8 training levels, 4 validation levels; every step sample carries its picture, checked as
# env/images_per_step = 1). `train` runs the first run, `resume` the second and the log check (each fits one
# 10-minute call; the logs are kept in the work folder, so phases can run in separate calls, and copied to $OUT);
# `negative` (sokoban) trains one iteration with the trainer's pixels zeroed (MOLMO_AGENT_ZERO_TRAINER_PIXELS=1),
# where the correlation must fall below the threshold, proving that the check sees the pixels; `all` runs every
# phase, `negative` before the log check.
# The tiny checkpoint's weights are redrawn at unit gain (vllm_harness.resample_weights): at the default init
# every token has probability ~1/vocab whatever the weights, and the trainer-vs-vLLM comparison could not tell
# synced weights from any others. For sokoban its attention is also sharpened (gain 3 on the q/k norms): with
# near-uniform attention over ~600 prompt tokens the picture barely moves the answer's probabilities (zeroed
# pixels still correlate at 0.99 on the CPU), sharpened at 0.76 while bf16 against fp32 stays at 0.996
# (tests/test_gpu_negative_control.py keeps it so).
# Variables: GAMES (alfworld: an existing game tree), E2E_S (time limit of each run, default 540 s), E2E_WORK
# (work folder, default $HOME/molmo_agent_e2e[_sokoban]: kept between calls), RAY_STOP (1: `ray stop` before
# each run, for a run killed by its time limit; 0 when other runs share the node, as background.sh lanes do),
# E2E_GPUS (default 1: FSDP over that many GPUs) and E2E_TP (vLLM's tensor-parallel size, default E2E_GPUS); with
# more than one GPU the work folder's name ends in _<N>gpu. E2E_RAY_ADDRESS (e.g. http://127.0.0.1:8265): submit
# each run as a job to that running Ray cluster (`ray job submit --working-dir . -- ...`) instead of starting one.
# KV_CACHE_GB (run_alfworld.sh's): vLLM's KV cache fixed at that many GiB; vLLM then skips the start-up memory
# profiling that fails when another process on the GPU frees memory, so runs can share a GPU (background.sh lanes
# started with it may).
set -euo pipefail
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 VLLM_USE_FLASHINFER_SAMPLER=0
# vLLM's INFO lines carry the times of its start-up steps (verl sets WARN unless the variable is set): a verl
# launch takes minutes to start, and these say where they go
export VLLM_LOGGING_LEVEL=${VLLM_LOGGING_LEVEL:-INFO}
phase=${1:-all}
ENV_NAME=${E2E_ENV:-alfworld}
OUT=${OUT:-$PWD/e2e-out}
GPUS=${E2E_GPUS:-1}
suffix=$([ "$GPUS" = 1 ] || echo "_${GPUS}gpu")
case $ENV_NAME in
  alfworld) WORK=${E2E_WORK:-$HOME/molmo_agent_e2e$suffix} LAUNCH=examples/gigpo_trainer/run_alfworld_molmo2.sh
            VAL_DATA=("$WORK/data/valid_seen.parquet" "$WORK/data/valid_unseen.parquet") CHECK_ARGS=() GAIN=1 ;;
  sokoban)  WORK=${E2E_WORK:-$HOME/molmo_agent_e2e_sokoban$suffix} LAUNCH=examples/gigpo_trainer/run_sokoban_molmo2.sh
            VAL_DATA=("$WORK/data/valid.parquet") CHECK_ARGS=(--images-per-step 1) GAIN=3 ;;
  *) echo "E2E_ENV=$ENV_NAME: expected alfworld or sokoban"; exit 2 ;;
esac
mkdir -p "$OUT" "$WORK"
PY=${PYTHON:-python3}

run() {  # run STEPS LOG CKPT: train until global step STEPS (resuming from CKPT when it holds a checkpoint)
  # a mini-batch is TRAIN_BATCH x GROUP_SIZE = 4 step samples, split over the GPUs: whole micro-batches on each
  local status=0 micro=$((4 / GPUS))
  # a run killed by its time limit may leave Ray's processes behind (never stop a cluster the run is submitted to)
  [ "${RAY_STOP:-1}" = 0 ] || [ -n "${E2E_RAY_ADDRESS:-}" ] || ray stop --force >/dev/null 2>&1 || true
  # the variables the launcher reads, named here: a Ray job's entrypoint sees only the cluster's environment
  local launch=(env MODEL_PATH="$WORK/model" DATA_DIR="$WORK/data" N_GPUS="$GPUS" TP="${E2E_TP:-$GPUS}" TRAIN_BATCH=2
    KV_CACHE_GB="${KV_CACHE_GB:-}" VLLM_LOGGING_LEVEL="$VLLM_LOGGING_LEVEL"
    GROUP_SIZE=2 MAX_STEPS=3 OFFLOAD=False PYTHON="$PY" bash "$LAUNCH"
    data.max_prompt_length=1536 data.max_response_length=48
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$micro"
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$micro"
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu="$micro"
    actor_rollout_ref.rollout.gpu_memory_utilization=0.3 actor_rollout_ref.rollout.enforce_eager=True
    actor_rollout_ref.rollout.calculate_log_probs=True
    actor_rollout_ref.rollout.agent.num_workers=1
    actor_rollout_ref.rollout.val_kwargs.temperature=0.4
    trainer.total_training_steps="$1" trainer.total_epochs=100 trainer.val_before_train=False
    trainer.test_freq=2 trainer.save_freq=2 trainer.default_local_dir="$3"
    "trainer.logger=[console,tensorboard]" trainer.experiment_name="e2e_$ENV_NAME")
  # E2E_RAY_ADDRESS: the same command as the entrypoint of a job on a running Ray cluster (docs/training.md)
  [ -z "${E2E_RAY_ADDRESS:-}" ] ||
    launch=(ray job submit --address "$E2E_RAY_ADDRESS" --working-dir . -- "${launch[@]}")
  timeout "${E2E_S:-540}" "${launch[@]}" 2>&1 | tee "$WORK/$2" || status=$?
  cp "$WORK/$2" "$OUT/"
  return "$status"
}

if [ "$phase" = train ] || [ "$phase" = all ]; then
  if [ ! -f "$WORK/model/config.json" ]; then
    $PY -m molmo_agent.models.molmo2.make_checkpoint "$WORK/model-init" --size tiny
    $PY -c "import sys; from pathlib import Path; sys.path.insert(0, 'tests/gpu'); import vllm_harness as h; \
h.resample_weights(Path('$WORK/model-init'), Path('$WORK/model'), seed=1, attention_gain=$GAIN)"
  fi
  if [ "$ENV_NAME" = sokoban ]; then
    [ -f "$WORK/data/train.parquet" ] || $PY examples/data_preprocess/sokoban.py --out "$WORK/data" --train 8 --val 4
  else
    GAMES=${GAMES:-$WORK/games}
    [ -d "$GAMES" ] || $PY -m molmo_agent.envs.alfworld.generate --out "$GAMES" --train 4 --valid-seen 2 \
      --valid-unseen 2 --seed 0
    $PY examples/data_preprocess/alfworld.py --data "$GAMES" --out "$WORK/data"
  fi
  rm -rf "$WORK/ckpt"
  run 2 e2e_train.log "$WORK/ckpt"
  test -d "$WORK/ckpt/global_step_2/actor" || { echo "e2e FAILED: no checkpoint at $WORK/ckpt/global_step_2"; exit 1; }
fi
if [ "$phase" = resume ] || [ "$phase" = all ]; then
  run 3 e2e_resume.log "$WORK/ckpt"
fi
if [ "$ENV_NAME" = sokoban ] && { [ "$phase" = negative ] || [ "$phase" = all ]; }; then
  rm -rf "$WORK/ckpt-negative"
  MOLMO_AGENT_ZERO_TRAINER_PIXELS=1 run 1 e2e_negative.log "$WORK/ckpt-negative"
  CHECK_ARGS+=(--negative "$WORK/e2e_negative.log")
fi
if [ "$phase" = resume ] || [ "$phase" = all ] || [ "$phase" = negative ]; then
  $PY tests/gpu/check_e2e_log.py "$WORK/e2e_train.log" "$WORK/e2e_resume.log" --val-data "${VAL_DATA[@]}" \
    "${CHECK_ARGS[@]}" | tee "$OUT/e2e_check_$ENV_NAME.txt"
fi
