"""Why a policy loses ALFWorld games: each lost episode by the furthest sub-goal it reached, with the loops,
inadmissible actions and forgotten sightings behind it, beside alfworld's hand-coded expert on the same games.

`play` plays every game of the splits asked for and writes one JSON line per episode (gzipped when --out ends in
.gz):
- `--player policy`: a checkpoint on the CPU, prompted as the agent loop and the SFT rows prompt it (the RL config
  with the recipe's knobs through `sft_data.rl_config`, verl's token builder through `sft_data.StepRows`,
  `agent_loop.step_prompt_ids` with the last --history steps), sampled at --temperature (the recipe's validation
  temperature; 0 is greedy; --top-k cuts to the largest logits as a rollout's top_k does), --batch games at a
  time, left-padded, each game --group-size times in a row (a training group). The answer is read by the
  environment's `parse_action` and sent to the environment even when not admissible ("Nothing happens."), as in
  training and validation. Each step records the answer, the action, whether it was well formed and admissible,
  the observation it got, and how many history steps the prompt held.
- `--player expert`: alfworld's hand-coded expert (`envs.alfworld.expert.expert_actions`, seeded with --seed):
  whether it wins within --max-steps, and its actions or why it did not win.

`analyze` reads the policy's traces (and the expert's on the same games), prints tables and writes them to --out
(JSON) with every count:
- per split: the policy's and the expert's wins, and how they pair up game by game;
- per task type, each lost episode's furthest sub-goal in the task's order: the target seen (named in an
  observation while not held), taken, cleaned / heated / cooled, the lamp turned on, placed, the second one placed;
- flags of the lost episodes (overlapping): a loop (one action, or a cycle of up to 4 different actions, repeated
  3 times or more in a row), invalid actions, progress in the last 5 steps (cut by the step limit), 3 or more
  'go to's to a receptacle last visited before the prompt's window (its last --history steps), and a 'go to'
  elsewhere once the target's last sighting had left that window (no prompt shows where the target is any more);
- step totals, loops' periods and cycles, steps from the target's first sighting to taking it;
- the policy's action when the current observation (an arrival or an opening) lists the target and its hands are
  free, and its inadmissible actions by kind ('take' of an object not in view, 'go to' where it already is, ...);
- with --agreement, how often the policy's action is the one the hand-coded expert takes in the policy's own state
  (the labels `sft_data --relabel` trains on), by the expert's verb.

`imitate` asks a checkpoint for its greedy answer at every state of an SFT parquet (the demonstrator's own states,
`sft_data`'s rows) and counts how often it takes the row's action, by the row's verb, and where each wrong
action's answer first left the row's: in the thought before its decision ("I will ..."), in that decision's verb,
object or number, or in the action after a matching thought. Minutes on the CPU where playing takes half an hour,
and the states are the demonstrator's, not the policy's (--agreement's).

    python bench/policy_failures.py play --player policy --model DIR --games ROOT --split valid_unseen \\
        [--temperature 0.4 --top-k 0 --group-size 1 --seed 0 --batch 25 --max-steps 30 --history 2 \\
        --prompt-length 1024 --response-length 128] --out POLICY.jsonl.gz
    python bench/policy_failures.py play --player expert --games ROOT --split valid_unseen valid_seen \\
        [--max-steps 30 --seed 0] --out EXPERT.jsonl.gz
    python bench/policy_failures.py analyze --traces POLICY.jsonl.gz [--expert EXPERT.jsonl.gz] [--history 2] \\
        [--agreement] --out bench/results/NAME.json [--play-command "COMMAND" ...]
    python bench/policy_failures.py imitate --model DIR --rows SFT_DIR/valid_unseen.parquet [--batch 16] \\
        --out bench/results/NAME.json

ROOT is a generated game tree (`python -m molmo_agent.envs.alfworld.generate --out ROOT ...`). On 2 CPU cores
the learning recipe's small model plays 50 games of 30 steps in ~25 minutes. --play-command records the commands
that made the traces in the result.
"""
import argparse
import gzip
import json
import re
import shlex
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from molmo_agent.envs.alfworld.games import TASK_TYPES, Game, load_games, split_and_name
from molmo_agent.envs.base import INFO_ADMISSIBLE, INFO_TASK, INFO_TASK_TYPE, INFO_WON, observation_text
from molmo_agent.envs.projection import is_admissible

COLUMNS = dict(zip(TASK_TYPES, ("pick", "look", "clean", "heat", "cool", "two")))
TRANSFORMATIONS = {"pick_clean_then_place_in_recep": "cleaned", "pick_heat_then_place_in_recep": "heated",
                   "pick_cool_then_place_in_recep": "cooled"}
LOOK_TASK, TWO_OBJECT_TASK = "look_at_obj_in_light", "pick_two_obj_and_place"
LOOP_PERIODS = 4  # a loop: one action, or a cycle of up to this many different actions ...
LOOP_REPEATS = 3  # ... repeated at least this many times in a row
LAST_STEPS = 5  # progress this close to the end of a lost episode: the step limit may have cut it short
MANY = 3  # "many" invalid actions, or revisits out of the window, in an episode
SHOWN_LOOP_CYCLES = 12
# a lost episode by the furthest sub-goal it reached, in the tasks' order
LOST_AT = ("target never seen", "seen, never taken", "taken, the lamp never turned on", "taken, never cleaned",
           "taken, never heated", "taken, never cooled", "taken, never placed", "transformed, never placed",
           "one placed, the second never placed", "every sub-goal reached")
TAKE = re.compile(r"take (?P<object>.+? \d+) from (?P<receptacle>.+)")


def open_text(path: Path, mode: str) -> IO[str]:
    """`path` opened as text ("r" or "w"), through gzip when its name ends in .gz."""
    return gzip.open(path, mode + "t") if path.suffix == ".gz" else path.open(mode)


def read_traces(path: Path) -> list[dict]:
    """The records of a traces file from `play`, one per episode (validation_dump.read_episodes reads the same
    lines, but importing the verl seam loads verl, which analyze does not need)."""
    with open_text(path, "r") as lines:
        return [json.loads(line) for line in lines]


def game_key(game_file: str) -> str:
    """"<task directory>/<trial directory>" of a game file: the same game under any root."""
    return split_and_name(game_file)[1]


def target_and_parent(game_file: str) -> tuple[str, str]:
    """The target object and the receptacle it must end in ("floorlamp" for a look task), as the game prints them:
    from the task directory's name, `<task type>-<object>-<receptacle>-<parent>-<scene>`."""
    _, target, _, parent, _ = Path(game_file).parent.parent.name.lower().split("-")
    return target, parent


def mentions(text: str, name: str) -> list[str]:
    """Every "<name> <number>" in `text`."""
    return re.findall(rf"\b{re.escape(name)} \d+\b", text)


# --- play ---------------------------------------------------------------------------------------------------------

@dataclass
class Episode:
    env: Any
    observation: str  # the current observation's text
    info: dict[str, Any]
    record: dict[str, Any]
    history: list[tuple[str, str]] = field(default_factory=list)  # (observation, action) of the steps taken
    done: bool = False


def generate_ids(model: Any, tokenizer: Any, prompts: list[list[int]], temperature: float,
                 max_tokens: int, top_k: int = 0) -> list[list[int]]:
    """The model's answers to token-id prompts in one left-padded batch, as token ids cut after EOS; sampled
    from the `top_k` largest logits only when it is above 0."""
    import torch

    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": max(top_k, 0)} if temperature
                else {"do_sample": False})
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_tokens,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sampling)
    answers = []
    for answer in out[:, width:].tolist():
        if tokenizer.eos_token_id in answer:
            answer = answer[:answer.index(tokenizer.eos_token_id) + 1]
        answers.append(answer)
    return answers


def generate(model: Any, tokenizer: Any, prompts: list[list[int]], temperature: float, max_tokens: int,
             top_k: int = 0) -> list[str]:
    """`generate_ids`' answers decoded as the agent loop decodes them."""
    return [tokenizer.decode(answer, skip_special_tokens=True)
            for answer in generate_ids(model, tokenizer, prompts, temperature, max_tokens, top_k)]


def divergence(reference: list[int], answer: list[int], tokenizer: Any) -> str:
    """Where `answer` first leaves the demonstrated `reference` (token ids of `<think>...</think><action>...`):
    "thought" before the thought's last "I will", then "verb", "object" or "number" within that decision, "action"
    after `</think>` (the action does not copy the thought), "none" if it never does."""
    first = next((i for i, (a, b) in enumerate(zip(reference, answer)) if a != b), min(len(reference), len(answer)))
    if first == len(reference) == len(answer):
        return "none"
    end_think = tokenizer.convert_tokens_to_ids("</think>")
    thought_end = reference.index(end_think) if end_think in reference else len(reference)
    if first >= thought_end:
        return "action"
    will = [tokenizer.convert_tokens_to_ids(token) for token in ("ĠI", "Ġwill")]
    starts = [i + 2 for i in range(thought_end - 1) if reference[i:i + 2] == will]
    if not starts or first < starts[-1]:
        return "thought"
    if first == starts[-1]:
        return "verb"
    word = tokenizer.decode(reference[first:first + 2]).strip()  # a number follows its own space token
    return "number" if word[:1].isdigit() else "object"


def load_policy(model_dir: str) -> Any:
    """The checkpoint in fp32 on the CPU, for inference."""
    import torch

    from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration

    return Molmo2ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()


def play_policy(args: argparse.Namespace, games: list[Game], out: IO[str]) -> None:
    """Play `games` with the checkpoint --model, --batch at a time; one record per episode to `out`."""
    # torch, verl and the model load here: analyze needs none of them
    import torch

    from molmo_agent.envs.registry import make_env
    from molmo_agent.integrations.verl.agent_loop import env_knobs, step_prompt_ids
    from molmo_agent.integrations.verl.sft_data import ENV_NAME, StepRows, rl_config

    config = rl_config(args.model, [f"env.max_steps={args.max_steps}", f"env.history_length={args.history}",
                                    f"data.max_prompt_length={args.prompt_length}",
                                    f"data.max_response_length={args.response_length}"])
    rows = StepRows(config)
    prompt_length = config.actor_rollout_ref.rollout.prompt_length
    response_length = config.actor_rollout_ref.rollout.response_length
    model = load_policy(args.model)
    torch.manual_seed(args.seed)
    envs = [make_env(ENV_NAME, args.max_steps, **env_knobs(config.env)) for _ in range(min(args.batch, len(games)))]

    def prompt_ids(episode: Episode, history_length: int, length: int) -> list[int]:
        return step_prompt_ids(rows.spec, rows.build_tokens, episode.observation, None, episode.info, episode.history,
                               history_length, length)[0]

    def history_shown(episode: Episode, prompt: list[int]) -> int:
        """How many history steps `prompt` holds: step_prompt_ids drops the oldest until the prompt fits."""
        return next((shown for shown in range(min(args.history, len(episode.history)), 0, -1)
                     if prompt_ids(episode, shown, sys.maxsize) == prompt), 0)

    start, steps = time.perf_counter(), 0
    for first in range(0, len(games), args.batch):
        episodes = []
        for env, game in zip(envs, games[first:first + args.batch]):
            observation, info = env.reset(options={"game": game.path})
            episodes.append(Episode(env, observation_text(observation), info, {
                "game": game.path, "split": game.split, "task": info[INFO_TASK], "task_type": info[INFO_TASK_TYPE],
                "initial_obs": observation_text(observation), "temperature": args.temperature, "top_k": args.top_k,
                "seed": args.seed, "steps": []}))
        while active := [episode for episode in episodes if not episode.done]:
            prompts = [prompt_ids(episode, args.history, prompt_length) for episode in active]
            answers = generate(model, rows.tokenizer, prompts, args.temperature, response_length, args.top_k)
            for episode, prompt, answer in zip(active, prompts, answers):
                projected = rows.spec.parse_action(answer, episode.info)
                listed = episode.info[INFO_ADMISSIBLE]
                observation, _, terminated, truncated, info = episode.env.step(projected.action)
                episode.record["steps"].append({
                    "prompt_tokens": len(prompt), "shown": history_shown(episode, prompt), "response": answer,
                    "action": projected.action, "format_ok": projected.valid, "reason": projected.reason,
                    "admissible": is_admissible(projected.action, listed), "n_admissible": len(listed),
                    "obs": observation_text(observation), "won": bool(info[INFO_WON])})
                episode.history.append((episode.observation, projected.action))
                episode.observation, episode.info = observation_text(observation), info
                if terminated or truncated:
                    episode.done = True
                    episode.record.update(won=bool(info[INFO_WON]), n_steps=len(episode.record["steps"]))
            steps += len(active)
        for episode in episodes:
            out.write(json.dumps(episode.record) + "\n")
        out.flush()
        seconds = time.perf_counter() - start
        print(f"{first + len(episodes)}/{len(games)} games, {steps} steps, {seconds:.0f} s "
              f"({seconds / steps:.3f} s a step); this batch won {sum(e.record['won'] for e in episodes)}",
              flush=True)


def play_expert(args: argparse.Namespace, games: list[Game], out: IO[str]) -> None:
    """Play `games` with alfworld's hand-coded expert; one record per game to `out`."""
    from molmo_agent.envs.alfworld.expert import expert_actions

    for game in games:
        record = {"game": game.path, "split": game.split, "task_type": game.task_type}
        try:
            actions = expert_actions(game.path, args.max_steps, args.seed)
            record |= {"won": True, "n_steps": len(actions), "actions": actions}
        except ValueError as error:  # not won within --max-steps, or the expert failed on the game
            record |= {"won": False, "reason": str(error)}
        out.write(json.dumps(record) + "\n")
        out.flush()
        print(game.name, f"won in {record['n_steps']} steps" if record["won"] else "lost", flush=True)


# --- analyze ------------------------------------------------------------------------------------------------------

def longest_loop(actions: list[str]) -> tuple[int, int, int]:
    """(period, repeats, start) of the longest back-to-back repetition of one action, or of a cycle of up to
    LOOP_PERIODS different actions (the shortest period of equal repeats); (0, 0, -1) when nothing repeats."""
    best = (0, 0, -1)
    for period in range(1, LOOP_PERIODS + 1):
        for start in range(len(actions) - period):
            end = start  # actions[start:end + period] repeats the cycle actions[start:start + period]
            while end + period < len(actions) and actions[end + period] == actions[end]:
                end += 1
            repeats = (end - start + period) // period
            if repeats >= 2 and repeats > best[1] and len(set(actions[start:start + period])) == period:
                best = (period, repeats, start)
    return best


def inadmissible_kind(action: str, location: str | None, shown: str, room: str, target: str) -> str:
    """Why the environment refused `action`, given where the player is (None before its first arrival), the
    observation the prompt showed, the room's first description and the target's name."""
    verb = action.split(" ")[0]
    if verb == "go":
        destination = action.removeprefix("go to ")
        if destination == location:
            return "go to: where it already is"
        if re.search(rf"\b{re.escape(destination)}\b", room):
            return "go to: a receptacle of the room (other reason)"
        return "go to: a receptacle not in the room"
    if verb == "take":
        take = TAKE.match(action)
        if take is None:
            return "take: not 'take OBJECT from RECEPTACLE'"
        if location and take["receptacle"] != location:
            return "take: from a receptacle it is not at"
        if re.search(rf"\b{re.escape(take['object'])}\b", shown):
            return "take: object in view (other reason, e.g. hands full)"
        if take["object"].startswith(target + " "):
            return "take: the target, not in view (a made-up or wrong id)"
        return "take: another object, not in view"
    if verb == "move":
        return "move: not holding it, or not at the receptacle"
    return verb


def action_on_target_in_view(action: str, admissible: bool, in_view: list[str], target: str) -> str:
    """What the policy did when the observation listed the target (`in_view`: its "<name> <number>"s)."""
    if any(action.startswith(f"take {name} ") for name in in_view):
        return "took it" if admissible else "take, right id, wrong receptacle"
    if action.startswith(f"take {target} "):
        return "take, the target with a wrong id"
    return "other action: " + action.split(" ")[0]


def subgoals(task_type: str) -> list[str]:
    """A task's sub-goals in the order they must be reached."""
    if task_type == LOOK_TASK:
        return ["seen", "taken", "lamp"]
    return ["seen", "taken", *(["transformed"] if task_type in TRANSFORMATIONS else []), "placed",
            *(["placed2"] if task_type == TWO_OBJECT_TASK else [])]


def lost_at(reached: dict[str, int], task_type: str) -> str:
    """The LOST_AT row of a lost episode that reached `reached`: named by the first sub-goal it missed."""
    missed = next((subgoal for subgoal in subgoals(task_type) if subgoal not in reached), None)
    transformed = task_type in TRANSFORMATIONS
    return {None: "every sub-goal reached", "seen": "target never seen", "taken": "seen, never taken",
            "lamp": "taken, the lamp never turned on", "transformed": f"taken, never {TRANSFORMATIONS.get(task_type)}",
            "placed": "transformed, never placed" if transformed else "taken, never placed",
            "placed2": "one placed, the second never placed"}[missed]


def analyze_episode(record: dict, history_length: int) -> dict:
    """One policy episode: the step each sub-goal was first reached at, its longest loop, invalid actions, moves,
    forgotten sightings, and the kinds of its inadmissible actions and of its actions on the target in view."""
    target, parent = target_and_parent(record["game"])
    steps = record["steps"]
    shown = [record["initial_obs"]] + [step["obs"] for step in steps]  # shown[t]: the observation step t acts on
    reached: dict[str, int] = {}
    placed: list[int] = []
    location, holding_target, hands_full = None, False, False
    sighted_at: set[str | None] = set()  # where the target was seen lying
    visited: dict[str, int] = {}  # receptacle -> the step that last arrived there
    counts, inadmissible, on_target = Counter(), Counter(), Counter()
    for t, step in enumerate(steps):
        action, seen = step["action"], step["obs"]
        in_view = mentions(shown[t], target)
        if in_view and shown[t].startswith(("You arrive", "You open")) and not hands_full:
            on_target[action_on_target_in_view(action, step["admissible"], in_view, target)] += 1
        if not step["format_ok"]:
            inadmissible["unreadable answer: " + step["reason"]] += 1
        elif not step["admissible"]:
            inadmissible[inadmissible_kind(action, location, shown[t], record["initial_obs"], target)] += 1
        if not holding_target and sighted_at and action.startswith("go to "):
            in_window = any(mentions(text, target) for text in shown[max(0, t - history_length):t + 1])
            counts["forgotten_sightings"] += not in_window and action.removeprefix("go to ") not in sighted_at
        if action.startswith("go to ") and seen.startswith("You arrive"):
            location = action.removeprefix("go to ")
            counts["go_to_moves"] += 1
            counts["revisits"] += location in visited
            counts["revisits_out_of_window"] += visited.get(location, t) < t - history_length
            visited[location] = t
        if mentions(seen, target) and not holding_target:
            reached.setdefault("seen", t)
            if not seen.startswith("You pick up"):
                sighted_at.add(location)
        if seen.startswith("You pick up"):
            hands_full = True
            if mentions(seen, target):
                holding_target = True
                reached.setdefault("taken", t)
        if seen.startswith("You move"):
            hands_full = False
            if mentions(seen, target):
                holding_target = False
                if parent in seen.partition(" to ")[2]:
                    placed.append(t)
        if seen.startswith(("You clean the", "You heat the", "You cool the")):
            reached.setdefault("transformed", t)
        if record["task_type"] == LOOK_TASK and seen.startswith("You turn on"):
            reached.setdefault("lamp", t)
    reached |= dict(zip(("placed", "placed2"), placed))
    return {"reached": reached, "loop": longest_loop([step["action"] for step in steps]),
            "invalid": sum(not step["format_ok"] or not step["admissible"] for step in steps),
            "counts": counts, "inadmissible": inadmissible, "on_target": on_target,
            "history_cut": sum(step["shown"] < min(history_length, t) for t, step in enumerate(steps))}


def lost_flags(record: dict, episode: dict) -> dict[str, bool]:
    """The flags of a lost episode (see the module's docstring)."""
    looping = episode["loop"][1] >= LOOP_REPEATS
    last_progress = max(episode["reached"].values(), default=-1)
    return {f"loop (a cycle of <= {LOOP_PERIODS} actions x >= {LOOP_REPEATS})": looping,
            ">= 1 invalid action": episode["invalid"] >= 1,
            f">= {MANY} invalid actions": episode["invalid"] >= MANY,
            f"progress in the last {LAST_STEPS} steps, no loop": not looping
            and last_progress >= len(record["steps"]) - LAST_STEPS,
            f">= {MANY} revisits out of the window": episode["counts"]["revisits_out_of_window"] >= MANY,
            "went elsewhere after the sighting left the window": episode["counts"]["forgotten_sightings"] > 0}


def by_task_type(rows: dict[str, Counter]) -> dict[str, dict[str, int]]:
    """{row: {column: count}} of rows of counts by COLUMNS' names, with an "all" column."""
    return {row: {**{column: counts[column] for column in COLUMNS.values()},
                  "all": sum(counts[column] for column in COLUMNS.values())} for row, counts in rows.items()}


def split_summary(policy: list[dict], expert: dict[str, dict]) -> dict:
    """Wins of the policy and of the expert (`expert`: by game_key) on one split's games."""
    wins = [record for record in policy if record["won"]]
    summary = {"games": len(policy), "policy_wins": len(wins),
               "policy_steps_of_wins_mean": round(sum(r["n_steps"] for r in wins) / max(1, len(wins)), 1)}
    pairs = [(record, expert[game_key(record["game"])]) for record in policy if game_key(record["game"]) in expert]
    if pairs:
        expert_wins = [theirs for _, theirs in pairs if theirs["won"]]
        outcomes = Counter((ours["won"], theirs["won"]) for ours, theirs in pairs)
        summary |= {"expert_games": len(pairs), "expert_wins": len(expert_wins),
                    "expert_steps_of_wins_mean": round(sum(r["n_steps"] for r in expert_wins)
                                                       / max(1, len(expert_wins)), 1),
                    "won_by": {"both": outcomes[True, True], "expert only": outcomes[False, True],
                               "policy only": outcomes[True, False], "neither": outcomes[False, False]}}
    return summary


def summarize(policy: list[dict], expert: list[dict], history_length: int) -> dict:
    """Every count `analyze` writes (see the module's docstring)."""
    games, won, lost_at_counts, flags = Counter(), Counter(), defaultdict(Counter), defaultdict(Counter)
    inadmissible, on_target = Counter(), {"won": Counter(), "lost": Counter()}
    # every total the tables read, zero in traces with no 'go to' arrival or no lost episode
    totals = Counter(dict.fromkeys(("go_to_moves", "revisits", "revisits_out_of_window", "forgotten_sightings", "lost",
                                    "lost_steps", "lost_looping", "lost_target_seen"), 0))
    sighting_to_take, loop_periods, loop_cycles = Counter(), Counter(), Counter()
    for record in policy:
        episode = analyze_episode(record, history_length)
        column, reached = COLUMNS[record["task_type"]], episode["reached"]
        games[column] += 1
        won[column] += record["won"]
        totals.update(episode["counts"])
        totals.update(steps=len(record["steps"]), invalid=episode["invalid"], history_cut=episode["history_cut"],
                      unreadable=sum(not step["format_ok"] for step in record["steps"]))
        inadmissible.update(episode["inadmissible"])
        on_target["won" if record["won"] else "lost"].update(episode["on_target"])
        if "seen" in reached and "taken" in reached:
            sighting_to_take[reached["taken"] - reached["seen"]] += 1
        if record["won"]:
            continue
        lost_at_counts[lost_at(reached, record["task_type"])][column] += 1
        for flag, raised in lost_flags(record, episode).items():
            flags[flag][column] += raised
        period, repeats, start = episode["loop"]
        totals.update(lost=1, lost_steps=len(record["steps"]), lost_target_seen=int("seen" in reached))
        if repeats >= LOOP_REPEATS:
            totals["lost_looping"] += 1
            loop_periods[period] += 1
            cycle = [step["action"] for step in record["steps"][start:start + period]]
            loop_cycles[" | ".join(re.sub(r" \d+", " N", action) for action in cycle)] += 1
    expert_by_game = {(record["split"], game_key(record["game"])): record for record in expert}
    splits = list(dict.fromkeys(record["split"] for record in policy))
    return {
        "splits": {split: split_summary([record for record in policy if record["split"] == split],
                                        {key: record for (of, key), record in expert_by_game.items() if of == split})
                   for split in splits},
        "games": by_task_type({"games": games, "won": won, "lost": games - won}),
        "lost_by_furthest_subgoal": by_task_type({row: lost_at_counts[row] for row in LOST_AT
                                                  if row in lost_at_counts}),
        "lost_flags": by_task_type(flags),
        "totals": dict(totals) | {"invalid_fraction": round(totals["invalid"] / max(1, totals["steps"]), 3)},
        "sighting_to_take_steps": dict(sorted(sighting_to_take.items())),
        "loop_periods": dict(sorted(loop_periods.items())),
        "loop_cycles": dict(loop_cycles.most_common()),
        "action_on_target_in_view": {outcome: dict(sorted(kinds.items())) for outcome, kinds in on_target.items()},
        "inadmissible_by_kind": dict(inadmissible.most_common()),
    }


def matches_by_verb(pairs: Iterable[tuple[str, str]]) -> dict:
    """(reference action, the policy's action) pairs counted by the reference's verb: how many, how many the same."""
    same, states = Counter(), Counter()
    for reference, action in pairs:
        states[reference.split()[0]] += 1
        same[reference.split()[0]] += reference == action
    return {"states": sum(states.values()), "same": sum(same.values()),
            "by_verb": {verb: {"same": same[verb], "states": n} for verb, n in states.most_common()}}


def expert_agreement(policy: list[dict]) -> dict:
    """In the policy's own states, how often its action is the one alfworld's (mended) hand-coded expert takes there
    (`envs.alfworld.expert.expert_labels`, the DAgger labels of sft_data --relabel), by the expert's verb. Reads the
    game files the traces name."""
    from molmo_agent.envs.alfworld.expert import expert_labels

    def pairs() -> Iterable[tuple[str, str]]:
        for record in policy:
            played = [step["action"] for step in record["steps"]]
            yield from zip(expert_labels(record["game"], played), played)

    return matches_by_verb(pairs())


def match_line(counts: dict) -> str:
    """`matches_by_verb`'s counts on one line."""
    return f"{counts['same']} of {counts['states']}; by the reference's verb: " + ", ".join(
        f"{verb} {n['same']}/{n['states']}" for verb, n in counts["by_verb"].items())


def tables(summary: dict) -> list[str]:
    """The summary as the lines `analyze` prints."""
    lines = []
    for split, counts in summary["splits"].items():
        lines.append(f"=== {split}: {counts['games']} games, policy wins {counts['policy_wins']} "
                     f"({counts['policy_wins'] / counts['games']:.2f}), mean steps of its wins "
                     f"{counts['policy_steps_of_wins_mean']}")
        if "expert_games" in counts:
            lines += [f"    expert on {counts['expert_games']} of them: wins {counts['expert_wins']} "
                      f"({counts['expert_wins'] / counts['expert_games']:.2f}), mean steps of its wins "
                      f"{counts['expert_steps_of_wins_mean']}",
                      "    games won by " + ", ".join(f"{who} {n}" for who, n in counts["won_by"].items())]
    width = 60

    def table_rows(rows: dict[str, dict[str, int]]) -> list[str]:
        return [f"{row:{width}s}" + "".join(f"{n:7d}" for n in counts.values()) for row, counts in rows.items()]

    lines += ["", f"{'':{width}s}" + "".join(f"{column:>7s}" for column in [*COLUMNS.values(), "all"]),
              *table_rows(summary["games"]),
              "-- lost episodes by the furthest sub-goal reached --", *table_rows(summary["lost_by_furthest_subgoal"]),
              "-- lost episodes flagged (overlapping) --", *table_rows(summary["lost_flags"]), ""]
    steps = summary["totals"]
    lines += [f"steps {steps['steps']}, invalid {steps['invalid']} ({steps['invalid_fraction']:.3f}), unreadable "
              f"{steps['unreadable']}; prompts that dropped history to fit {steps['history_cut']}",
              f"'go to' moves {steps['go_to_moves']}, to a receptacle visited before {steps['revisits']}, last "
              f"visited before the window {steps['revisits_out_of_window']}",
              f"lost episodes {steps['lost']}, mean steps {steps['lost_steps'] / max(1, steps['lost']):.1f}, looping "
              f"{steps['lost_looping']}, the target seen at some point {steps['lost_target_seen']}",
              f"steps from the target's first sighting to taking it (all episodes): "
              f"{summary['sighting_to_take_steps']}",
              f"loop periods of the looping lost episodes: {summary['loop_periods']}",
              "their commonest cycles (numbers masked):",
              *(f"  {n:3d}  {cycle}" for cycle, n in list(summary["loop_cycles"].items())[:SHOWN_LOOP_CYCLES]), "",
              "The current observation (an arrival, an opening) lists the target, hands free -> the policy's action:"]
    for outcome, kinds in summary["action_on_target_in_view"].items():
        lines += [f"  {f'{outcome} episodes, {kind}':60s} {n}" for kind, n in kinds.items()]
    lines.append("Inadmissible actions by kind (all episodes):")
    lines += [f"  {kind:60s} {n}" for kind, n in summary["inadmissible_by_kind"].items()]
    if "expert_agreement" in summary:
        agreement = summary["expert_agreement"]
        lines.append(f"The policy's action is the expert's in its state: {match_line(agreement)}")
    return lines


def analyze(args: argparse.Namespace) -> None:
    """Summarize --traces (and --expert), print the tables, write the result to --out."""
    policy = read_traces(args.traces)
    summary = summarize(policy, read_traces(args.expert) if args.expert else [], args.history)
    if args.agreement:
        summary["expert_agreement"] = expert_agreement(policy)
    lines = tables(summary)
    print("\n".join(lines))
    result = {"bench": "policy_failures", "command": [*args.play_command, args.command], "traces": args.traces.name,
              "expert_traces": args.expert.name if args.expert else None, "history_length": args.history,
              **summary, "tables": lines}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


def evenly_spaced(games: list[Game], limit: int | None) -> list[Game]:
    """`limit` of `games` at even intervals of their order (all of them without a limit): a game tree lists its
    games task type by task type, so the first N would be of one type."""
    if limit is None or limit >= len(games):
        return games
    return [games[i * len(games) // limit] for i in range(limit)]


def imitate(args: argparse.Namespace) -> None:
    """The checkpoint's greedy answer at every state of --rows (SFT rows: a demonstrator's states and actions)
    against the row's action, by its verb; printed and written to --out."""
    import pandas as pd
    from transformers import AutoTokenizer

    from molmo_agent.envs.projection import project_action
    from molmo_agent.models.checkpoint_parts import sha256, weights_sha256

    rows = pd.read_parquet(args.rows, columns=["prompt_ids", "response_ids", "action"])
    rows = rows.iloc[rows["prompt_ids"].map(len).argsort(kind="stable")]  # batches of similar lengths pad little
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = load_policy(args.model)
    answers, start = [], time.perf_counter()
    for first in range(0, len(rows), args.batch):
        batch = rows.iloc[first:first + args.batch]
        answers += generate_ids(model, tokenizer, [list(ids) for ids in batch["prompt_ids"]], 0.0,
                                args.response_length)
        print(f"{len(answers)}/{len(rows)} rows, {time.perf_counter() - start:.0f} s", flush=True)
    actions = [project_action(tokenizer.decode(answer, skip_special_tokens=True)).action for answer in answers]
    counts = matches_by_verb(zip(rows["action"], actions))
    print(f"The greedy action is the row's: {match_line(counts)}")
    # where each wrong action began: in the thought, in its decision's verb, object or number, or in the action
    kinds: dict[str, Counter] = defaultdict(Counter)
    for reference, answer, row_action, action in zip(rows["response_ids"], answers, rows["action"], actions):
        if action != row_action:
            kinds[row_action.split()[0]][divergence(list(reference), answer, tokenizer)] += 1
    wrong_from = {verb: dict(counts.most_common()) for verb, counts in sorted(kinds.items())}
    print(f"Where a wrong action's answer left the row's: {json.dumps(wrong_from)}")
    result = {"bench": "policy_failures imitate", "command": args.command, "rows": str(args.rows),
              "rows_sha256": sha256(args.rows), "weights_sha256": weights_sha256(Path(args.model)), **counts,
              "wrong_action_diverged_at": wrong_from}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written {args.out}")


def play(args: argparse.Namespace) -> None:
    """Play the games of --split (every one, or --limit of each) with --player; the traces to --out."""
    games = [game for split in args.split for game in evenly_spaced(load_games(args.games, split), args.limit)
             for _ in range(args.group_size)]
    with open_text(args.out, "w") as out:
        (play_policy if args.player == "policy" else play_expert)(args, games, out)
    print(f"written {args.out}")


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    player = modes.add_parser("play", help="play a split's games; one JSON line per episode")
    player.add_argument("--player", choices=("policy", "expert"), required=True)
    player.add_argument("--model", help="the policy's checkpoint folder")
    player.add_argument("--games", required=True, help="root of a generated game tree")
    player.add_argument("--split", nargs="+", default=["valid_unseen"])
    player.add_argument("--limit", type=int,
                        help="play N games of each split, evenly spaced in the tree's order (grouped by task type)")
    player.add_argument("--temperature", type=float, default=0.4, help="the recipe's validation temperature")
    player.add_argument("--top-k", type=int, default=0, help="the policy samples its top-k tokens only (0: all)")
    player.add_argument("--group-size", type=int, default=1,
                        help="episodes of each game, one after another (a training group: GROUP_SIZE)")
    player.add_argument("--seed", type=int, default=0, help="the policy's sampling seed; the expert's random draws")
    player.add_argument("--batch", type=int, default=25, help="games played at once (sampling depends on it)")
    player.add_argument("--max-steps", type=int, default=30)
    player.add_argument("--history", type=int, default=2, help="env.history_length")
    player.add_argument("--prompt-length", type=int, default=1024, help="data.max_prompt_length")
    player.add_argument("--response-length", type=int, default=128, help="data.max_response_length")
    player.add_argument("--out", required=True, type=Path, help="the traces (JSON lines; gzipped if *.gz)")
    player.set_defaults(run=play)
    analyzer = modes.add_parser("analyze", help="classify the policy's failures; JSON and tables")
    analyzer.add_argument("--traces", required=True, type=Path, help="the policy's traces (from play)")
    analyzer.add_argument("--expert", type=Path, help="the expert's traces on the same games (from play)")
    analyzer.add_argument("--history", type=int, default=2, help="the prompt's window: env.history_length of play")
    analyzer.add_argument("--agreement", action="store_true", help="also count how often the policy's action is the "
                          "hand-coded expert's in the policy's own states (reads the traces' game files)")
    analyzer.add_argument("--out", required=True, type=Path, help="the result file (JSON)")
    analyzer.add_argument("--play-command", action="append", default=[],
                          help="a command that made the traces, stored with the result (repeatable)")
    analyzer.set_defaults(run=analyze)
    imitator = modes.add_parser("imitate", help="a checkpoint's greedy action at each SFT row's state, by verb")
    imitator.add_argument("--model", required=True, help="the policy's checkpoint folder")
    imitator.add_argument("--rows", required=True, type=Path, help="an SFT parquet (sft_data): states and actions")
    imitator.add_argument("--batch", type=int, default=16, help="rows generated at once")
    imitator.add_argument("--response-length", type=int, default=128, help="data.max_response_length")
    imitator.add_argument("--out", required=True, type=Path, help="the result file (JSON)")
    imitator.set_defaults(run=imitate)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    if args.mode == "play" and args.player == "policy" and not args.model:
        parser.error("--player policy needs --model")
    args.command = shlex.join(["python", "bench/policy_failures.py", *argv])
    args.run(args)


if __name__ == "__main__":
    main()
