#!/usr/bin/env bash
# The GPU suite on one GPU (tests/gpu/README.md): our vLLM Molmo2 against our transformers Molmo2.
# Usage: tests/gpu/run_all.sh [STAGE ...]     stages, in this order by default (bench only when named):
#   tiny   every check of check_vllm_molmo2.py on the tiny checkpoint (plugin, tokens, parity, sync, sleep,
#          bad_input, ray)                                                         ~5 min on a fresh node
#   e2e    tests/gpu/e2e.sh: two GiGPO iterations through Ray + FSDP + vLLM, then a resumed third
#   e2e-sokoban  e2e.sh on visual Sokoban (E2E_ENV=sokoban): one image in every step sample, then a negative
#          control (the trainer's pixels zeroed: the correlation must fall below the threshold)   ~15 min
#   tiny-tp2   every check of `tiny` with each vLLM engine tensor-parallel over two GPUs (each rank fed by its
#          own sender in a sync, parameters compared rank by rank)                  needs two GPUs
#   e2e-2gpu, e2e-sokoban-2gpu  the same on two GPUs: FSDP over both, vLLM at tensor-parallel size 2 (E2E_TP)
#   ray-job    e2e.sh through a Ray cluster: `ray start --head` (object store sized explicitly: RAY_OBJECT_STORE_GB,
#          default 20, since some nodes' MemTotal starts far below their memory), each run submitted with
#          `ray job submit` (docs/training.md), then `ray stop`
#   sft    tests/gpu/sft.sh: the learning recipe's stages in small (tiny model, ~20 SFT steps, evaluation, 2 GiGPO
#          iterations from the SFT checkpoint); run it before any real run of recipes/alfworld_learning
#   learn-sft  the learning recipe's first stages at full size (recipes/alfworld_learning/run.sh model games
#          sft-data sft sft-eval: the small preset, 1000/50/50 games, SFT, the SFT checkpoint's success on both
#          splits), then the SFT checkpoint in 16 MiB bf16 parts (molmo_agent.models.checkpoint_parts) for the
#          next machine; work in LEARN_WORK ($HOME/alfworld_learning[-LANE]), logs and JSON to $OUT      ~15 min
#          Games and SFT rows made on another machine skip their stages: carried into LEARN_DATA ($HOME/acc-data)
#          as games.tar.xz (a folder `games`, the recipe's data/games) and sft/<split>.parquet, both learn stages
#          use them (the node's cores made 1100 games in 194 s; carried, they unpack in seconds); with the recipe's
#          RL_GAMES=fresh, games_fresh.tar.xz (a folder `games`: generate --train-start) is its data_fresh/games.
#          LEARN_SFT_EVAL=0 skips sft-eval when RL runs follow on the same node: their iteration-0 validations
#          measure the SFT level at the same temperature, and the 5-7 min of the evaluation's own launch are saved
#   learn-rl   the learning recipe's RL runs of one estimator (LEARN_ESTIMATOR: gigpo or grpo; seeds LEARN_SEEDS,
#          default 0) from an SFT checkpoint carried in as learn-sft's parts (LEARN_SFT_PARTS, default
#          $HOME/acc-sft; the SHA-256 of its weights is printed), on the same generated games; each run stops at
#          ITERATIONS or when the stage's LEARN_RL_S (1380 s) ends; its console log and validation episodes
#          (validation_dump) to $OUT. Two lanes, one per GPU and estimator, make a seed's comparison;
#          bench/learning.py reads the logs afterwards. A run continues on a later machine: `learn-rl-export`
#          (or learn-rl itself with LEARN_EXPORT=1, its own runs as they stop)
#          cuts each run's latest checkpoint into 16 MiB parts ($LEARN_WORK/export/<run>/), to be fetched; carried
#          back into $HOME/acc-run-<run>/, learn-rl joins them into the run's checkpoint folder and verl resumes
#   4b     plugin, tokens and parity on the 4b-shape checkpoint (made here, ~9 GB)  ~4 min
#   bench  bench/vllm_molmo2.py: decode throughput, decode steps against their bound, weight-sync time  ~5 min
#   bench-e2e      bench/e2e.py: 4 GiGPO iterations of 4b-shape (B=8, G=4, 10 steps), steady-state stage times
#                  and MFU, one row appended to bench/results/e2e_<gpu>.json named BENCH_E2E_LABEL, with
#                  BENCH_E2E_ARGS passed on (e.g. Hydra overrides); one GPU needs an H200 (an 80 GB GPU is
#                  refused: AdamW's update needs ~90 GiB). A baseline row of verl's own behaviour:
#                  MOLMO_AGENT_FAST_LOGPROBS=0 MOLMO_AGENT_FAST_ENTROPY=0 MOLMO_AGENT_REF_ON_GPU=0
#                  MOLMO_AGENT_RESPONSE_LOGITS=0 MOLMO_AGENT_SORT_MICRO_BATCHES=0 BENCH_E2E_LABEL=baseline
#                  BENCH_E2E_ARGS=actor_rollout_ref.ref.fsdp_config.model_dtype=fp32 tests/gpu/run_all.sh bench-e2e
#   bench-e2e-sokoban  bench-e2e on visual Sokoban (B=8, G=4, 15 steps, one picture a step): stage times and
#                  image tokens per step -> bench/results/e2e_sokoban_<gpu>.json
#   bench-e2e-rows bench-e2e eight times, a row each: verl's behaviour, then our speed changes added one by one
#                  (chunked log-probs, bf16 reference, reference on the GPU, chunked entropy, response positions
#                  only, micro-batches sorted by length, vLLM served text-only: row 8 is the launch defaults);
#                  ~12-15 min a row; BENCH_E2E_ROWS picks some (e.g. "1 2 3 4" on one GPU's lane, "5 6 7 8" on the
#                  other's); rows 9 to 12, on top of row 8, run only when named: packed sequences (verl's
#                  use_remove_padding: no pad tokens in the actor's passes, response positions still scored alone)
#                  on SDPA's dense mask, on flex attention's block mask, then with micro-batches by token count and
#                  fused AdamW; and row 8 without gradient checkpointing
#   bench-overlap  bench/rollout_overlap.py: our agent loop vs a lock-step loop, 4b-shape, same games
#   probe  bench/machine_probe.py: this machine's GEMM and copy rates, clocks, CPU speed -> $OUT/machine_probe.json
#          (seconds; run it first, alone on the GPU, so that timings from two machines can be compared)
#   bench-startup  bench/vllm_startup.py: vLLM's start-up and decode with torch.compile (verl's default) and
#                  without (run_alfworld.sh's ROLLOUT_COMPILE=0), small preset, a cold start each
#                  -> bench/results/vllm_startup_<gpu>.json; BENCH_STARTUP_ARGS passed on (e.g. --size 4b-shape)
# Time limit of each stage in seconds: TINY_S (540; 900 for tiny-tp2, three engines of two GPUs), E2E_S (540 per
# run, two runs), SFT_S (540 per phase, three), FOURB_S (360), BENCH_S (720), BENCH_E2E_S (1800), OVERLAP_S (1200),
# STARTUP_S (900).
# Needs the bundle installed (install_bundle.sh). Prints PASS/FAIL lines, then a summary; writes JSON summaries,
# the bench result and run_all.log to $OUT (default ./gpu-out). Exit status 0 only if every check passed.
cd "$(dirname "$0")/../.." || exit 1
. tests/gpu/env.sh || exit 1
export OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
# Work folders under $HOME; a background lane (LANE, set by background.sh) gets its own, so that lanes running the
# same stage never write into each other's.
lane=${LANE:+-$LANE}
FOURB=$HOME/molmo2-checkpoints$lane/molmo2-4b-shape  # made by the 4b or bench stage, or by bench_inputs
BENCH_WORK=$HOME/bench_e2e$lane  # bench/e2e.py's --work
LEARN_WORK=${LEARN_WORK:-$HOME/alfworld_learning$lane}  # the learning recipe's WORK (learn-* stages)
LEARN_GAMES_WORK=$HOME/alfworld_learning_games  # learn-rl's games, shared by every lane of the node
GAMES=$BENCH_WORK/games  # bench/e2e.py's game tree, shared with bench-overlap
bench_inputs() {  # the 4b-shape checkpoint and the 8 training games both 4B benches play, each made once
  { [ -f "$FOURB/config.json" ] || python3 -m molmo_agent.models.molmo2.make_checkpoint "$FOURB" --size 4b-shape \
      --device cuda; } &&
  { [ -d "$GAMES" ] || python3 -m molmo_agent.envs.alfworld.generate --out "$GAMES" --train 8 --valid-seen 1 \
      --valid-unseen 1 --seed 0 --workers 4; }
}
carried_data() {  # carried_data WORK: games (and SFT rows) made on another machine, from LEARN_DATA, as WORK/data's
  local data=${LEARN_DATA:-$HOME/acc-data}
  mkdir -p "$1/data" || return 1
  if [ -f "$data/games.tar.xz" ] && [ ! -d "$1/data/games" ]; then
    tar -xJf "$data/games.tar.xz" -C "$1/data" || return 1
  fi
  if [ -d "$data/sft" ] && [ ! -d "$1/data/sft" ]; then cp -r "$data/sft" "$1/data/sft" || return 1; fi
  if [ -f "$data/games_fresh.tar.xz" ] && [ ! -d "$1/data_fresh/games" ]; then  # the recipe's RL_GAMES=fresh tree
    mkdir -p "$1/data_fresh" && tar -xJf "$data/games_fresh.tar.xz" -C "$1/data_fresh" || return 1
  fi
}
bench_e2e_rows() {  # bench-e2e once per row: verl's behaviour, then our changes one by one (BENCH_E2E_ROWS)
  local row_number=0 row_status=0 row label fast entropy on_gpu responses sorted overrides
  local ref32=actor_rollout_ref.ref.fsdp_config.model_dtype=fp32 packed=actor_rollout_ref.model.use_remove_padding=True
  local released=env.serve_text_only=False  # vLLM serves the checkpoint as released: prefix-LM attention
  local flex=actor_rollout_ref.model.override_config.attn_implementation=flex_attention
  # micro-batches by token count (the log-prob passes follow the actor's), AdamW's fused kernel
  local dynamic=actor_rollout_ref.actor.use_dynamic_bsz=True
  local fused=actor_rollout_ref.actor.optim.override_optimizer_config={fused:true}
  local no_checkpointing=actor_rollout_ref.model.enable_gradient_checkpointing=False
  bench_inputs || return
  # label | MOLMO_AGENT_FAST_LOGPROBS, _FAST_ENTROPY, _REF_ON_GPU, _RESPONSE_LOGITS, _SORT_MICRO_BATCHES |
  # Hydra overrides
  for row in "baseline|0|0|0|0|0|$ref32 $released" "chunked log-probs|1|0|0|0|0|$ref32 $released" \
             "bf16 reference|1|0|0|0|0|$released" "reference on the GPU|1|0|1|0|0|$released" \
             "chunked entropy|1|1|1|0|0|$released" "response positions only|1|1|1|1|0|$released" \
             "micro-batches sorted by length|1|1|1|1|1|$released" "vLLM served text-only|1|1|1|1|1|" \
             "packed sequences|1|1|1|1|1|$packed" "packed, flex attention|1|1|1|1|1|$packed $flex" \
             "packed, flex, dynamic batches, fused AdamW|1|1|1|1|1|$packed $flex $dynamic $fused" \
             "no gradient checkpointing|1|1|1|1|1|$no_checkpointing"; do
    IFS='|' read -r label fast entropy on_gpu responses sorted overrides <<< "$row"
    # BENCH_E2E_ROWS (e.g. "1 2"): only those rows, so that two GPUs' lanes can share them
    [[ " ${BENCH_E2E_ROWS:-1 2 3 4 5 6 7 8} " == *" $(( ++row_number )) "* ]] || continue
    # shellcheck disable=SC2086  # the overrides are words
    MOLMO_AGENT_FAST_LOGPROBS=$fast MOLMO_AGENT_FAST_ENTROPY=$entropy MOLMO_AGENT_REF_ON_GPU=$on_gpu \
      MOLMO_AGENT_RESPONSE_LOGITS=$responses MOLMO_AGENT_SORT_MICRO_BATCHES=$sorted \
      timeout "${BENCH_E2E_S:-1800}" \
      python3 bench/e2e.py --model "$FOURB" --work "$BENCH_WORK" --label "$label" $overrides ||
      { row_status=$?; break; }
  done
  return "$row_status"
}

learn_sft() {  # the recipe's stages up to the SFT checkpoint's evaluation, then its parts
  local status=0
  carried_data "$LEARN_WORK" || return 1
  local stages=(model games sft-data sft) success="not evaluated (LEARN_SFT_EVAL=0)"
  [ "${LEARN_SFT_EVAL:-1}" = 0 ] || stages+=(sft-eval)
  WORK=$LEARN_WORK timeout "${LEARN_SFT_S:-1800}" bash recipes/alfworld_learning/run.sh "${stages[@]}" || status=$?
  cp "$LEARN_WORK"/*.log "$LEARN_WORK"/*.json "$OUT/" 2>/dev/null
  grep -H . "$LEARN_WORK"/stage_seconds/* > "$OUT/learn_stage_seconds.txt" 2>/dev/null
  [ -f "$LEARN_WORK/sft_eval.json" ] && success=$(python3 -c "import json, sys; print({s: v['success'] for s, v in \
json.load(open(sys.argv[1]))['splits'].items()})" "$LEARN_WORK/sft_eval.json")
  [ $status -eq 0 ] && rm -rf "$LEARN_WORK/sft_parts" &&
    python3 -m molmo_agent.models.checkpoint_parts split "$LEARN_WORK/sft_model" "$LEARN_WORK/sft_parts" --bf16 &&
    cp "$LEARN_WORK/sft_parts/SHA256SUMS" "$OUT/sft_parts_SHA256SUMS" &&
    echo "PASS learn-sft: SFT success $success, parts in $LEARN_WORK/sft_parts"
}
learn_rl_export() {  # learn_rl_export [RUN...]: each named run's (default: every run's) latest checkpoint in parts
  local ckpt step run staged
  [ $# -gt 0 ] || set -- $(ls "$LEARN_WORK/runs" 2>/dev/null)
  for run in "$@"; do
    ckpt=$LEARN_WORK/runs/$run/ckpt staged=$LEARN_WORK/export-staging-$run
    step=$(cat "$ckpt/latest_checkpointed_iteration.txt" 2>/dev/null) || continue
    rm -rf "$staged" "$LEARN_WORK/export/$run" && mkdir -p "$staged"
    cp -r "$ckpt/global_step_$step" "$ckpt/latest_checkpointed_iteration.txt" "$staged/" &&
      python3 -m molmo_agent.models.checkpoint_parts split "$staged" "$LEARN_WORK/export/$run" || return 1
    rm -rf "$staged"
    echo "PASS learn-rl-export: $run at iteration $step in $LEARN_WORK/export/$run"
  done
}
ray_job() {  # e2e.sh's runs as jobs of a Ray cluster started here, as a user's cluster runs them
  local status=0 store=$(( ${RAY_OBJECT_STORE_GB:-20} * 1024 ** 3 ))
  # Ray refuses an object store larger than /dev/shm unless told to put it on disk
  [ "$(df --output=avail -B1 /dev/shm | tail -1)" -ge "$store" ] || export RAY_OBJECT_STORE_ALLOW_SLOW_STORAGE=1
  ray start --head --dashboard-host=127.0.0.1 --dashboard-port=8265 --object-store-memory=$store || return 1
  E2E_RAY_ADDRESS=http://127.0.0.1:8265 E2E_WORK=$HOME/molmo_agent_e2e_ray_job bash tests/gpu/e2e.sh all || status=$?
  ray status | head -20
  ray stop --force > /dev/null 2>&1
  [ $status -eq 0 ] && echo "PASS ray-job: $(tail -1 "$OUT/e2e_check_alfworld.txt")"
}
learn_rl() {  # one estimator's RL runs from the carried SFT checkpoint, under the stage's time limit
  local status=0 run seed parts mine=()
  case ${LEARN_ESTIMATOR:-} in gigpo | grpo) ;; *) echo "learn-rl: set LEARN_ESTIMATOR to gigpo or grpo"; return 2 ;; esac
  # this lane's runs: lanes sharing LEARN_WORK each bring back (and export) their own
  for seed in ${LEARN_SEEDS:-0}; do mine+=("${LEARN_ESTIMATOR}_seed$seed"); done
  mkdir -p "$LEARN_WORK"
  for parts in "$HOME"/acc-run-*/; do  # this lane's runs continued from an earlier machine's checkpoint
    [ -d "$parts" ] && [ "${LEARN_CONTINUE:-1}" = 1 ] || continue  # 0: a side lane starts afresh beside them
    run=$(basename "$parts") run=${run#acc-run-}
    [[ $run == "${LEARN_ESTIMATOR}"_seed* ]] || continue  # the other estimator's lane continues it
    [[ " ${LEARN_SEEDS:-0} " == *" ${run#"${LEARN_ESTIMATOR}"_seed} "* ]] || {
      echo "learn-rl: $parts continues seed ${run#"${LEARN_ESTIMATOR}"_seed}, not in LEARN_SEEDS (${LEARN_SEEDS:-0})"
      return 2; }
    [ -d "$LEARN_WORK/runs/$run/ckpt" ] ||
      python3 -m molmo_agent.models.checkpoint_parts join "$parts" "$LEARN_WORK/runs/$run/ckpt" || return 1
  done
  # The SFT checkpoint, joined once for the lanes that share LEARN_WORK (the first joins, the others wait)
  { flock 9 && { [ -f "$LEARN_WORK/sft_model/config.json" ] ||
    python3 -m molmo_agent.models.checkpoint_parts join "${LEARN_SFT_PARTS:-$HOME/acc-sft}" "$LEARN_WORK/sft_model"; }
  } 9> "$LEARN_WORK/sft_model.lock" || return 1
  # The games and parquet files, made once on the node for every lane (the first lane makes them, the others wait):
  # data/, and data_fresh/ for RL_GAMES=fresh
  local folder folders=(data)
  [ "${RL_GAMES:-fresh}" = fresh ] && folders+=(data_fresh)
  for folder in "${folders[@]}"; do
    [ -e "$LEARN_WORK/$folder" ] && continue
    { flock 9 && carried_data "$LEARN_GAMES_WORK" && WORK=$LEARN_GAMES_WORK bash recipes/alfworld_learning/run.sh games
    } 9> "$LEARN_GAMES_WORK.lock" &&
      ln -s "$LEARN_GAMES_WORK/$folder" "$LEARN_WORK/$folder" || return 1
  done
  WORK=$LEARN_WORK SEEDS=${LEARN_SEEDS:-0} timeout "${LEARN_RL_S:-1380}" \
    bash recipes/alfworld_learning/run.sh games "rl-$LEARN_ESTIMATOR" || status=$?
  for run in "${mine[@]}"; do
    [ -f "$LEARN_WORK/runs/$run/train.log" ] || continue
    cp "$LEARN_WORK/runs/$run/train.log" "$OUT/$run.log"
    [ -d "$LEARN_WORK/runs/$run/validation" ] && python3 -m molmo_agent.integrations.verl.validation_dump \
      "$LEARN_WORK/runs/$run/validation" --out "$OUT/${run}_episodes.jsonl.gz"
  done
  grep -H . "$LEARN_WORK"/stage_seconds/* > "$OUT/learn_stage_seconds.txt" 2>/dev/null
  # the time limit ends a run early by design: its curve holds the validations it reached
  [ $status -eq 0 ] || [ $status -eq 124 ] && echo "PASS learn-rl: $LEARN_ESTIMATOR runs ($([ $status -eq 124 ] &&
    echo 'stopped by LEARN_RL_S' || echo 'finished')), logs in $OUT" &&
    { [ "${LEARN_EXPORT:-0}" = 0 ] || learn_rl_export "${mine[@]}"; }
}
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(tiny e2e 4b)
for stage in "${stages[@]}"; do
  echo "=== $stage ($(date +%T)) ==="
  case $stage in  # each stage under its own time limit (seconds), so that one hang cannot eat the others
    tiny)  timeout "${TINY_S:-540}" python3 tests/gpu/check_vllm_molmo2.py --size tiny ;;
    tiny-tp2) timeout "${TINY_S:-900}" python3 tests/gpu/check_vllm_molmo2.py --size tiny --tp 2 ;;
    e2e)   bash tests/gpu/e2e.sh all && echo "PASS e2e: $(tail -1 "$OUT/e2e_check_alfworld.txt")" ;;
    e2e-sokoban) E2E_ENV=sokoban bash tests/gpu/e2e.sh all &&
      echo "PASS e2e-sokoban: $(grep '^negative control ok' "$OUT/e2e_check_sokoban.txt"); $(tail -1 "$OUT/e2e_check_sokoban.txt")" ;;
    e2e-2gpu) E2E_GPUS=2 bash tests/gpu/e2e.sh all && echo "PASS e2e-2gpu: $(tail -1 "$OUT/e2e_check_alfworld.txt")" ;;
    e2e-sokoban-2gpu) E2E_ENV=sokoban E2E_GPUS=2 bash tests/gpu/e2e.sh all &&
      echo "PASS e2e-sokoban-2gpu: $(grep '^negative control ok' "$OUT/e2e_check_sokoban.txt"); $(tail -1 "$OUT/e2e_check_sokoban.txt")" ;;
    ray-job) ray_job ;;
    sft)   bash tests/gpu/sft.sh all && echo "PASS sft: SFT checkpoint evaluated and trained 2 GiGPO iterations" ;;
    learn-sft) learn_sft ;;
    learn-rl) learn_rl ;;
    learn-rl-export) learn_rl_export ;;
    4b)    timeout "${FOURB_S:-360}" python3 tests/gpu/check_vllm_molmo2.py --size 4b-shape --checks plugin,tokens,parity ;;
    bench) timeout "${BENCH_S:-720}" python3 bench/vllm_molmo2.py ;;
    bench-e2e) bench_inputs &&
      timeout "${BENCH_E2E_S:-1800}" python3 bench/e2e.py --model "$FOURB" --work "$BENCH_WORK" \
        ${BENCH_E2E_LABEL:+--label "$BENCH_E2E_LABEL"} ${BENCH_E2E_ARGS:-} ;;
    bench-e2e-sokoban) bench_inputs &&
      timeout "${BENCH_E2E_S:-1800}" python3 bench/e2e.py --env sokoban --model "$FOURB" --work "$BENCH_WORK" \
        ${BENCH_E2E_LABEL:+--label "$BENCH_E2E_LABEL"} ${BENCH_E2E_ARGS:-} ;;
    bench-e2e-rows) bench_e2e_rows ;;
    probe) line=$(timeout 120 python3 bench/machine_probe.py --out "$OUT/machine_probe.json") &&
      echo "PASS probe: ${line#machine probe: }" ;;
    bench-startup) line=$(timeout "${STARTUP_S:-900}" python3 bench/vllm_startup.py ${BENCH_STARTUP_ARGS:-}) &&
      echo "PASS bench-startup: $line" ;;  # BENCH_STARTUP_ARGS word-split on purpose
    bench-overlap) bench_inputs &&
      timeout "${OVERLAP_S:-1200}" python3 bench/rollout_overlap.py --model "$FOURB" \
        --games-root "$GAMES/json_2.1.1/train" ;;
    *)     echo "unknown stage (tiny, tiny-tp2, e2e, e2e-sokoban, e2e-2gpu, e2e-sokoban-2gpu, ray-job, sft, learn-sft, learn-rl, learn-rl-export, 4b, bench, bench-e2e, bench-e2e-sokoban, bench-e2e-rows, bench-overlap, bench-startup, probe)"; false ;;
  esac
  status=$?
  [ $status -eq 0 ] || echo "FAIL stage $stage: exit status $status$([ $status -eq 124 ] && echo ' (time limit)')"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/GPU memory in use after the stage: /'
done 2>&1 | tee "$OUT/run_all.log"
echo "=== summary ==="
grep -E '^(PASS|FAIL) ' "$OUT/run_all.log"
grep -E '^vLLM .* tok/s' "$OUT/run_all.log"
failed=$(grep -c '^FAIL ' "$OUT/run_all.log")
echo "$( [ "$failed" -eq 0 ] && echo PASS || echo FAIL ) gpu suite (${stages[*]}): $failed FAIL lines; logs and JSON in $OUT"
[ "$failed" -eq 0 ]
