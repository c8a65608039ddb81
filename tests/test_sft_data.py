"""SFT rows hold the agent loop's own prompts: the loop, answered with the rows' responses, sends the rows' prompt ids.

A tiny Molmo2 checkpoint (real tokenizer, our processor through verl's Continuous Token builder) on the committed
fixture games: every game of every split is played by the agent loop and compared with its rows.
"""
import asyncio
import gzip
import json

import pandas as pd
import pytest

from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

from molmo_agent.envs.alfworld.expert import expert_labels
from molmo_agent.envs.alfworld.games import load_games
from molmo_agent.envs.demonstrations import demonstration_response
from molmo_agent.integrations.verl import steps
from molmo_agent.integrations.verl.agent_loop import EnvAgentLoop
from molmo_agent.integrations.verl.sft_data import StepRows, main

from alfworld_games import GAMES_ROOT, walkthrough
from test_agent_loop import compose_config

RESPONSE_LENGTH = 64
# (env.history_length, data.max_prompt_length, split): the RL default window on every fixture game, and a limit
# that drops history (the fixture prompts reach ~620 tokens with two steps shown) and cuts the longest prompts
# without any, on the train games.
SETTINGS = [(2, 2048, None), (3, 400, "train")]


class ReplayServer:
    """Answers each turn with the next of `responses` (token ids) and records the prompt ids it was sent."""

    def __init__(self, responses: list[list[int]]):
        self.responses = iter(responses)
        self.prompts: list[list[int]] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs) -> TokenOutput:
        self.prompts.append(list(prompt_ids))
        return TokenOutput(token_ids=next(self.responses))


def config_of(molmo2_dir, history_length: int, prompt_length: int):
    return compose_config(molmo2_dir, "env.max_steps=50", f"env.history_length={history_length}",
                          f"data.max_prompt_length={prompt_length}", f"data.max_response_length={RESPONSE_LENGTH}")


def play_loop(config, model_config, game: str, responses: list[list[int]]) -> tuple[list, ReplayServer]:
    """One session of the agent loop on `game`, built as verl's agent-loop worker builds it from its model config
    (`actor_rollout_ref.model` as a dataclass: tokenizer, processor, model type)."""
    server = ReplayServer(responses)

    async def session():  # the loop binds the running event loop when built
        loop = EnvAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server,
                            tokenizer=model_config.tokenizer, processor=model_config.processor,
                            dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data),
                            hf_model_type=model_config.hf_config.model_type)
        return await loop.run({"temperature": 1.0}, extra_info={"game": game})

    return asyncio.run(session()), server


@pytest.mark.slow
@pytest.mark.parametrize("history_length, prompt_length, split", SETTINGS)
def test_rows_are_the_prompts_the_agent_loop_sends(molmo2_dir, history_length, prompt_length, split):
    config = config_of(molmo2_dir, history_length, prompt_length)
    model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    rows_of = StepRows(config)
    lengths = []
    for game in load_games(str(GAMES_ROOT), split):
        rows = rows_of(game)
        assert [row["step"] for row in rows] == list(range(len(walkthrough(game.path))))
        outputs, server = play_loop(config, model_config, rows[0]["game"], [row["response_ids"] for row in rows])
        assert server.prompts == [row["prompt_ids"] for row in rows]
        assert [output.response_ids for output in outputs] == [row["response_ids"] for row in rows]
        # The rows' answers, played by the loop, are valid actions that win the game.
        assert all(output.extra_fields[steps.IS_ACTION_VALID] for output in outputs)
        assert outputs[-1].extra_fields[steps.WON]
        lengths += [len(row["prompt_ids"]) for row in rows]
    assert max(lengths) <= prompt_length
    if prompt_length < 2048:
        assert max(lengths) == prompt_length  # the limit was reached: the truncation path is covered


def test_sighting_rows_keep_the_loops_prompts_and_answers_that_win(molmo2_dir):
    """`--thought sighting` changes the answers only: the loop, answered with them, sends the same prompts as for
    plain rows, reads every answer as its action and wins; each answer says what of the task is in view."""
    config = config_of(molmo2_dir, *SETTINGS[0][:2])
    model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    game = load_games(str(GAMES_ROOT), "train")[0]
    plain, sighting = StepRows(config)(game), StepRows(config, thought="sighting")(game)
    assert [row["prompt_ids"] for row in sighting] == [row["prompt_ids"] for row in plain]
    outputs, server = play_loop(config, model_config, sighting[0]["game"], [row["response_ids"] for row in sighting])
    assert server.prompts == [row["prompt_ids"] for row in sighting]
    assert all(output.extra_fields[steps.IS_ACTION_VALID] for output in outputs)
    assert outputs[-1].extra_fields[steps.WON]
    answers = [model_config.tokenizer.decode(row["response_ids"]) for row in sighting]
    assert all(" I see " in answer for answer in answers)
    assert [row["response_ids"] for row in sighting] != [row["response_ids"] for row in plain]
    with pytest.raises(ValueError, match="unknown thought"):
        StepRows(config, thought="chatty")


@pytest.mark.slow
def test_expert_rows_search_as_a_player_and_are_the_loops_prompts(molmo2_dir):
    """alfworld's hand-coded expert as the source: its rows, answered back to the agent loop, are the prompts the
    loop sends and win the game; it takes an object only once an observation has shown it."""
    config = config_of(molmo2_dir, *SETTINGS[0][:2])
    model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    rows_of = StepRows(config, "expert")
    lengths = {}
    for game in load_games(str(GAMES_ROOT), "train"):
        rows = rows_of(game)
        if not rows:
            continue
        assert {row["source"] for row in rows} == {"expert"}
        outputs, server = play_loop(config, model_config, rows[0]["game"], [row["response_ids"] for row in rows])
        assert server.prompts == [row["prompt_ids"] for row in rows]
        assert outputs[-1].extra_fields[steps.WON]
        seen = ""
        for row in rows:
            seen += rows_of.tokenizer.decode(row["prompt_ids"])
            if row["action"].startswith("take "):
                assert row["action"].split(" from ")[0].removeprefix("take ") in seen
        lengths[game.path] = (len(rows), len(walkthrough(game.path)))
    assert len(lengths) == 6  # the mended expert wins every fixture training game
    assert all(expert >= planner for expert, planner in lengths.values())
    assert any(expert > planner for expert, planner in lengths.values())  # it searched where the planner knew


def test_a_process_plays_every_demonstration_on_the_same_engines(molmo2_dir, monkeypatch):
    """Each ALFWorld engine maps its own 33 MB copy of Fast Downward's library until the process ends: the rows of
    many games load one for the replays and (once a process) one for the expert, never one a game."""
    import fast_downward

    loads = []
    load_lib = fast_downward.load_lib
    monkeypatch.setattr(fast_downward, "load_lib", lambda: loads.append(1) or load_lib())
    rows_of = StepRows(config_of(molmo2_dir, *SETTINGS[0][:2]), "expert")
    games = load_games(str(GAMES_ROOT), "train")
    assert sum(len(rows_of(game)) > 0 for game in games) >= 5
    assert len(loads) <= 2


def test_games_the_expert_does_not_win_are_left_out_and_counted(molmo2_dir, tmp_path, capsys, monkeypatch):
    from molmo_agent.integrations.verl import sft_data

    games = load_games(str(GAMES_ROOT), "valid_seen")

    def expert(path, max_steps):  # the expert wins every game but the first
        if path.endswith(games[0].path.split("json_2.1.1")[-1]):
            raise ValueError(f"game file {path}: alfworld's hand-coded expert has not won after {max_steps} actions")
        return walkthrough(path)
    monkeypatch.setattr(sft_data, "expert_actions", expert)
    main(["--games", str(GAMES_ROOT), "--model", str(molmo2_dir), "--out", str(tmp_path), "--workers", "1",
          "--split", "valid_seen", "--source", "expert"])
    table = pd.read_parquet(tmp_path / "valid_seen.parquet")
    assert len(set(table["game"])) == len(games) - 1 and set(table["source"]) == {"expert"}
    printed = capsys.readouterr().out
    assert f"valid_seen.parquet: {len(games) - 1} games, {len(table)} rows" in printed
    assert "; 1 games left out: the expert did not win them within env.max_steps" in printed
    # `mixed` plays that game's walkthrough instead.
    main(["--games", str(GAMES_ROOT), "--model", str(molmo2_dir), "--out", str(tmp_path / "mixed"), "--workers", "1",
          "--split", "valid_seen", "--source", "mixed"])
    mixed = pd.read_parquet(tmp_path / "mixed" / "valid_seen.parquet")
    assert len(set(mixed["game"])) == len(games)
    assert set(mixed[mixed["game"].str.endswith(games[0].path.split("json_2.1.1")[-1])]["source"]) == {"walkthrough"}
    assert set(mixed["source"]) == {"walkthrough", "expert"}


def test_row_response_is_the_answer_and_eos(molmo2_dir):
    rows_of = StepRows(config_of(molmo2_dir, *SETTINGS[0][:2]))
    row = rows_of(load_games(str(GAMES_ROOT), "train")[1])[0]  # pick_and_place_simple-Laptop
    tokenizer = rows_of.tokenizer
    assert row["response_ids"][-1] == tokenizer.eos_token_id == 151645
    assert tokenizer.decode(row["response_ids"][:-1]) == (
        "<think>My task is to put a laptop in sofa. I will go to sidetable 1.</think>"
        "<action>go to sidetable 1</action>")
    prompt = tokenizer.decode(row["prompt_ids"])
    assert prompt.startswith("<|im_end|><|im_start|>user\n")  # Molmo2's BOS, then its chat template
    assert prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_command_writes_one_row_per_step_per_split(molmo2_dir, tmp_path, capsys):
    main(["--games", str(GAMES_ROOT), "--model", str(molmo2_dir), "--out", str(tmp_path), "--workers", "1",
          "--split", "valid_seen", "--split", "train", "env.history_length=2"])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["train.parquet", "valid_seen.parquet"]
    printed = capsys.readouterr().out
    for split in ("train", "valid_seen"):
        table = pd.read_parquet(tmp_path / f"{split}.parquet")
        games = load_games(str(GAMES_ROOT), split)
        assert len(table) == sum(len(walkthrough(game.path)) for game in games)
        assert set(table["split"]) == {split} and set(table["task_type"]) == {game.task_type for game in games}
        assert list(table.columns) == ["game", "split", "task_type", "step", "action", "source", "prompt_ids",
                                       "response_ids"]
        assert set(table["source"]) == {"walkthrough"}
        assert f"{split}.parquet: 6 games, {len(table)} rows" in printed


@pytest.mark.parametrize("argv, message", [
    (["--split", "valid_unseen", "env.env_name=sokoban"], "env.env_name='sokoban'"),
    (["--split", "valid_unseen", "env.max_steps=2"], "was cut at env.max_steps=2"),
    (["--split", "valid_unseen", "data.max_response_length=16"], "tokens, over data.max_response_length=16"),
])
def test_command_refuses_what_would_make_wrong_rows(molmo2_dir, tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        main(["--games", str(GAMES_ROOT), "--model", str(molmo2_dir), "--out", str(tmp_path), "--workers", "1", *argv])
    assert not list(tmp_path.iterdir())


LAPTOP_DETOUR = ["look", "take nothing 1 from nowhere 1", "go to sidetable 1", "go to sofa 1", "go to sidetable 1"]


def test_relabeled_rows_are_the_loops_prompts_answered_by_the_expert(molmo2_dir):
    """DAgger's rows: the agent loop, answered with a policy's actions (one the game does not list, a detour),
    sends the rows' prompts; each row answers with the expert's action in that state, not the policy's."""
    config = compose_config(molmo2_dir, f"env.max_steps={len(LAPTOP_DETOUR)}", "env.history_length=2",
                            f"data.max_response_length={RESPONSE_LENGTH}")  # the loop stops after the detour
    model_config = omega_conf_to_dataclass(config.actor_rollout_ref.model)
    rows_of = StepRows(config, "expert")
    game = load_games(str(GAMES_ROOT), "train")[1]  # pick_and_place_simple-Laptop: the laptop is on sidetable 1
    rows = rows_of.relabeled(game, LAPTOP_DETOUR)
    answers = [rows_of.response_ids(demonstration_response("put a laptop in sofa.", action))
               for action in LAPTOP_DETOUR]
    _, server = play_loop(config, model_config, game.path, answers)
    assert [row["prompt_ids"] for row in rows] == server.prompts
    assert [row["action"] for row in rows] == expert_labels(game.path, LAPTOP_DETOUR)
    assert [row["action"] for row in rows][2:4] == ["go to sofa 1", "take laptop 1 from sidetable 1"]
    assert {row["source"] for row in rows} == {"relabeled"} and [row["step"] for row in rows] == list(range(5))


def test_command_adds_relabeled_rows_to_train_and_refuses_validation_episodes(molmo2_dir, tmp_path, capsys):
    game = load_games(str(GAMES_ROOT), "train")[1]
    episodes = tmp_path / "episodes.jsonl.gz"
    with gzip.open(episodes, "wt") as out:  # as bench/policy_failures.py play writes them, under another root
        out.write(json.dumps({"game": "/elsewhere/json_2.1.1/train/" + game.name + "/game.tw-pddl",
                              "steps": [{"action": action} for action in LAPTOP_DETOUR]}) + "\n")
    main(["--games", str(GAMES_ROOT), "--model", str(molmo2_dir), "--out", str(tmp_path / "rows"), "--workers", "1",
          "--split", "train", "--source", "expert", "--relabel", str(episodes)])
    table = pd.read_parquet(tmp_path / "rows" / "train.parquet")
    relabeled = table[table["source"] == "relabeled"]
    assert len(relabeled) == len(LAPTOP_DETOUR) and set(relabeled["game"]) == {game.path}
    assert set(table["source"]) == {"expert", "relabeled"}
    printed = capsys.readouterr().out
    assert "left out" not in printed  # the mended expert wins every fixture training game
    assert f"; of them relabeled: 1 games, {len(LAPTOP_DETOUR)} rows" in printed
    valid = load_games(str(GAMES_ROOT), "valid_seen")[0]
    with gzip.open(episodes, "wt") as out:
        out.write(json.dumps({"game": valid.path, "steps": [{"action": "look"}]}) + "\n")
    with pytest.raises(SystemExit, match=f"--relabel {episodes}: the episode of {valid.path} is not of a training"):
        main(["--games", str(GAMES_ROOT), "--model", str(molmo2_dir), "--out", str(tmp_path / "leak"),
              "--workers", "1", "--relabel", str(episodes)])
    assert not (tmp_path / "leak").exists()
