#!/usr/bin/env bash
# GiGPO on ALFWorld with a text LLM (Qwen/Qwen2.5-1.5B-Instruct by default, as verl-agent's ALFWorld example).
#
#   bash examples/gigpo_trainer/run_alfworld_qwen.sh [hydra overrides...]
#
# Variables as in run_alfworld.sh. A 1.5B model with FSDP, AdamW, a reference model and vLLM fits on one 80 GB
# GPU (~28 GiB for AdamW's update).
set -euo pipefail
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-1.5B-Instruct}
export EXPERIMENT=${EXPERIMENT:-alfworld_gigpo_qwen}
exec bash "$(dirname "$0")/run_alfworld.sh" actor_rollout_ref.model.use_remove_padding=True "$@"
