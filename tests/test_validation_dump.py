"""`validation_dump` reduces verl's validation dumps to one line per episode: its opening prompt and outcome."""
import gzip
import json

import pytest

from molmo_agent.integrations.verl.validation_dump import episodes, main, read_episodes


def _dump(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _row(uid, prompt, acc):
    # verl writes each step sample with its episode's final reward_extra_info fields
    return {"input": prompt, "output": "<action>look</action>", "gts": None, "score": acc, "step": 0, "acc": acc,
            "uid": uid}


def test_one_line_per_episode_with_its_opening_prompt_and_outcome(tmp_path):
    # verl sorts the dump by uid: an episode's later steps can sit anywhere around its first
    _dump(tmp_path / "0.jsonl", [_row("u1_0_1", "later step", 1.0), _row("u1_0_0", "task: heat an egg", 1.0),
                                 _row("u2_0_0", "task: cool a mug", 0.0), _row("u1_0_2", "last step", 1.0)])
    _dump(tmp_path / "10.jsonl", [_row("u9_0_0", "task: cool a mug", 1.0)])
    _dump(tmp_path / "2.jsonl", [_row("u5_0_0", "task: heat an egg", 0.0)])
    found = episodes(tmp_path)
    assert [(e["step"], e["opening_prompt"], e["acc"]) for e in found] == [
        (0, "task: cool a mug", 0.0), (0, "task: heat an egg", 1.0), (2, "task: heat an egg", 0.0),
        (10, "task: cool a mug", 1.0)]
    assert found[1]["episode"] == "u1_0"

    main([str(tmp_path), "--out", str(tmp_path / "episodes.jsonl.gz")])
    with gzip.open(tmp_path / "episodes.jsonl.gz", "rt") as lines:
        assert [json.loads(line) for line in lines] == found
    assert read_episodes(tmp_path / "episodes.jsonl.gz") == found


@pytest.mark.parametrize("rows, message", [
    ([{"uid": "u1_0_0", "input": "x"}], "no ['acc']"),
    ([_row("u1-0-0", "x", 1.0)], "is not <uid>_<session>_<index>"),
    ([_row("u1_0_1", "x", 1.0)], "episodes without their first step: ['u1_0']"),
])
def test_a_dump_it_cannot_read_is_named(tmp_path, rows, message):
    _dump(tmp_path / "5.jsonl", rows)
    with pytest.raises(ValueError, match=str(tmp_path / "5.jsonl").replace(".", r"\.")) as error:
        episodes(tmp_path)
    assert message in str(error.value)


def test_a_dump_cut_off_by_a_stopped_run_is_left_out_with_a_warning(tmp_path):
    _dump(tmp_path / "0.jsonl", [_row("u1_0_0", "task: heat an egg", 1.0)])
    (tmp_path / "5.jsonl").write_text(json.dumps(_row("u2_0_0", "task: cool a mug", 0.0)) + '\n{"input": "task: he')
    with pytest.warns(UserWarning, match="5.jsonl: its last line is cut off"):
        found = episodes(tmp_path)
    assert [(e["step"], e["opening_prompt"]) for e in found] == [(0, "task: heat an egg")]
    # a broken line anywhere else is an error
    (tmp_path / "5.jsonl").write_text('{"input": "task: he\n' + json.dumps(_row("u2_0_0", "x", 0.0)) + "\n")
    with pytest.raises(ValueError, match="5.jsonl: not JSON lines"):
        episodes(tmp_path)


def test_reads_what_verls_validation_writes(tmp_path):
    """The dump as verl 0.9.1's trainer writes it (`_write_generations`, the arguments `_validate` passes: each step
    sample with its episode's final reward_extra_info fields and the sample keys as `uid`)."""
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    keys = ["g1_0_0", "g1_0_1", "g2_0_0"]
    PPOTrainer._write_generations(
        inputs=["task: heat an egg", "later step", "task: cool a mug"], outputs=["<action>look</action>"] * 3,
        gts=[None] * 3, scores=[10.0, 10.0, 0.0], reward_extra_infos_dict={"acc": [1.0, 1.0, 0.0], "uid": keys},
        dump_path=str(tmp_path), global_steps=4)
    assert [(e["step"], e["episode"], e["opening_prompt"], e["acc"]) for e in episodes(tmp_path)] == [
        (4, "g2_0", "task: cool a mug", 0.0), (4, "g1_0", "task: heat an egg", 1.0)]
