"""bench/policy_failures.py: hand-written episodes classified as the analysis says (a loop, an inadmissible 'take'
of an object not in view, a 'go to' where the player already is, a sighting that left the prompt's window, a won
episode); the expert plays the fixture games and `analyze` reads gzipped traces into a result with its commands; a
tiny checkpoint plays a fixture game through the agent loop's prompts."""
import gzip
import json
import pathlib

from molmo_agent.envs.alfworld.games import load_games

import policy_failures as bench
from alfworld_games import GAMES_ROOT, game_files

GAME = "/games/json_2.1.1/valid_unseen/pick_and_place_simple-Apple-None-Fridge-10/trial_T0_000001/game.tw-pddl"
ROOM = "You are in the middle of a room. Looking quickly around you, you see a countertop 1, a fridge 1, and a shelf 1."
AT_COUNTERTOP = "You arrive at countertop 1. On the countertop 1, you see a apple 1, and a knife 1."
AT_SHELF = "You arrive at shelf 1. On the shelf 1, you see nothing."
AT_FRIDGE = "You arrive at fridge 1. The fridge 1 is closed."
NOTHING = "Nothing happens."


def step(action: str, obs: str, admissible: bool = True, shown: int = 2) -> dict:
    return {"action": action, "obs": obs, "admissible": admissible, "format_ok": True, "reason": "", "shown": shown}


def episode(steps: list[dict], won: bool = False, game: str = GAME) -> dict:
    for t, each in enumerate(steps):
        each["shown"] = min(each["shown"], t)
    return {"game": game, "split": "valid_unseen", "task_type": "pick_and_place_simple", "initial_obs": ROOM,
            "steps": steps, "won": won, "n_steps": len(steps)}


WON = episode([step("go to countertop 1", AT_COUNTERTOP),
               step("take apple 1 from countertop 1", "You pick up the apple 1 from the countertop 1."),
               step("go to fridge 1", AT_FRIDGE),
               step("open fridge 1", "You open the fridge 1. The fridge 1 is open. In it, you see nothing."),
               step("move apple 1 to fridge 1", "You move the apple 1 to the fridge 1.")], won=True)
# sees the apple, takes one that is not there, then keeps going where it already is
LOOPING = episode([step("go to countertop 1", AT_COUNTERTOP),
                   step("take apple 2 from countertop 1", NOTHING, admissible=False),
                   *(step("go to countertop 1", NOTHING, admissible=False) for _ in range(4))])
# sees the apple, then wanders off: by step 4 no prompt shows where it is
FORGETTING = episode([step("go to countertop 1", AT_COUNTERTOP), step("go to shelf 1", AT_SHELF),
                      step("go to fridge 1", AT_FRIDGE), step("go to shelf 1", AT_SHELF),
                      step("go to fridge 1", AT_FRIDGE), step("go to countertop 1", AT_COUNTERTOP)])


def test_a_won_episode_reaches_its_subgoals_and_takes_the_target_in_view():
    analysis = bench.analyze_episode(WON, history_length=2)
    assert analysis["reached"] == {"seen": 0, "taken": 1, "placed": 4}
    assert analysis["on_target"] == {"took it": 1} and analysis["invalid"] == 0
    assert analysis["loop"] == (0, 0, -1) and analysis["history_cut"] == 0


def test_a_loop_of_inadmissible_actions_is_classified_by_kind():
    analysis = bench.analyze_episode(LOOPING, history_length=2)
    assert bench.lost_at(analysis["reached"], "pick_and_place_simple") == "seen, never taken"
    assert analysis["loop"] == (1, 4, 2)
    assert analysis["inadmissible"] == {"take: the target, not in view (a made-up or wrong id)": 1,
                                        "go to: where it already is": 4}
    assert analysis["on_target"] == {"take, the target with a wrong id": 1}
    flags = bench.lost_flags(LOOPING, analysis)
    assert [flag for flag, raised in flags.items() if raised] == [
        "loop (a cycle of <= 4 actions x >= 3)", ">= 1 invalid action", ">= 3 invalid actions"]


def test_a_sighting_that_left_the_window_and_revisits_out_of_it_are_counted():
    analysis = bench.analyze_episode(FORGETTING, history_length=2)
    assert analysis["counts"] == {"go_to_moves": 6, "revisits": 3, "revisits_out_of_window": 1,
                                  "forgotten_sightings": 1}
    assert bench.longest_loop([s["action"] for s in FORGETTING["steps"]]) == (2, 2, 1)
    assert bench.lost_at(analysis["reached"], "pick_and_place_simple") == "seen, never taken"


def test_inadmissible_kinds():
    kind = bench.inadmissible_kind
    assert kind("go to fridge 1", "fridge 1", AT_FRIDGE, ROOM, "apple") == "go to: where it already is"
    assert kind("go to sofa 1", "fridge 1", AT_FRIDGE, ROOM, "apple") == "go to: a receptacle not in the room"
    assert kind("take apple 3 from shelf 1", "countertop 1", AT_COUNTERTOP, ROOM, "apple") == \
        "take: from a receptacle it is not at"
    assert kind("take apple 1 from countertop 1", "countertop 1", AT_COUNTERTOP, ROOM, "apple") == \
        "take: object in view (other reason, e.g. hands full)"
    assert kind("take knife 2 from countertop 1", "countertop 1", AT_COUNTERTOP, ROOM, "apple") == \
        "take: another object, not in view"
    assert kind("take apple 1 with microwave 1", None, ROOM, ROOM, "apple") == \
        "take: not 'take OBJECT from RECEPTACLE'"


def test_the_summary_counts_per_task_type_and_overall():
    summary = bench.summarize([WON, LOOPING, FORGETTING], [], history_length=2)
    assert summary["games"]["won"]["pick"] == 1 and summary["games"]["lost"]["all"] == 2
    assert summary["lost_by_furthest_subgoal"] == {"seen, never taken": {**dict.fromkeys(bench.COLUMNS.values(), 0),
                                                                         "pick": 2, "all": 2}}
    assert summary["totals"]["steps"] == 17 and summary["totals"]["invalid"] == 5
    assert summary["totals"]["lost_looping"] == 1 and summary["loop_cycles"] == {"go to countertop N": 1}
    assert summary["sighting_to_take_steps"] == {1: 1}


def test_the_expert_plays_the_fixture_games_and_analyze_reads_gzipped_traces(tmp_path, capsys):
    expert = tmp_path / "expert.jsonl.gz"
    bench.main(["play", "--player", "expert", "--games", str(GAMES_ROOT), "--split", "valid_unseen",
                "--out", str(expert)])
    records = bench.read_traces(expert)
    assert len(records) == 6 and {r["split"] for r in records} == {"valid_unseen"}
    assert all(0 < r["n_steps"] == len(r["actions"]) <= 30 for r in records if r["won"])
    assert all("has not won after 30 actions" in r["reason"] for r in records if not r["won"])
    won_game = next(r["game"] for r in records if r["won"])
    policy = tmp_path / "policy.jsonl.gz"
    with gzip.open(policy, "wt") as out:
        out.write(json.dumps(episode(LOOPING["steps"], game=won_game) | {"task_type": "pick_and_place_simple"}))
    result = tmp_path / "result.json"
    bench.main(["analyze", "--traces", str(policy), "--expert", str(expert), "--out", str(result),
                "--play-command", "python bench/policy_failures.py play ..."])
    written = json.loads(result.read_text())
    assert written["command"][0] == "python bench/policy_failures.py play ..."
    assert written["command"][1].startswith("python bench/policy_failures.py analyze --traces")
    assert written["splits"]["valid_unseen"]["won_by"] == {"both": 0, "expert only": 1, "policy only": 0,
                                                          "neither": 0}
    assert written["tables"] == capsys.readouterr().out.splitlines()[-len(written["tables"]) - 1:-1]


def one_game_tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A game tree holding one fixture game (look_at_obj_in_light) as valid_unseen."""
    trial = pathlib.Path(next(game for game in game_files() if "valid_unseen/look_at_obj_in_light" in game)).parent
    split = tmp_path / "games" / "json_2.1.1" / "valid_unseen" / trial.parent.name
    split.mkdir(parents=True)
    (split / trial.name).symlink_to(trial)
    return tmp_path / "games"


def test_a_checkpoint_plays_a_fixture_game_and_the_prompt_drops_history_to_fit(molmo2_dir, tmp_path):
    """The tiny random checkpoint answers gibberish: unreadable, still sent to the game. Its second prompt holds one
    history step only without the 200-token limit, so the step's prompt holds none."""
    traces = tmp_path / "policy.jsonl"
    bench.main(["play", "--player", "policy", "--model", str(molmo2_dir), "--games", str(one_game_tree(tmp_path)),
                "--max-steps", "2", "--prompt-length", "200", "--response-length", "8", "--out", str(traces)])
    [record] = bench.read_traces(traces)
    assert record["task_type"] == "look_at_obj_in_light" and not record["won"] and record["n_steps"] == 2
    assert [s["shown"] for s in record["steps"]] == [0, 0] and all(s["prompt_tokens"] <= 200 for s in record["steps"])
    assert all(not s["format_ok"] and s["obs"] == NOTHING for s in record["steps"])
    analysis = bench.analyze_episode(record, history_length=2)
    assert analysis["history_cut"] == 1 and analysis["inadmissible"] == {"unreadable answer: missing_action_tags": 2}


def test_a_group_plays_each_game_several_times_sampling_the_top_k(molmo2_dir, tmp_path, monkeypatch):
    asked = []

    def sample(model, tokenizer, prompts, temperature, max_tokens, top_k=0):
        asked.append((len(prompts), temperature, top_k))
        return [tokenizer.encode("<think>x</think><action>look</action>")] * len(prompts)
    monkeypatch.setattr(bench, "generate_ids", sample)
    traces = tmp_path / "policy.jsonl"
    bench.main(["play", "--player", "policy", "--model", str(molmo2_dir), "--games", str(one_game_tree(tmp_path)),
                "--group-size", "3", "--temperature", "1.5", "--top-k", "20", "--max-steps", "1", "--out",
                str(traces)])
    records = bench.read_traces(traces)
    assert asked == [(3, 1.5, 20)]  # the group's episodes answered in one batch
    assert len({record["game"] for record in records}) == 1 and len(records) == 3
    assert all(record["top_k"] == 20 and record["steps"][0]["action"] == "look" for record in records)


def test_a_limit_plays_games_spread_over_the_task_types():
    games = load_games(str(GAMES_ROOT), "train")  # one game of each task type, grouped by type
    assert bench.evenly_spaced(games, None) == games == bench.evenly_spaced(games, 99)
    assert [game.task_type for game in bench.evenly_spaced(games, 3)] == [games[0].task_type, games[2].task_type,
                                                                           games[4].task_type]


def test_agreement_counts_the_policys_actions_that_are_the_experts_in_its_own_states(tmp_path):
    game = next(g for g in load_games(str(GAMES_ROOT), "train") if g.task_type == "pick_and_place_simple")
    # the expert: look, go to sofa 1 (where the laptop belongs), go to sidetable 1, take laptop 1 from sidetable 1
    played = ["look", "go to sidetable 1", "take nothing 1 from nowhere 1", "take laptop 1 from sidetable 1"]
    record = episode([step(action, "") for action in played], game=game.path) | {"split": "train"}
    traces = tmp_path / "policy.jsonl"
    traces.write_text(json.dumps(record) + "\n")
    result = tmp_path / "result.json"
    bench.main(["analyze", "--traces", str(traces), "--agreement", "--out", str(result)])
    # at the sidetable the expert takes the laptop (twice asked: once after the policy's failed take)
    assert json.loads(result.read_text())["expert_agreement"] == {
        "states": 4, "same": 2, "by_verb": {"take": {"same": 1, "states": 2}, "look": {"same": 1, "states": 1},
                                                   "go": {"same": 0, "states": 1}}}


REFERENCE = ("<think>The pen is on the desk. I will take pen 1 from desk 1.</think>"
             "<action>take pen 1 from desk 1</action>")


def test_imitate_counts_the_greedy_actions_that_are_the_rows_and_where_wrong_ones_began(molmo2_dir, tmp_path,
                                                                                          monkeypatch):
    import pandas as pd
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(molmo2_dir)

    def ids(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False)
    rows = tmp_path / "valid_unseen.parquet"
    actions = ["go to desk 1", "take pen 1 from desk 1", "go to shelf 1"]
    references = ["<think>I will go to desk 1.</think><action>go to desk 1</action>", REFERENCE,
                  "<think>I will go to shelf 1.</think><action>go to shelf 1</action>"]
    pd.DataFrame({"prompt_ids": [[1] * 3, [1] * 2, [1] * 4], "response_ids": [ids(r) for r in references],
                  "action": actions}).to_parquet(rows)
    asked = []

    def greedy(model, tokenizer, prompts, temperature, max_tokens):  # answers in the order of the prompts' lengths
        asked.append((prompts, temperature))
        return [ids(REFERENCE.replace("pen 1", "pen 2")), ids("<think>I will go to desk  1.</think><action>Go to "
                                                               "desk  1</action>"), ids(references[2])]
    monkeypatch.setattr(bench, "generate_ids", greedy)
    result = tmp_path / "result.json"
    bench.main(["imitate", "--model", str(molmo2_dir), "--rows", str(rows), "--out", str(result)])
    assert asked == [([[1] * 2, [1] * 3, [1] * 4], 0.0)]
    written = json.loads(result.read_text())
    assert written["by_verb"] == {"go": {"same": 2, "states": 2}, "take": {"same": 0, "states": 1}}
    assert written["wrong_action_diverged_at"] == {"take": {"number": 1}}  # the same actions are not counted


def test_divergence_names_the_part_of_the_answer_that_left_the_demonstration(molmo2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(molmo2_dir)

    def where(answer: str) -> str:
        return bench.divergence(tokenizer.encode(REFERENCE, add_special_tokens=False),
                                tokenizer.encode(answer, add_special_tokens=False), tokenizer)
    assert where(REFERENCE) == "none"
    assert where(REFERENCE.replace("is on the desk", "is in the drawer")) == "thought"
    assert where(REFERENCE.replace("I will take pen 1 from desk 1.", "I will go to desk 1.")) == "verb"
    assert where(REFERENCE.replace("I will take pen 1", "I will take book 1")) == "object"
    assert where(REFERENCE.replace("I will take pen 1", "I will take pen 2")) == "number"
    assert where(REFERENCE.replace("<action>take pen 1", "<action>take pen 2")) == "action"
    assert where(REFERENCE[:-len("</action>")]) == "action"  # cut short after a matching thought
