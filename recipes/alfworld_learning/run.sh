#!/usr/bin/env bash
# See it learn: a from-scratch Molmo2 learns ALFWorld by SFT on walkthroughs, then GiGPO and GRPO improve it from
# the same SFT checkpoint on the same games, seeds, learning rate and invalid-action penalty; the learning curves
# (success vs environment steps on valid_seen and valid_unseen) go to bench/results/learning_<gpu>.{json,png}.
#
#   bash recipes/alfworld_learning/run.sh [STAGE ...]     in the foreground (default: every stage, in order)
#   bash recipes/alfworld_learning/run.sh start [STAGE ...]   the same under setsid in the background; returns
#   bash recipes/alfworld_learning/run.sh wait [SECONDS]      wait for it (default 540 s), print its stage lines;
#                                                             copy the logs and results so far to $OUT when set
#
# Stages, each skipped when its output is in WORK already (so a stopped run continues where it stopped):
#   model     a from-scratch checkpoint (make_checkpoint --size PRESET) in WORK/model; skipped when MODEL_PATH
#             is set (e.g. allenai/Molmo2-4B: then SFT is optional, SFT_MODEL=MODEL_PATH skips it)
#   games     GAMES_TRAIN / GAMES_VALID_SEEN / GAMES_VALID_UNSEEN generated games (GAMES_SEED) in WORK/data/games
#             and the RL parquet files in WORK/data; with RL_GAMES=fresh (the default) GAMES_TRAIN more training
#             games in WORK/data_fresh (games/, train.parquet)
#   sft-data  one row per demonstration step (the agent loop's prompt ids) in WORK/data/sft, from SFT_SOURCE
#   sft       examples/sft/run_alfworld_sft_molmo2.sh for at most SFT_EPOCHS, saving each epoch; the epoch with
#             the lowest validation loss on valid_seen rows is linked as WORK/sft_model (sft_select.py,
#             WORK/sft_selection.json): the SFT length is fixed before any RL run
#   sft-eval  the SFT checkpoint's success on every validation game (eval_alfworld.sh at TEMPERATURE, the RL
#             runs' episode and prompt settings) -> WORK/sft_eval.json; the RL runs' iteration-0 validations
#             measure the same level again
#   rl        for each seed of SEEDS, a GiGPO and a GRPO run from WORK/sft_model (WORK/runs/<estimator>_seed<S>,
#             console log train.log), validating before the first update and every TEST_FREQ iterations;
#             a run stopped midway resumes from its last checkpoint (saved every SAVE_FREQ), and one whose start
#             lost a rendezvous-port race to another run on the node (EADDRINUSE) is retried once; verl dumps each
#             validation's step samples into WORK/runs/<run>/validation (validation_dump.py keeps each episode's
#             opening prompt and outcome: the report pairs the estimators game by game)
#   rl-gigpo, rl-grpo   one estimator's runs only
#   report    bench/learning.py: the JSON and the plot from the runs' logs (and validation episodes)
#
# Variables (defaults in brackets):
#   WORK [$HOME/alfworld_learning]   PRESET [small]   GPU [h200] (names the result files)
#   GAMES_TRAIN [1000] GAMES_VALID_SEEN [50] GAMES_VALID_UNSEEN [50] GAMES_SEED [0]  (a game depends only on
#                   the seed, its split and its index: 200 training games are the first 200 of 1000)
#   RL_GAMES [fresh]  the RL runs' training games: `fresh` (WORK/data_fresh's: GAMES_TRAIN games after the
#                   demonstrated ones, indices GAMES_TRAIN on, never demonstrated, so every training episode is also
#                   a held-out one) or `demonstrated` (WORK/data's, the games SFT learned from); validation is the
#                   same. On 64 demonstrated games GiGPO's training success rose 0.41 -> 0.63 while valid_unseen did
#                   not move (tests/gpu/results/learn_rl_train64_h200_2026-12-02.txt): what SFT half remembers, RL
#                   memorises
#   SFT_SOURCE [expert] the demonstrations (sft_data --source): `expert` (alfworld's hand-coded expert, which
#                   searches receptacles as a player must, on the games it wins within MAX_STEPS: cloned on the
#                   715 of 1000 games it wins within 30 steps, it won 24 % / 14 % of valid_seen / valid_unseen,
#                   tests/gpu/results/learn_sft_v2_h200_2026-12-01.json), `walkthrough` (the planner's, which goes
#                   straight to hidden objects: 2 % / 4 % on 200 games with the older prompts,
#                   learn_sft_h200x2_2026-11-30.json) or `mixed` (the expert's where it wins, the walkthrough
#                   elsewhere; not measured)
#   SFT_RELABEL []  files of a policy's episodes on training games (space-separated; JSON lines as
#                   `bench/policy_failures.py play` writes them): their states, answered with the hand-coded
#                   expert's action there, are added to the SFT train rows (DAgger: sft_data --relabel)
#   SFT_THOUGHT [plain]  the answers' thought (sft_data --thought): `plain` (the task, then the action) or
#                   `sighting` (also which things the task names the step's observation shows: where the expert
#                   took the object in view, the mended expert's SFT policy did so in 31 of 60 of its own training
#                   states and went on searching, bench/results/sft_imitation_mended_train600_cpu_2026-12-02.json;
#                   trained on the same rows it won 28 % / 14 % of valid_seen / valid_unseen, the plain thought
#                   28 % / 24 %: tests/gpu/results/learn_sft_sighting_h200_2026-12-02.txt)
#   SFT_EPOCHS [10] SFT_LR [5e-4]: the most epochs (the best by validation loss is kept), the SFT learning rate
#                   (on the mended expert's rows, with and without DAgger rows, the validation loss bottomed at
#                   epoch 7 of 8: tests/gpu/results/learn_sft_mended_dagger_h200_2026-12-02.txt; ~40 s an epoch
#                   of 10847 rows on an H200)
#   SEEDS ["0 1"] ITERATIONS [60] TEST_FREQ [10]
#   SAVE_FREQ [TEST_FREQ]  iterations between a run's checkpoints (1 where a time limit ends the run: nothing
#                   after the last checkpoint survives it)
#   SAVE_OPTIMIZER [1]  0: checkpoints hold the weights, verl's extra state (RNG, LR schedule) and the data order,
#                   not AdamW's moments (the small preset: ~0.5 GB instead of ~1.5 GB, for a run that continues on
#                   another machine). A run resumes from a checkpoint without them with fresh moments (verl's
#                   checkpoint.load_contents=[model,extra]), and says so in its log: a departure from an unbroken run
#   LR [2e-5]       the RL learning rate of both estimators, fixed before a comparison by the PPO KL an iteration
#                   moves the SFT policy (aim: at most ~0.01; 5e-5 moved it 0.015-0.055 and both estimators got
#                   worse: recipes/alfworld_learning/README.md)
#   PENALTY [0.1]   the invalid-action penalty of both (verl-agent's 0.1): GiGPO's
#                   algorithm.gigpo.invalid_action_penalty_coef and GRPO's env.reward_invalid_penalty (subtracted
#                   from its episode return per invalid action)
#   REQUIRE_ADMISSIBLE [False]  True: an action the game does not list counts as invalid too, for that penalty and
#                   the invalid-action rate (env.require_admissible). False is verl-agent's meaning (an answer out of
#                   format). Measured on fresh games (GiGPO, two seeds, same games): with True, unlisted actions fell
#                   0.44 -> 0.23 of the steps but valid_unseen fell 0.28 -> 0.14; with False it rose 0.23 -> 0.32
#                   at the compared point (README.md beside this, "Where it stands")
#   CROSS_STEPS [True]  both estimators' episode advantages normalized over a group's step samples
#                   (algorithm.compute_mean_std_cross_steps, verl-agent's default) instead of its episodes: counted
#                   once, an episode passes its advantage to each of its steps, so failures that run to the step
#                   limit carried 56-70 % of a run's advantage mass (the negative part). Paired on the same games,
#                   it helped GRPO (negative share 0.63 -> 0.50, entropy and inadmissible share lower, training
#                   success +0.056) and left GiGPO's training success level (-0.010): README.md beside this
#   TEMPERATURE [0.4]  validation temperature of every run, above 0 (each game once: val_kwargs.n=1)
#   ROLLOUT_TEMPERATURE [1.0] ROLLOUT_TOP_K [-1]  the training rollouts' sampling of both estimators (the
#                   trainer scores log-probs at the same temperature; -1: no top-k). The SFT policy departs from the
#                   demonstrated answer in 27 % of valid_unseen states at 1.0; at 1.5 with top-k 20 in 45 % (a group
#                   of 8 in 93 % instead of 50 %). Above 1.0 a from-scratch preset needs a top-k: it never saw 151,670
#                   of the tokenizer's ids, and at 1.5 they hold 17 % of each token's mass, in 99.7 % of answers
#                   (bench/results/sampling_tail_sft_cpu_2026-12-03.json), so the recipe refuses that pair
#   TRAIN_BATCH [16] GROUP_SIZE [8] MAX_STEPS [30] HISTORY [2] N_GPUS [1]
#   MAX_PROMPT [1024] MAX_RESPONSE [128]  token limits of the SFT rows and of the RL runs alike: the expert's
#                   demonstrations of the 200/50/50 games have prompts of at most 974 tokens and answers of at most
#                   52 (verl's engine pads each micro-batch to its longest sample, not to these limits)
#   MICRO_BATCH [64 / N_GPUS from a PRESET, the config's with MODEL_PATH]  per-GPU micro-batch of the update
#                   (log-prob passes take twice it); the from-scratch presets are small enough for large ones and
#                   train without gradient checkpointing (the small preset's trainer peaked at 17.6 GB with 64,
#                   its response positions scored alone; the update took 20-29 s an iteration instead of 40-53)
#   SFT_ARGS, RL_ARGS  extra Hydra overrides (space-separated) of the SFT and of every RL run
#   RAY_STOP [1]    `ray stop --force` before each RL run (a run stopped by a time limit leaves Ray behind); 0 when
#                   other Ray jobs share the node
#   DRY_RUN=1       the rl stages write each run's checked config to runs/<run>/config.yaml, train nothing
# Every other run_alfworld.sh variable passes through. Fairness: GiGPO uses mean_std_norm (verl-agent's ALFWorld
# setting), GRPO verl's std-normalized default; seed S sets both runs' data order (data.seed) and vLLM's sampling
# seed (actor_rollout_ref.rollout.seed), so the two estimators of a seed see the same games in the same order.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
export WORK=${WORK:-$HOME/alfworld_learning}
PRESET=${PRESET:-small}
GPU=${GPU:-h200}
SEEDS=${SEEDS:-0 1}
ITERATIONS=${ITERATIONS:-60}
TEST_FREQ=${TEST_FREQ:-10}
LR=${LR:-2e-5}
PENALTY=${PENALTY:-0.1}
REQUIRE_ADMISSIBLE=${REQUIRE_ADMISSIBLE:-False}
CROSS_STEPS=${CROSS_STEPS:-True}
TEMPERATURE=${TEMPERATURE:-0.4}
ROLLOUT_TEMPERATURE=${ROLLOUT_TEMPERATURE:-1.0}
ROLLOUT_TOP_K=${ROLLOUT_TOP_K:--1}
SFT_EPOCHS=${SFT_EPOCHS:-10}
SFT_LR=${SFT_LR:-5e-4}
SFT_SOURCE=${SFT_SOURCE:-expert}
SFT_RELABEL=${SFT_RELABEL:-}
SFT_THOUGHT=${SFT_THOUGHT:-plain}
RL_GAMES=${RL_GAMES:-fresh}
case $RL_GAMES in
  demonstrated | fresh) ;;
  *) echo "RL_GAMES must be demonstrated or fresh, not '$RL_GAMES'" >&2; exit 2 ;;
esac
if [ -z "${MODEL_PATH:-}" ] && [ "$ROLLOUT_TOP_K" -le 0 ] && awk "BEGIN { exit !($ROLLOUT_TEMPERATURE > 1) }"; then
  echo "ROLLOUT_TEMPERATURE=$ROLLOUT_TEMPERATURE needs ROLLOUT_TOP_K (e.g. 20) with a from-scratch preset: above 1.0" \
    "its samples fill with the tokens it never saw (bench/results/sampling_tail_sft_cpu_2026-12-03.json)" >&2
  exit 2
fi
PYTHON=${PYTHON:-python3}
export DATA_DIR=$WORK/data PYTHON N_GPUS=${N_GPUS:-1} TRAIN_BATCH=${TRAIN_BATCH:-16} GROUP_SIZE=${GROUP_SIZE:-8} \
  MAX_STEPS=${MAX_STEPS:-30} HISTORY=${HISTORY:-2} MAX_PROMPT=${MAX_PROMPT:-1024} MAX_RESPONSE=${MAX_RESPONSE:-128}
GAMES=$DATA_DIR/games
SFT_DIR=$DATA_DIR/sft
FRESH_DIR=$WORK/data_fresh
SFT_MODEL=${SFT_MODEL:-$WORK/sft_model}
STAGES=(model games sft-data sft sft-eval rl report)

timed() {  # timed STAGE COMMAND...: run it, add its seconds to WORK/stage_seconds/STAGE
  local start=$SECONDS
  "${@:2}"
  mkdir -p "$WORK/stage_seconds"
  echo $(( $(cat "$WORK/stage_seconds/$1" 2>/dev/null || echo 0) + SECONDS - start )) > "$WORK/stage_seconds/$1"
}

base_model() { echo "${MODEL_PATH:-$WORK/model}"; }

stage_model() {
  [ -n "${MODEL_PATH:-}" ] || [ -f "$WORK/model/config.json" ] && return 0
  "$PYTHON" -m molmo_agent.models.molmo2.make_checkpoint "$WORK/model" --size "$PRESET"
}

stage_games() {
  # The generator builds each tree beside its folder and moves it in only when complete.
  if [ ! -f "$DATA_DIR/valid_unseen.parquet" ]; then
    [ -d "$GAMES" ] || "$PYTHON" -m molmo_agent.envs.alfworld.generate --out "$GAMES" --train "${GAMES_TRAIN:-1000}" \
      --valid-seen "${GAMES_VALID_SEEN:-50}" --valid-unseen "${GAMES_VALID_UNSEEN:-50}" --seed "${GAMES_SEED:-0}"
    "$PYTHON" "$repo/examples/data_preprocess/alfworld.py" --data "$GAMES" --out "$DATA_DIR"
  fi
  [ "$RL_GAMES" = fresh ] && [ ! -f "$FRESH_DIR/train.parquet" ] || return 0
  [ -d "$FRESH_DIR/games" ] || "$PYTHON" -m molmo_agent.envs.alfworld.generate --out "$FRESH_DIR/games" \
    --train "${GAMES_TRAIN:-1000}" --train-start "${GAMES_TRAIN:-1000}" --seed "${GAMES_SEED:-0}"
  "$PYTHON" "$repo/examples/data_preprocess/alfworld.py" --data "$FRESH_DIR/games" --out "$FRESH_DIR"
}

stage_sft_data() {
  [ -f "$SFT_DIR/valid_unseen.parquet" ] && return 0
  local relabel=() episodes
  for episodes in $SFT_RELABEL; do relabel+=(--relabel "$episodes"); done
  "$PYTHON" -m molmo_agent.integrations.verl.sft_data --games "$GAMES" --model "$(base_model)" --out "$SFT_DIR" \
    --source "$SFT_SOURCE" --thought "$SFT_THOUGHT" ${relabel[@]+"${relabel[@]}"} \
    env.max_steps="$MAX_STEPS" env.history_length="$HISTORY" data.max_prompt_length="$MAX_PROMPT" \
    data.max_response_length="$MAX_RESPONSE"
}

stage_sft() {  # skipped when SFT_MODEL names a checkpoint of its own (e.g. allenai/Molmo2-4B without SFT)
  [ "$SFT_MODEL" != "$WORK/sft_model" ] || [ -f "$SFT_MODEL/config.json" ] && return 0
  # Each epoch's model is saved (the HF model only: these runs are short and never resumed), and the one with
  # the lowest validation loss becomes the SFT checkpoint (WORK/sft_selection.json says which).
  MODEL_PATH=$(base_model) SFT_DIR=$SFT_DIR EPOCHS=$SFT_EPOCHS LR=$SFT_LR OUT=$WORK/sft \
    bash "$repo/examples/sft/run_alfworld_sft_molmo2.sh" trainer.save_freq=after_each_epoch \
    "checkpoint.save_contents=[hf_model]" "${SFT_ARGS[@]}" 2>&1 | tee -a "$WORK/sft.log"
  local best
  best=$("$PYTHON" -m molmo_agent.integrations.verl.sft_select "$WORK/sft.log" "$WORK/sft" \
    --out "$WORK/sft_selection.json")
  ln -sfn "$best" "$SFT_MODEL"
}

weights_only() {  # weights_only CKPT_DIR: the run's latest checkpoint holds no optimizer state
  local step
  step=$(cat "$1/latest_checkpointed_iteration.txt" 2>/dev/null) && [ -d "$1/global_step_$step/actor" ] &&
    ! compgen -G "$1/global_step_$step/actor/optim_*" > /dev/null
}

stop_ray() {  # a run stopped by a time limit may leave Ray's processes behind (RAY_STOP=0: other runs share the node)
  [ "${RAY_STOP:-1}" = 0 ] || ray stop --force >/dev/null 2>&1 || true
}

stage_sft_eval() {
  [ -f "$WORK/sft_eval.json" ] && return 0
  stop_ray
  OUT=$WORK/sft_eval.json TEMPERATURE=$TEMPERATURE bash "$repo/examples/gigpo_trainer/eval_alfworld.sh" "$SFT_MODEL" \
    data.max_prompt_length="$MAX_PROMPT" data.max_response_length="$MAX_RESPONSE" "${RL_ARGS[@]}"
}

rl_run() {  # rl_run ESTIMATOR SEED: one run from the SFT checkpoint, skipped when it finished before
  local dir=$WORK/runs/$1_seed$2
  [ -f "$dir/done" ] && return 0
  mkdir -p "$dir"
  local estimator=(algorithm.adv_estimator=gigpo algorithm.gigpo.mode=mean_std_norm)
  [ "$1" = grpo ] && estimator=(algorithm.adv_estimator=grpo algorithm.norm_adv_by_std_in_grpo=True
                                env.reward_invalid_penalty="$PENALTY")
  local shape=()  # a from-scratch preset: large micro-batches, and activations kept for the backward
  local micro_batch=${MICRO_BATCH:-$([ -n "${MODEL_PATH:-}" ] || echo $((64 / N_GPUS)))}
  [ -n "$micro_batch" ] && shape=(actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$micro_batch"
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=$((2 * micro_batch))
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=$((2 * micro_batch)))
  [ -n "${MODEL_PATH:-}" ] || shape+=(actor_rollout_ref.model.enable_gradient_checkpointing=False)
  local games=()
  if [ "$RL_GAMES" = fresh ]; then
    [ -f "$FRESH_DIR/train.parquet" ] ||
      { echo "RL_GAMES=fresh: $FRESH_DIR/train.parquet is missing (the games stage makes it)" >&2; return 1; }
    games=(data.train_files="$FRESH_DIR/train.parquet")
  fi
  local checkpoint=(trainer.save_freq="${SAVE_FREQ:-$TEST_FREQ}")
  [ "${SAVE_OPTIMIZER:-1}" = 1 ] || checkpoint+=("actor_rollout_ref.actor.checkpoint.save_contents=[model,extra]")
  if weights_only "$dir/ckpt"; then
    checkpoint+=("actor_rollout_ref.actor.checkpoint.load_contents=[model,extra]")
    echo "$1 seed $2 resumes from iteration $(cat "$dir/ckpt/latest_checkpointed_iteration.txt")'s weights with" \
      "fresh AdamW moments: its checkpoint holds none" | tee -a "$dir/train.log"
  fi
  local launch=(env MODEL_PATH="$SFT_MODEL" EXPERIMENT="learning_$1_seed$2"
    bash "$repo/examples/gigpo_trainer/run_alfworld_molmo2.sh" "${estimator[@]}"
    algorithm.gigpo.invalid_action_penalty_coef="$PENALTY" env.require_admissible="$REQUIRE_ADMISSIBLE"
    algorithm.compute_mean_std_cross_steps="$CROSS_STEPS"
    actor_rollout_ref.actor.optim.lr="$LR"
    actor_rollout_ref.rollout.temperature="$ROLLOUT_TEMPERATURE" actor_rollout_ref.rollout.top_k="$ROLLOUT_TOP_K"
    data.max_prompt_length="$MAX_PROMPT" data.max_response_length="$MAX_RESPONSE"
    data.seed="$2" actor_rollout_ref.rollout.seed="$2"
    actor_rollout_ref.rollout.val_kwargs.n=1
    actor_rollout_ref.rollout.val_kwargs.temperature="$TEMPERATURE"
    actor_rollout_ref.rollout.val_kwargs.do_sample=True
    trainer.total_training_steps="$ITERATIONS" trainer.total_epochs=1000
    trainer.val_before_train=True trainer.test_freq="$TEST_FREQ" "${checkpoint[@]}"
    trainer.default_local_dir="$dir/ckpt" "trainer.logger=[console]"
    trainer.validation_data_dir="$dir/validation"
    "${games[@]}" "${shape[@]}" "${RL_ARGS[@]}")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    "${launch[@]}" > "$dir/config.yaml"
    return
  fi
  stop_ray
  local attempt
  for attempt in 1 2; do
    "${launch[@]}" 2>&1 | tee -a "$dir/train.log" && break
    # Runs starting together on one node can draw the same rendezvous port (EADDRINUSE at start-up): only that
    # is retried, once (the run resumes from its last checkpoint). Any other failure returns: a crashed run is
    # never marked done (set -e does not stop a function called on the left of &&, as in stage_rl).
    [ $attempt = 1 ] && tail -n 300 "$dir/train.log" | grep -q EADDRINUSE || return 1
  done
  touch "$dir/done"
}

stage_rl_estimator() {
  local seed
  for seed in $SEEDS; do rl_run "$1" "$seed" || return; done
}

stage_rl() { stage_rl_estimator gigpo && stage_rl_estimator grpo; }

stage_report() {  # the curves; the interval pairs games too where every run's validations were dumped
  local runs=() episodes=() seed estimator dir
  for estimator in gigpo grpo; do
    for seed in $SEEDS; do
      dir=$WORK/runs/${estimator}_seed$seed
      runs+=("$estimator:$seed:$dir/train.log")
      if [ -d "$dir/validation" ]; then
        "$PYTHON" -m molmo_agent.integrations.verl.validation_dump "$dir/validation" --out "$dir/episodes.jsonl.gz"
        episodes+=("$estimator:$seed:$dir/episodes.jsonl.gz")
      fi
    done
  done
  [ ${#episodes[@]} -eq ${#runs[@]} ] && episodes=(--episodes "${episodes[@]}" --games "$GAMES") || episodes=()
  "$PYTHON" "$repo/bench/learning.py" --gpu "$GPU" --work "$WORK" --preset "$PRESET" \
    --model "$(base_model)" --sft-model "$SFT_MODEL" --sft-source "$SFT_SOURCE" --temperature "$TEMPERATURE" \
    --train-batch "$TRAIN_BATCH" --group-size "$GROUP_SIZE" --games-seed "${GAMES_SEED:-0}" --rl-games "$RL_GAMES" \
    --command "recipes/alfworld_learning/run.sh (SEEDS='$SEEDS' ITERATIONS=$ITERATIONS LR=$LR PENALTY=$PENALTY)" \
    --out-dir "$repo/bench/results" "${runs[@]}" "${episodes[@]}"
}

run_stage() {
  echo "=== $1 ($(date +%T)) ==="
  case $1 in
    model | games | sft-data | sft | sft-eval | rl | report) timed "$1" "stage_${1//-/_}" ;;
    rl-gigpo | rl-grpo) timed rl stage_rl_estimator "${1#rl-}" ;;
    *) echo "unknown stage $1 (${STAGES[*]} rl-gigpo rl-grpo)" >&2; return 2 ;;
  esac
  echo "=== $1 done ($(date +%T)) ==="
}

read -ra SFT_ARGS <<< "${SFT_ARGS:-}"
read -ra RL_ARGS <<< "${RL_ARGS:-}"
case ${1:-} in
  start)
    shift
    mkdir -p "$WORK" && rm -f "$WORK/recipe.done"
    (setsid nohup bash -c 'bash "$0" "$@" > "$WORK/recipe.log" 2>&1; echo "exit status $?" >> "$WORK/recipe.log";
                           touch "$WORK/recipe.done"' "$0" "$@" > /dev/null 2>&1 &)
    echo "started: run.sh $* (log: $WORK/recipe.log)"
    ;;
  wait)
    deadline=$((SECONDS + ${2:-540}))
    until [ -f "$WORK/recipe.done" ] || [ $SECONDS -ge $deadline ]; do sleep 5; done
    grep -E '^=== |^exit status|step:[0-9]+ - ' "$WORK/recipe.log" | cut -c1-300 | tail -40
    if [ -f "$WORK/recipe.done" ]; then echo "recipe: done"; else echo "recipe: still running"; fi
    if [ -n "${OUT:-}" ]; then  # the logs and results so far, for the device tool to bring back
      mkdir -p "$OUT" && cp "$WORK"/*.log "$WORK"/*.json "$OUT/" 2>/dev/null
      for log in "$WORK"/runs/*/train.log; do [ -f "$log" ] && cp "$log" "$OUT/$(basename "$(dirname "$log")").log"; done
      cp "$repo"/bench/results/learning_* "$OUT/" 2>/dev/null
    fi
    true
    ;;
  *)
    stages=("$@")
    [ ${#stages[@]} -gt 0 ] || stages=("${STAGES[@]}")
    for stage in "${stages[@]}"; do run_stage "$stage"; done
    ;;
esac
