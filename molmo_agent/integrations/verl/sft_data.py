"""ALFWorld demonstrations -> SFT rows: one parquet row per agent step, with the agent loop's prompt token ids.

    python -m molmo_agent.integrations.verl.sft_data --games ROOT --model DIR --out DIR [--split train ...]
        [--source walkthrough|expert|mixed] [--thought plain|sighting] [--relabel EPISODES ...] [--workers N]
        [OVERRIDES ...]

Each game's demonstration is played in the environment (`envs.demonstrations`): `walkthrough` (default), the
planner's winning commands stored in the game file, which go straight to objects the player has not seen yet;
`expert`, alfworld's hand-coded expert (`envs.alfworld.expert`), which searches receptacles as a player must (a
game it does not win within `env.max_steps` is left out, and counted in the command's last lines); or `mixed`,
the expert's where it wins in time and the walkthrough elsewhere (each row's `source` says which).
`--relabel` adds DAgger's rows to train: the states a policy reached in its episodes of training games (JSON lines
with `game`, the game file, and `steps`, each with the `action` the episode sent, as `bench/policy_failures.py
play` writes them), replayed and answered with alfworld's hand-coded expert's action there
(`envs.alfworld.expert.expert_labels`; source `relabeled`).
Every step becomes one row:

    prompt_ids    the prompt the agent loop sends for that state: the environment's prompt builder with the last
                  `env.history_length` steps, one user message through verl's Continuous Token builder made as
                  verl's agent-loop worker makes it (the checkpoint's processor, so Molmo2's chat template and BOS),
                  oldest history dropped first to fit `data.max_prompt_length` (`agent_loop.step_prompt_ids`)
    response_ids  `<think>My task is to {task}. I will {action}.</think><action>{action}</action>` tokenized, then
                  EOS: what the model should answer (`envs.demonstrations.THOUGHT_TEMPLATE`); with `--thought
                  sighting` the thought also says which things the task names the observation shows
                  ("... I see watch 1. I will take watch 1 from sidetable 1.")
    game, split, task_type, step, action, source

OUT/<split>.parquet is written for each split asked for (default: train, valid_seen and valid_unseen: the
validation rows give SFT its validation loss). OVERRIDES are Hydra overrides of the RL config
(molmo_agent/config/alfworld_gigpo.yaml) such as `env.history_length=2 data.max_prompt_length=2048`: give the RL
run's values, so the rows show exactly the prompts its policy will see. A demonstration that does not win, or
that `env.max_steps` cuts short, or an answer longer than `data.max_response_length`, stops the command naming its
game. The last line per split counts games, rows and
prompt lengths.
"""
import argparse
import functools
import os
import pathlib
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

from molmo_agent.envs.alfworld.expert import expert_actions, expert_labels
from molmo_agent.envs.alfworld.games import SPLITS, Game, load_games, read_walkthrough, split_and_name
from molmo_agent.envs.base import observation_text
from molmo_agent.envs.demonstrations import (THOUGHTS, DemonstrationStep, check_thought, demonstration_steps,
                                             relabeled_steps)
from molmo_agent.envs.registry import get_env, make_env
from molmo_agent.integrations.verl.agent_loop import env_knobs, step_prompt_ids
from molmo_agent.integrations.verl.validation_dump import read_episodes

CONFIG_DIR = str(pathlib.Path(__file__).parents[2] / "config")
CONFIG_NAME = "alfworld_gigpo"
ENV_NAME = "alfworld"  # the walkthroughs are ALFWorld's


def rl_config(model: str, overrides: list[str]) -> DictConfig:
    """The RL training config (alfworld_gigpo.yaml) for `model` with `overrides`: the knobs the rows follow."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        config = compose(CONFIG_NAME, overrides=[f"actor_rollout_ref.model.path={model}", *overrides])
    if config.env.env_name != ENV_NAME:
        raise ValueError(f"env.env_name={config.env.env_name!r}: SFT rows come from ALFWorld's walkthroughs, so "
                         f"env.env_name must be {ENV_NAME!r}")
    return config


SOURCES = ("walkthrough", "expert", "mixed")
RELABELED = "relabeled"  # the source of a row from a policy's episode answered by the expert


class StepRows:
    """Builds the rows of one game under `config` from `source`'s demonstration, its answers in `thought`'s
    words, with the tokenizer and token builder the agent loop gets."""

    def __init__(self, config: DictConfig, source: str = "walkthrough", thought: str = "plain"):
        if source not in SOURCES:
            raise ValueError(f"unknown demonstration source {source!r}: accepted are {list(SOURCES)}")
        check_thought(thought)  # before any game is played
        self.config, self.source, self.thought = config, source, thought
        # As verl's AgentLoopWorker builds them: the model config's tokenizer and processor, the builder of the
        # checkpoint's model type with the data config's chat-template and processor arguments.
        model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
        self.tokenizer: PreTrainedTokenizerBase = model_config.tokenizer
        model_type = getattr(model_config.hf_config, "model_type", None)
        builder = create_continuous_token_builder(
            self.tokenizer, hf_model_type=model_type if isinstance(model_type, str) else None,
            chat_template_kwargs=config.data.get("apply_chat_template_kwargs", {}),
            mm_processor_kwargs=config.data.get("mm_processor_kwargs", {}), processor=model_config.processor)
        self.build_tokens: Callable[..., list[int]] = builder.build_initial_tokens
        self.spec = get_env(ENV_NAME)
        self.env = make_env(ENV_NAME, config.env.max_steps, **env_knobs(config.env))  # every game's replay

    def response_ids(self, response: str) -> list[int]:
        """The answer's tokens and EOS, as the model generates them."""
        return self.tokenizer.encode(response, add_special_tokens=False) + [self.tokenizer.eos_token_id]

    def actions(self, game: Game) -> tuple[str, list[str]] | None:
        """(source, actions) of `game`'s demonstration; None when `expert`'s expert does not win it within
        env.max_steps (`mixed` then takes the walkthrough)."""
        if self.source == "walkthrough":
            return "walkthrough", read_walkthrough(game.path)
        try:
            return "expert", expert_actions(os.path.abspath(game.path), self.config.env.max_steps)
        except ValueError:
            return None if self.source == "expert" else ("walkthrough", read_walkthrough(game.path))

    def __call__(self, game: Game) -> list[dict[str, Any]]:
        """The game's rows; none when it has no demonstration (the command counts those games). A walkthrough
        that does not replay is an error in the game."""
        demonstration = self.actions(game)
        if demonstration is None:
            return []
        source, actions = demonstration
        steps = demonstration_steps(ENV_NAME, self.env, self.config.env.max_steps,
                                    {"game": os.path.abspath(game.path)}, actions,
                                    source=f"the {source} of {game.path}", thought=self.thought)
        return [self.row(game, step, source) for step in steps]

    def relabeled(self, game: Game, played: list[str]) -> list[dict[str, Any]]:
        """The rows of a policy's episode of `game`, which sent the actions `played`: each state it reached,
        answered with the hand-coded expert's action there (none past a state the expert fails in)."""
        labels = expert_labels(os.path.abspath(game.path), played)
        steps = relabeled_steps(ENV_NAME, self.env, self.config.env.max_steps, {"game": os.path.abspath(game.path)},
                                played, labels, source=f"a policy's episode of {game.path}", thought=self.thought)
        return [self.row(game, step, RELABELED) for step in steps]

    def row(self, game: Game, step: DemonstrationStep, source: str) -> dict[str, Any]:
        """`step`'s row: the prompt the agent loop sends in its state, and its answer. A ValueError names the game
        when the answer is longer than the RL run lets the policy write (`data.max_response_length`): cut there,
        it would not read as its action."""
        prompt_ids, _ = step_prompt_ids(self.spec, self.build_tokens, observation_text(step.observation), None,
                                        step.info, step.history, self.config.env.history_length,
                                        self.config.actor_rollout_ref.rollout.prompt_length)
        response_ids = self.response_ids(step.response)
        limit = self.config.actor_rollout_ref.rollout.response_length
        if len(response_ids) > limit:
            raise ValueError(f"{game.path}: step {step.step}'s answer is {len(response_ids)} tokens, over "
                             f"data.max_response_length={limit}: {step.response!r}")
        return {"game": os.path.abspath(game.path), "split": game.split, "task_type": game.task_type,
                "step": step.step, "action": step.action, "source": source, "prompt_ids": prompt_ids,
                "response_ids": response_ids}


_process_rows: StepRows | None = None  # one per worker process: its tokenizer loads once


def _start_worker(config: DictConfig, source: str, thought: str) -> None:
    global _process_rows
    _process_rows = StepRows(config, source, thought)


def _rows_in_worker(job: tuple[Game, list[str] | None]) -> list[dict[str, Any]]:
    return _rows_of(_process_rows, job)


def _rows_of(rows: StepRows, job: tuple[Game, list[str] | None]) -> list[dict[str, Any]]:
    """A game's demonstration rows (no actions given), or the relabeled rows of a policy's episode of it."""
    game, played = job
    return rows(game) if played is None else rows.relabeled(game, played)


def step_rows(games: list[Game], config: DictConfig, workers: int, source: str = "walkthrough",
              episodes: Sequence[tuple[Game, list[str]]] = (), thought: str = "plain") -> list[dict[str, Any]]:
    """Every step row of `games` from `source`'s demonstrations, then the relabeled rows of each policy episode
    (game, actions sent), in their order, answered in `thought`'s words, built on `workers` processes (1: in this
    one), with a progress bar on stderr."""
    jobs = [(game, None) for game in games] + list(episodes)
    progress = functools.partial(tqdm, total=len(jobs), desc=f"{source} demonstrations"
                                 + (f" and {len(episodes)} relabeled episodes" if episodes else ""), unit="game")
    if workers == 1:
        rows_of = functools.partial(_rows_of, StepRows(config, source, thought))
        return [row for rows in progress(map(rows_of, jobs)) for row in rows]
    with ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(config, source, thought)) as pool:
        return [row for rows in progress(pool.map(_rows_in_worker, jobs)) for row in rows]


def policy_episodes(paths: list[str], games: list[Game]) -> list[tuple[Game, list[str]]]:
    """(game, actions sent) of every episode in the JSON-lines files `paths` (gzipped when named *.gz; a record
    holds `game`, its game file, and `steps`, each with its `action`), matched to `games` by split, task and trial
    whatever the root they were played under. A ValueError names the file and game of a record that matches no
    training game: the rows train the policy, so a validation game's states would leak into training."""
    by_key = {(game.split, game.name): game for game in games}
    episodes = []
    for path in paths:
        for record in read_episodes(pathlib.Path(path)):
            key = split_and_name(record["game"])
            if key[0] != "train" or key not in by_key:
                raise ValueError(f"--relabel {path}: the episode of {record['game']} is not of a training game "
                                 "of --games (relabeled states train the policy)")
            episodes.append((by_key[key], [step["action"] for step in record["steps"]]))
    return episodes


def write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    """`rows` to `path`, written under a temporary name and renamed: never a partial file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        pd.DataFrame(rows).to_parquet(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def summary(rows: list[dict[str, Any]]) -> str:
    games = len({row["game"] for row in rows})
    lengths = [len(row["prompt_ids"]) for row in rows]
    responses = [len(row["response_ids"]) for row in rows]
    return (f"{games} games, {len(rows)} rows ({len(rows) / games:.2f} per game); prompt tokens mean "
            f"{statistics.mean(lengths):.0f}, max {max(lengths)}; response tokens mean {statistics.mean(responses):.0f}, "
            f"max {max(responses)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--games", required=True, help="root of the game tree (ALFWORLD_DATA layout)")
    parser.add_argument("--model", required=True, help="the checkpoint SFT trains (its tokenizer and processor)")
    parser.add_argument("--out", required=True, help="folder for <split>.parquet")
    parser.add_argument("--split", action="append", choices=SPLITS, help="a split to write (repeatable; default all)")
    parser.add_argument("--source", choices=SOURCES, default="walkthrough",
                        help="the demonstrations: the planner's walkthroughs, alfworld's hand-coded expert, or the "
                             "expert's where it wins within env.max_steps and the walkthroughs elsewhere")
    parser.add_argument("--thought", choices=THOUGHTS, default="plain",
                        help="the answers' thought: the task and the action, or (sighting) also which things the "
                             "task names the observation shows")
    parser.add_argument("--relabel", action="append", default=[], metavar="EPISODES",
                        help="a policy's episodes of training games (JSON lines, *.gz too) whose states are answered "
                             "by the hand-coded expert and added to train (repeatable)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes playing games")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the RL config, e.g. env.history_length=2")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    try:
        config = rl_config(args.model, args.overrides)
    except ValueError as error:
        raise SystemExit(f"bad config: {error}") from None
    splits = args.split or SPLITS
    try:
        games = [game for split in splits for game in load_games(args.games, split)]
    except ValueError as error:
        raise SystemExit(f"--games {args.games}: {error}") from None
    empty = [split for split in splits if not any(game.split == split for game in games)]
    if empty:
        raise SystemExit(f"--games {args.games}: no playable game in {', '.join(empty)}")
    if args.relabel and "train" not in splits:
        parser.error("--relabel adds rows to train: write the train split too")
    try:
        episodes = policy_episodes(args.relabel, games)
        rows = step_rows(games, config, min(args.workers, len(games)), args.source, episodes, args.thought)
    except ValueError as error:  # a demonstration or an episode that does not replay, an episode of no training game
        raise SystemExit(str(error)) from None
    os.makedirs(args.out, exist_ok=True)
    for split in splits:
        split_rows = [row for row in rows if row["split"] == split]
        if not split_rows:
            raise SystemExit(f"--games {args.games}: no {split} game gave a demonstration ({args.source})")
        path = os.path.join(args.out, f"{split}.parquet")
        write_parquet(split_rows, path)
        unplayed = sum(game.split == split for game in games) - len(
            {row["game"] for row in split_rows if row["source"] != RELABELED})
        skipped = f"; {unplayed} games left out: the expert did not win them within env.max_steps" if unplayed else ""
        relabeled = [row for row in split_rows if row["source"] == RELABELED]
        added = f"; of them relabeled: {summary(relabeled)}" if relabeled else ""
        print(f"{path}: {summary(split_rows)}{skipped}{added}", flush=True)

if __name__ == "__main__":
    main()
