#!/usr/bin/env bash
# SFT of Molmo2 on ALFWorld demonstrations with verl's own SFT trainer (verl.trainer.sft_trainer), on one node.
#
#   MODEL_PATH=... bash examples/sft/run_alfworld_sft_molmo2.sh [hydra overrides...]
#
# The rows (one per agent step: the agent loop's prompt token ids, the demonstrated answer) are written from the
# game tree's demonstrations by `python -m molmo_agent.integrations.verl.sft_data` unless SFT_DIR holds them; the
# config is molmo_agent/config/alfworld_sft.yaml (verl's sft_trainer_engine.yaml and our dataset class). The model
# for the RL run is a checkpoint's huggingface/ folder: OUT/global_step_<N>/huggingface (weights, config,
# tokenizer and processor files).
#
# Variables (defaults in brackets):
#   MODEL_PATH    the checkpoint to train (required): a from-scratch Molmo2 from
#                 `python -m molmo_agent.models.molmo2.make_checkpoint DIR --size small`, or allenai/Molmo2-4B
#                 (then set LR=1e-5 and model.enable_gradient_checkpointing=True)
#   DATA_DIR      [$HOME/data/alfworld]
#   GAMES         [$DATA_DIR/games] the game tree whose walkthroughs are demonstrated (run_alfworld.sh generates
#                 it there; or `python -m molmo_agent.envs.alfworld.generate --out DIR ...`)
#   SFT_DIR       [$DATA_DIR/sft] train/valid_seen/valid_unseen.parquet; written from GAMES when absent
#   SOURCE        [expert] the demonstrations the rows are written from (sft_data --source): `expert` (alfworld's
#                 hand-coded expert, which searches receptacles as a player must), `walkthrough` (the planner's
#                 stored commands) or `mixed` (the expert's where it wins within the step limit, else the walkthrough)
#   THOUGHT       [plain] the answers' thought (sft_data --thought): `plain` (the task, then the action) or
#                 `sighting` (also which things the task names the step's observation shows)
#   HISTORY [2], MAX_PROMPT [2048], MAX_RESPONSE [512]: the RL run's env.history_length, data.max_prompt_length
#                 and data.max_response_length; the rows are built with them, so SFT trains on the RL prompts
#   N_GPUS [1], EPOCHS [10], BATCH [64] (sequences per step, all GPUs), LR [5e-4]
#   OUT           [$HOME/checkpoints/alfworld_sft] checkpoint folder (verl resumes from the latest one there)
#   DRY_RUN=1     print the composed config (Hydra's --cfg job) and exit: no rows are written, nothing trains
# Every argument is passed on as a Hydra override, after the script's own (so it wins).
set -euo pipefail

: "${MODEL_PATH:?set MODEL_PATH to the checkpoint to train}"
DATA_DIR=${DATA_DIR:-$HOME/data/alfworld}
GAMES=${GAMES:-$DATA_DIR/games}
SFT_DIR=${SFT_DIR:-$DATA_DIR/sft}
HISTORY=${HISTORY:-2}
MAX_PROMPT=${MAX_PROMPT:-2048}
MAX_RESPONSE=${MAX_RESPONSE:-512}
N_GPUS=${N_GPUS:-1}
EPOCHS=${EPOCHS:-10}
BATCH=${BATCH:-64}
LR=${LR:-5e-4}
OUT=${OUT:-$HOME/checkpoints/alfworld_sft}
PYTHON=${PYTHON:-python3}

# NVLink multicast off, as in the RL launchers.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 VLLM_ALLREDUCE_USE_SYMM_MEM=0
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1

overrides=(
  model.path="$MODEL_PATH"
  data.train_files="$SFT_DIR/train.parquet"
  data.val_files="$SFT_DIR/valid_seen.parquet"
  data.max_length=$((MAX_PROMPT + MAX_RESPONSE))
  data.train_batch_size="$BATCH"
  optim.lr="$LR"
  trainer.total_epochs="$EPOCHS"
  trainer.n_gpus_per_node="$N_GPUS"
  trainer.default_local_dir="$OUT"
  "$@"
)
config=(--config-path=pkg://molmo_agent.config --config-name=alfworld_sft)

if [ "${DRY_RUN:-0}" = 1 ]; then
  exec "$PYTHON" -m verl.trainer.sft_trainer "${config[@]}" --cfg job --resolve "${overrides[@]}"
fi

if [ ! -f "$SFT_DIR/train.parquet" ] || [ ! -f "$SFT_DIR/valid_seen.parquet" ]; then
  if [ ! -d "$GAMES" ]; then
    echo "no SFT rows in $SFT_DIR and no game tree at $GAMES: set GAMES to an ALFWORLD_DATA root (python -m" \
      "molmo_agent.envs.alfworld.generate --out DIR writes one)" >&2
    exit 1
  fi
  "$PYTHON" -m molmo_agent.integrations.verl.sft_data --games "$GAMES" --model "$MODEL_PATH" --out "$SFT_DIR" \
    --source "${SOURCE:-expert}" --thought "${THOUGHT:-plain}" \
    env.history_length="$HISTORY" data.max_prompt_length="$MAX_PROMPT" data.max_response_length="$MAX_RESPONSE" >&2
fi

exec "$PYTHON" -m torch.distributed.run --standalone --nnodes=1 --nproc_per_node="$N_GPUS" \
  -m verl.trainer.sft_trainer "${config[@]}" "${overrides[@]}"
