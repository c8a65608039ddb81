"""bench/group_contrast.py: hand-written groups of episodes (one game's group won and lost and split its actions in
one shared state, the other's split at its first step) give the shares the docstring defines, read from gzipped
traces; a file without episodes is refused."""
import gzip
import json

import pytest

import group_contrast as bench

ROOM = "You are in the middle of a room. Looking quickly around you, you see a desk 1, and a shelf 1."
DESK = "You arrive at desk 1. On the desk 1, you see a pen 1."
SHELF = "You arrive at shelf 1. On the shelf 1, you see nothing."


def step(action: str, obs: str, format_ok: bool = True, admissible: bool = True) -> dict:
    return {"action": action, "obs": obs, "format_ok": format_ok, "admissible": admissible}


def episode(game: str, steps: list[dict], won: bool) -> dict:
    return {"game": game, "task": "put a pen in shelf", "initial_obs": ROOM, "temperature": 1.5, "top_k": 20,
            "steps": steps, "won": won}


RECORDS = [
    episode("a", [step("go to desk 1", DESK), step("take pen 1 from desk 1", "You pick up the pen 1.")], won=True),
    episode("a", [step("go to desk 1", DESK), step("go to shelf 1", SHELF, admissible=False)], won=False),
    episode("b", [step("go to shelf 1", SHELF, format_ok=False)], won=False),
    episode("b", [step("go to desk 1", DESK)], won=False),
]


def test_groups_are_games_and_anchor_groups_their_shared_states():
    figures = bench.group_figures(RECORDS)
    assert (figures["episodes"], figures["groups"], figures["group_sizes"], figures["steps"]) == (4, 2, [2], 6)
    assert (figures["temperature"], figures["top_k"]) == (1.5, 20)
    assert figures["success"] == 0.25 and figures["mixed_groups"] == 0.5  # game a won and lost, b only lost
    assert figures["format_errors"] == figures["inadmissible"] == pytest.approx(1 / 6)
    assert figures["anchor_group_share"] == 1.0  # every step's state recurs in its group
    # a's second state (desk) and b's first (room) saw two actions; a's first saw one
    assert figures["contrast_share"] == pytest.approx(4 / 6)
    assert figures["distinct_actions"] == pytest.approx(5 / 3)
    assert figures["episode_length"] == 1.5
    assert figures["unchanged_share"] == 0 and figures["contrast_share_raw_observation"] == figures["contrast_share"]


def test_the_first_step_anchors_on_the_task_too():
    other_task = dict(RECORDS[1], task="put a pen in desk")
    figures = bench.group_figures([RECORDS[0], other_task])
    assert figures["contrast_share"] == pytest.approx(2 / 4)  # the desk state is shared, the room is not


def test_a_step_after_an_action_that_changed_nothing_stands_in_the_state_it_was_taken_in():
    records = [episode("a", [step("take pen 1 from desk 1", "Nothing happens.", admissible=False),
                             step("go to desk 1", DESK)], won=False),
               episode("a", [step("go to desk 1", DESK)], won=True)]
    figures = bench.group_figures(records)
    assert figures["unchanged_share"] == pytest.approx(1 / 3)
    assert figures["contrast_share"] == 1.0  # all three steps in the room: two different actions
    assert figures["contrast_share_raw_observation"] == pytest.approx(2 / 3)  # "Nothing happens." alone
    assert figures["distinct_actions"] == 2.0


def test_main_reads_gzipped_traces_and_refuses_an_empty_file(tmp_path, capsys):
    traces = tmp_path / "t.jsonl.gz"
    with gzip.open(traces, "wt") as out:
        out.writelines(json.dumps(record) + "\n" for record in RECORDS)
    result = tmp_path / "r.json"
    bench.main([str(traces), "--out", str(result), "--command", "play ..."])
    written = json.loads(result.read_text())
    assert written["play_commands"] == ["play ..."] and written["settings"][0]["traces"] == str(traces)
    assert written["settings"][0]["contrast_share"] == pytest.approx(4 / 6)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(SystemExit):
        bench.main([str(empty), "--out", str(result)])
    assert "holds no episode" in capsys.readouterr().err
