#!/usr/bin/env bash
# run_all.sh stages that outlast one remote command (the device tool stops a command after 10 minutes and kills
# what it leaves running, except a process that started its own session), run in the background on the node.
#
#   bash tests/gpu/background.sh start [--lane NAME] STAGE...
#       copy this checkout to $HOME/bg-NAME and start run_all.sh STAGE... there under setsid (logs and JSON in
#       $HOME/bg-out-NAME); return at once. NAME defaults to `main`.
#   bash tests/gpu/background.sh wait [SECONDS] [--fetch DIR]
#       wait until every started lane is done or SECONDS (default 560) pass; print each lane's stage lines,
#       summary and last validations (a training run's success per split) so far; pack the lanes' logs and JSON
#       (run_all's and the benches') into $OUT/lanes.tar.gz (NAME/... inside), with the learning runs' validation
#       dumps so far (validation/WORK/RUN/*.jsonl: molmo_agent.integrations.verl.validation_dump reads them).
#       --fetch DIR: also copy the next FETCH_PER_WAIT (3) files of DIR that no earlier wait fetched into
#       $OUT/fetch/, SHA256SUMS first: a checkpoint's 16 MiB parts come back over the waits of a session (the
#       device tool returns at most 64 MiB a call). Once an earlier wait packed the lanes after every one was
#       done, a --fetch wait packs nothing and copies four (FETCH_PER_WAIT unset): all the 64 MiB hold
#
# Lanes run side by side, one per GPU (`CUDA_VISIBLE_DEVICES=1 background.sh start --lane b sft`). A lane named
# with --lane installs the checkout into its own $HOME/project-NAME and runs with RAY_STOP=0: each run starts its
# own Ray instance, and none may `ray stop` the others'. `start` refuses a GPU that a running lane uses: vLLM's
# start-up memory profiling fails when another process on its GPU frees memory meanwhile (another engine's
# profiling, verl's rollout sleeping between steps, a training run ending), so lanes cannot share a GPU
# (tests/gpu/results/lanes_shared_gpu_h200x2_2026-11-30.txt). Except lanes that fix vLLM's KV cache
# (KV_CACHE_GB, read by examples/gigpo_trainer/run_alfworld.sh, so every verl launch of the e2e and learn-* stages):
# vLLM skips that profiling, so lanes started with it may share a GPU with each other. Start such lanes a minute
# apart: their start-ups contend for the cores. Each lane gets VLLM_PORT (20000, 21000, ... in start order) unless
# it is set: its vLLM servers take their rendezvous ports from there, not at random (where two lanes' servers
# starting together once drew the same port, EADDRINUSE).
# `wait` does not source env.sh: reinstalling the checkout under running stages would pull files from under them.
# The node goes back after 30 s without a command: issue each `wait` right after the last.
set -uo pipefail
LANES=$HOME/bg-lanes  # the lanes started on this node, one name per line
FETCHED=$HOME/bg-fetched  # the files `wait --fetch` copied to $OUT so far, one path per line
PACKED_DONE=$HOME/bg-packed-done  # a wait packed the lanes' logs after every lane was done

fetch_next() {  # fetch_next DIR N: the next N files of DIR not fetched before (SHA256SUMS first) into $OUT/fetch
  local dir=$1 n=$2 file copied=() left
  mkdir -p "${OUT:?}/fetch" && touch "$FETCHED"
  for file in "$dir/SHA256SUMS" $(find "$dir" -maxdepth 1 -type f ! -name SHA256SUMS | sort); do
    [ ${#copied[@]} -lt "$n" ] || break
    [ -f "$file" ] && ! grep -qxF "$file" "$FETCHED" || continue
    cp "$file" "$OUT/fetch/" && echo "$file" >> "$FETCHED" && copied+=("$(basename "$file")")
  done
  left=$(find "$dir" -maxdepth 1 -type f | grep -cvxF -f "$FETCHED")
  echo "fetched from $dir: ${copied[*]:-nothing new} (\$OUT/fetch/); $left left for later waits"
}
case ${1:-} in
  start)
    shift
    lane=main isolated=0
    if [ "${1:-}" = --lane ]; then lane=$2 isolated=1; shift 2; fi
    [ $# -gt 0 ] || { echo "usage: background.sh start [--lane NAME] STAGE..."; exit 2; }
    bg=$HOME/bg-$lane bg_out=$HOME/bg-out-$lane
    gpus=${CUDA_VISIBLE_DEVICES:-all} shares=${KV_CACHE_GB:+1}
    if [ -f "$LANES" ]; then
      while read -r other; do  # a running lane (no done mark) on one of these GPUs, or on all of them
        [ "$other" = "$lane" ] || [ -f "$HOME/bg-$other.done" ] || [ ! -f "$HOME/bg-$other.gpus" ] && continue
        [ -n "$shares" ] && [ -f "$HOME/bg-$other.shares" ] && continue
        taken=$(cat "$HOME/bg-$other.gpus")
        for gpu in ${gpus//,/ }; do
          if [ "$gpu" = all ] || [ "$taken" = all ] || [[ ",$taken," == *",$gpu,"* ]]; then
            echo "lane $lane: GPU $gpu is in use by running lane $other (GPUs $taken); lanes cannot share a GPU" \
              "(vLLM's start-up profiling fails when another process frees memory on it): set CUDA_VISIBLE_DEVICES," \
              "or KV_CACHE_GB on both lanes"
            exit 2
          fi
        done
      done < "$LANES"
    fi
    rm -rf "$bg" "$bg_out" "$bg.done" "$bg.shares" "$PACKED_DONE" && mkdir -p "$bg" "$bg_out"
    echo "$gpus" > "$bg.gpus"
    [ -z "$shares" ] || touch "$bg.shares"
    grep -qx "$lane" "$LANES" 2>/dev/null || echo "$lane" >> "$LANES"
    # The checkout's files, away from the next command's copy: tracked and untracked-not-ignored ones that exist
    # (the device tool's copy can carry an older index than its files).
    git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} sh -c '[ -f "$1" ] && cp --parents -t "$0" "$1"' "$bg" {}
    lane_env=()
    if [ $isolated = 1 ]; then
      # vLLM scans up from VLLM_PORT for a free port; these ranges lie between Ray's worker ports (10002-19999)
      # and the kernel's ephemeral ones (32768 on), where neither Ray nor a port drawn at random lands
      index=$(grep -nx "$lane" "$LANES" | cut -d: -f1)
      lane_env=(PROJECT_DIR="$HOME/project-$lane" RAY_STOP=0 LANE="$lane"
                VLLM_PORT="${VLLM_PORT:-$((20000 + 1000 * ((index - 1) % 12)))}")
    fi
    run='bash tests/gpu/run_all.sh "${@:2}" > "$0/console.log" 2>&1; touch "$1"'  # $0: output folder, $1: done mark
    # every process of the lane off this command's output, so that the command returns at once
    (cd "$bg" && env OUT="$bg_out" "${lane_env[@]}" setsid nohup bash -c "$run" "$bg_out" "$bg.done" "$@" &) \
      > /dev/null 2>&1
    echo "started lane $lane: run_all.sh $* (console: $bg_out/console.log${CUDA_VISIBLE_DEVICES:+, GPU $CUDA_VISIBLE_DEVICES})"
    ;;
  wait)
    shift
    seconds=560 fetch=
    [[ ${1:-} =~ ^[0-9]+$ ]] && { seconds=$1; shift; }
    if [ "${1:-}" = --fetch ]; then
      fetch=${2:?wait --fetch needs a folder}
      [ -d "$fetch" ] || { echo "wait --fetch $fetch: no such folder"; exit 2; }
    fi
    [ -f "$LANES" ] || { echo "no lane started"; exit 2; }
    mapfile -t lanes < "$LANES"
    deadline=$((SECONDS + seconds))
    done_all() { local lane; for lane in "${lanes[@]}"; do [ -f "$HOME/bg-$lane.done" ] || return 1; done; }
    until done_all || [ $SECONDS -ge $deadline ]; do sleep 5; done
    if [ -n "$fetch" ] && [ -f "$PACKED_DONE" ]; then
      echo "every lane was done when an earlier wait packed their logs: no lanes.tar.gz, the call's room to parts"
      fetch_next "$fetch" "${FETCH_PER_WAIT:-4}"
      exit 0
    fi
    collected=$(mktemp -d)
    for lane in "${lanes[@]}"; do
      bg=$HOME/bg-$lane bg_out=$HOME/bg-out-$lane
      echo "--- lane $lane"
      grep -E '^(=== |PASS |FAIL |vLLM .* tok/s|\{"ratio)' "$bg_out/console.log" | cut -c1-400
      # a training run's last validations: its step and each split's success
      grep -E 'step:[0-9]+ - .*val-core/' "$bg_out/console.log" | tail -3 | while read -r line; do
        grep -oE 'step:[0-9]+|val-core/[^ ]+/acc/mean@1:[^ ]+' <<< "$line" | tr '\n' ' ' && echo
      done
      # its last training step and that step's seconds, and the first error of a run that died (a lane that
      # stops making progress is seen at once, not when its time limit ends)
      grep -E 'step:[0-9]+ - .*timing_s/step:' "$bg_out/console.log" | tail -1 |
        grep -oE '(^| )step:[0-9]+ |timing_s/step:[0-9.]+' | tr -s '\n ' ' ' | sed 's/^ */last training /;s/ *$/\n/'
      grep -m1 -E '[A-Za-z]+(Error|Exception): |Error executing job' "$bg_out/console.log" | cut -c1-400 |
        sed 's/^/first error: /'
      if [ -f "$bg.done" ]; then echo "lane $lane: done"; else echo "lane $lane: still running"; fi
      mkdir -p "$collected/$lane/bench-results"
      cp "$bg_out"/* "$collected/$lane/" 2>/dev/null
      cp "$bg"/bench/results/*.json "$collected/$lane/bench-results/" 2>/dev/null
    done
    for log in "$HOME"/bench_e2e*/train.log; do
      [ -f "$log" ] && cp "$log" "$collected/$(basename "$(dirname "$log")")_train.log"
    done
    # Learning runs' validation dumps as they stand (a lane still running has not reduced them to episodes yet),
    # so that a machine lost mid-run keeps the episodes behind every validation line of the console logs
    for dump in "$HOME"/*/runs/*/validation; do
      [ -d "$dump" ] || continue
      run=$(basename "$(dirname "$dump")") work=$(basename "$(dirname "$(dirname "$(dirname "$dump")")")")
      mkdir -p "$collected/validation/$work/$run" && cp "$dump"/*.jsonl "$collected/validation/$work/$run/" 2>/dev/null
    done
    # One file: the device tool brings back at most 8 files from $OUT.
    tar -czf "${OUT:?}/lanes.tar.gz" -C "$collected" . && rm -rf "$collected"
    ! done_all || touch "$PACKED_DONE"
    echo "logs and JSON of every lane: \$OUT/lanes.tar.gz ($(du -h "$OUT/lanes.tar.gz" | cut -f1))"
    [ -z "$fetch" ] || fetch_next "$fetch" "${FETCH_PER_WAIT:-3}"
    ;;
  *) echo "usage: background.sh start [--lane NAME] STAGE... | wait [SECONDS] [--fetch DIR]"; exit 2 ;;
esac
