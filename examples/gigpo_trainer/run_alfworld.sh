#!/usr/bin/env bash
# GiGPO (or another estimator) on ALFWorld with verl: the shared launcher of run_alfworld_*.sh.
#
#   MODEL_PATH=... DATA_DIR=... bash examples/gigpo_trainer/run_alfworld.sh [hydra overrides...]
#
# Variables (defaults in brackets):
#   MODEL_PATH   model directory or hub id (required); a hub id needs the hub reachable or the model in the
#                local hub cache, else the config check says so before anything starts
#   DATA_DIR     folder of train/valid_seen/valid_unseen.parquet from examples/data_preprocess/alfworld.py
#                [$HOME/data/alfworld]. With no parquet file there, the script first generates a game set into
#                $DATA_DIR/games (python -m molmo_agent.envs.alfworld.generate, on all cores) and writes the
#                parquet files from it: GAMES_TRAIN [400], GAMES_VALID_SEEN [100], GAMES_VALID_UNSEEN [100] games,
#                GAMES_SEED [0]; a $DATA_DIR/games already there is used as it is
#   N_GPUS       GPUs per node [1];  NNODES [1]
#   TRAIN_BATCH  games per iteration, B [16];  GROUP_SIZE  sessions per game, G [8]
#   MAX_STEPS    agent steps per episode [50]; HISTORY  (observation, action) pairs in the prompt [2]
#   TP           vLLM tensor-parallel size per engine [1]; GPUs per node must be a multiple of it
#   OFFLOAD      verl's FSDP parameter and optimizer offload to CPU between phases [False]: frees the GPU for
#                vLLM during the rollout; the update still holds everything on the GPU, and the pinned host
#                copies can cost up to twice their size in host RAM (the pinned allocator rounds blocks up)
#   KV_CACHE_GB  vLLM's KV cache in GiB instead of its share of the GPU (rollout.gpu_memory_utilization) [unset]:
#                vLLM then skips its start-up memory profiling, which fails when another process on the GPU frees
#                memory meanwhile, so that several small runs (seeds, tests) can share one GPU (vLLM still
#                refuses to start while less than gpu_memory_utilization of the GPU is free: lower it too)
#   ROLLOUT_COMPILE  0: vLLM serves without torch.compile, CUDA graphs of decode steps only [1: verl's default,
#                compiled, piecewise and full graphs]. Off, a learning lane's vLLM start-up was no shorter
#                (bench/results/startup_split_*); what compilation gains a small model is not yet measured
#   DRY_RUN=1    run every check of the config (model directory, game data, prompt length, memory, ...),
#                print the resolved config and exit: Ray never starts. A bad config exits non-zero with its error
# Every argument is passed on as a Hydra override, after the script's own (so it wins).
set -euo pipefail

: "${MODEL_PATH:?set MODEL_PATH to a model directory or hub id}"
DATA_DIR=${DATA_DIR:-$HOME/data/alfworld}
N_GPUS=${N_GPUS:-1}
NNODES=${NNODES:-1}
TRAIN_BATCH=${TRAIN_BATCH:-16}
GROUP_SIZE=${GROUP_SIZE:-8}
MAX_STEPS=${MAX_STEPS:-50}
HISTORY=${HISTORY:-2}
TP=${TP:-1}
OFFLOAD=${OFFLOAD:-False}
PROJECT=${PROJECT:-molmo_agent}
EXPERIMENT=${EXPERIMENT:-alfworld_gigpo_$(basename "$MODEL_PATH")}

# vLLM's FlashInfer sampler JIT-compiles for minutes on a fresh node; the default sampler is as good here.
export VLLM_USE_FLASHINFER_SAMPLER=${VLLM_USE_FLASHINFER_SAMPLER:-0}
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1
PYTHON=${PYTHON:-python3}

# Data preparation reports on stderr: under DRY_RUN the script's stdout is the config alone.
if ! compgen -G "$DATA_DIR/*.parquet" >/dev/null; then
  games=$DATA_DIR/games
  if [ ! -d "$games" ]; then
    # The generator builds the tree beside $games and moves it in only when complete.
    "$PYTHON" -m molmo_agent.envs.alfworld.generate --out "$games" --train "${GAMES_TRAIN:-400}" \
      --valid-seen "${GAMES_VALID_SEEN:-100}" --valid-unseen "${GAMES_VALID_UNSEEN:-100}" --seed "${GAMES_SEED:-0}" >&2
  fi
  "$PYTHON" "$(dirname "$0")/../data_preprocess/alfworld.py" --data "$games" --out "$DATA_DIR" >&2
fi

dry_run=()
[ "${DRY_RUN:-0}" = 1 ] && dry_run=(--dry-run)
vllm_args=()  # vLLM's engine arguments (rollout.engine_kwargs.vllm)
[ -z "${KV_CACHE_GB:-}" ] ||
  vllm_args+=("++actor_rollout_ref.rollout.engine_kwargs.vllm.kv_cache_memory_bytes=$((KV_CACHE_GB << 30))")
no_compile='{"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}'  # a JSON string: verl passes it to --compilation-config
[ "${ROLLOUT_COMPILE:-1}" != 0 ] ||
  vllm_args+=("++actor_rollout_ref.rollout.engine_kwargs.vllm.compilation_config='$no_compile'")

exec "$PYTHON" -m molmo_agent.main "${dry_run[@]}" \
  data.train_files="$DATA_DIR/train.parquet" \
  data.val_files="[$DATA_DIR/valid_seen.parquet,$DATA_DIR/valid_unseen.parquet]" \
  data.train_batch_size="$TRAIN_BATCH" \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.rollout.n="$GROUP_SIZE" \
  actor_rollout_ref.rollout.tensor_model_parallel_size="$TP" \
  actor_rollout_ref.actor.ppo_mini_batch_size="$TRAIN_BATCH" \
  actor_rollout_ref.actor.fsdp_config.param_offload="$OFFLOAD" \
  actor_rollout_ref.actor.fsdp_config.optimizer_offload="$OFFLOAD" \
  actor_rollout_ref.ref.fsdp_config.param_offload="$OFFLOAD" \
  env.max_steps="$MAX_STEPS" \
  env.history_length="$HISTORY" \
  trainer.n_gpus_per_node="$N_GPUS" \
  trainer.nnodes="$NNODES" \
  trainer.project_name="$PROJECT" \
  trainer.experiment_name="$EXPERIMENT" \
  "${vllm_args[@]}" \
  "$@"
