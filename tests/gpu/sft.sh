#!/usr/bin/env bash
# The learning recipe's path in small, on one GPU: recipes/alfworld_learning/run.sh's own stages with the tiny
# Molmo2 on 4 generated training games (2 + 2 validation): SFT rows, ~20 SFT steps through verl's SFT trainer,
# an evaluation of the SFT checkpoint (the recipe's sft-eval: eval_alfworld.sh -> JSON), then 2 GiGPO iterations
# from it that validate before the first update and after the second. Checks: the SFT checkpoint loads in the RL
# trainer and vLLM (both runs finish), the evaluation JSON has success for both splits, and the RL log's curve
# (bench/learning.py) has its iteration-0 and iteration-2 validations and a positive environment-step count.
#
#   bash tests/gpu/sft.sh [sft|eval|rl|all]    (from the repository root; logs under $OUT or ./sft-out)
#
# Each phase fits one 10-minute call on a warm node (work kept in SFT_WORK, default $HOME/molmo_agent_sft);
# `all` (default) runs the three. SFT_S: time limit of each phase (default 540 s).
set -euo pipefail
export PYTHONUNBUFFERED=1 HYDRA_FULL_ERROR=1 VLLM_USE_FLASHINFER_SAMPLER=0
phase=${1:-all}
OUT=${OUT:-$PWD/sft-out}
export WORK=${SFT_WORK:-$HOME/molmo_agent_sft} PYTHON=${PYTHON:-python3}
mkdir -p "$OUT" "$WORK"
# Small games, ~20 SFT steps, short answers: the recipe's knobs, nothing else changed.
export PRESET=tiny GPU=smoke GAMES_TRAIN=4 GAMES_VALID_SEEN=2 GAMES_VALID_UNSEEN=2 SEEDS=0 ITERATIONS=2 TEST_FREQ=2 \
  TRAIN_BATCH=2 GROUP_SIZE=2 MAX_STEPS=5 MAX_RESPONSE=128 SFT_EPOCHS=1000 LR=1e-5
export SFT_ARGS="trainer.total_training_steps=20 data.train_batch_size=8 data.max_token_len_per_gpu=8192"
export RL_ARGS="actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4 \
actor_rollout_ref.rollout.gpu_memory_utilization=0.3 actor_rollout_ref.rollout.enforce_eager=True \
actor_rollout_ref.rollout.agent.num_workers=1"
recipe=recipes/alfworld_learning/run.sh

if [ "$phase" = sft ] || [ "$phase" = all ]; then
  timeout "${SFT_S:-540}" bash "$recipe" model games sft-data sft
  cp "$WORK/sft.log" "$OUT/"
  test -f "$WORK/sft_model/config.json" || { echo "sft FAILED: no checkpoint at $WORK/sft_model"; exit 1; }
fi
if [ "$phase" = eval ] || [ "$phase" = all ]; then
  timeout "${SFT_S:-540}" bash "$recipe" sft-eval
  cp "$WORK/sft_eval.json" "$WORK/sft_eval.log" "$OUT/"
  "$PYTHON" -c "import json, sys; splits = json.load(open(sys.argv[1]))['splits']; \
assert {'valid_seen', 'valid_unseen'} <= set(splits), splits; print({s: v['success'] for s, v in splits.items()})" \
    "$OUT/sft_eval.json"
fi
if [ "$phase" = rl ] || [ "$phase" = all ]; then
  timeout "${SFT_S:-540}" bash "$recipe" rl-gigpo
  cp "$WORK/runs/gigpo_seed0/train.log" "$OUT/sft_rl.log"
  "$PYTHON" -c "import sys; sys.path.insert(0, 'bench'); import learning; \
curve = learning.learning_curve(open(sys.argv[1]).read(), $TRAIN_BATCH * $GROUP_SIZE); \
assert [p['iteration'] for p in curve] == [0, 2] and curve[-1]['env_steps'] > 0, curve; print(curve)" \
    "$WORK/runs/gigpo_seed0/train.log"
fi
echo "sft smoke: phase $phase passed"
