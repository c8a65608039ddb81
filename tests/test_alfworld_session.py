"""AlfworldSession on the committed fixture games: walkthroughs win, random play never crashes, the protocol's
info keys, the step limit `make_env` adds, broken games, and the terminal player."""
import json
import pathlib
import random
import re
import subprocess
import sys
from types import SimpleNamespace

import fast_downward
import gymnasium
import pytest

from alfworld_games import broken_copy, game_files, walkthrough
from molmo_agent.envs.alfworld.session import BANNER, TASK_PREFIX, AlfworldSession, split_intro
from molmo_agent.envs.base import INFO_ADMISSIBLE, INFO_TASK, INFO_TASK_TYPE, INFO_UNCHANGED, INFO_WON, AgentEnv
from molmo_agent.envs.registry import make_env

GAMES = game_files()
# ALFWorld's names as players see them: lower-case words and instance numbers, no PDDL mangling.
COMMAND = re.compile(r"^[a-z]+( [a-z]+)*( \d+)?( (from|in|on|to|with) [a-z]+( \d+)?)?$")


def test_session_speaks_the_protocol():
    assert isinstance(AlfworldSession(), AgentEnv) and isinstance(AlfworldSession(), gymnasium.Env)


@pytest.mark.parametrize("game", GAMES)
def test_walkthrough_wins(game):
    session = AlfworldSession()
    observation, info = session.reset(options={"game": game})
    # The room alone: ALFWorld's banner and task sentence are gone, the task is in the info.
    assert observation.startswith("You are in the middle of a room") and BANNER not in observation
    assert TASK_PREFIX not in observation and info[INFO_TASK].endswith(".")
    assert info[INFO_TASK_TYPE] != "unknown" and info[INFO_WON] is False
    actions = walkthrough(game)
    for i, action in enumerate(actions):
        assert action in info[INFO_ADMISSIBLE], (i, action)
        observation, reward, terminated, truncated, info = session.step(action)
        last = i == len(actions) - 1
        assert (reward, terminated, info[INFO_WON]) == ((10.0, True, True) if last else (0.0, False, False))
        assert not truncated and isinstance(observation, str)
    with pytest.raises(ValueError, match="episode is over"):
        session.step("look")


@pytest.mark.parametrize("game", GAMES)
def test_random_admissible_rollouts_never_crash(game):
    session = make_env("alfworld", max_steps=25)
    rng = random.Random(0)
    _, info = session.reset(options={"game": game})
    done = False
    while not done:
        admissible = info[INFO_ADMISSIBLE]
        assert admissible and "help" not in admissible
        assert all(COMMAND.match(c) for c in admissible), admissible
        # Mostly admissible commands, sometimes junk the game must shrug off.
        action = rng.choice(admissible) if rng.random() < 0.9 else rng.choice(["", "fly away", "go to moon 9"])
        observation, reward, terminated, truncated, info = session.step(action)
        assert isinstance(observation, str) and reward in (0.0, 10.0) and reward == 10.0 * terminated
        done = terminated or truncated


# Each game's states under the plain engine (no caches), all games in one fresh process.
PLAIN_ENGINE_ROLLOUTS = """
import json, sys, textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
from textworld.envs.pddl import PddlEnv
rollouts = []
for game, actions in json.loads(sys.stdin.read()):
    env = AlfredDemangler(PddlEnv(textworld.EnvInfos(won=True, admissible_commands=True)))
    env.load(game)
    states = [env.reset()] + [env.step(action)[0] for action in actions]
    rollouts.append([[s.feedback.strip(), [c for c in s["admissible_commands"] if c != "help"]] for s in states])
print(json.dumps(rollouts))
"""


def _play(session: AlfworldSession, game: str, actions: list[str]) -> list:
    observation, info = session.reset(options={"game": game})
    states = [[observation, info[INFO_ADMISSIBLE]]]
    for action in actions:
        observation, _, _, _, info = session.step(action)
        states.append([observation, info[INFO_ADMISSIBLE]])
    return states


def test_memoized_engine_gives_the_plain_engines_text():
    """The grammar and translation caches change no text, on a game of each task type: two sessions share a game's
    translation (the second reads it from the cache) and each, played after the other, shows what the plain
    engine shows for the same random actions."""
    rng = random.Random(1)
    games = GAMES[:6]  # the fixture games cycle through the six task types
    assert len({game.split("/")[-3].split("-")[0] for game in games}) == 6
    first = {game: AlfworldSession() for game in games}  # the first installs both caches in this process
    plays = []
    for game, session in first.items():
        _, info = session.reset(options={"game": game})
        actions = []
        for _ in range(25):
            actions.append(rng.choice(info[INFO_ADMISSIBLE]))
            _, _, terminated, _, info = session.step(actions[-1])
            if terminated:
                break
        plays.append((game, actions))
    plain = subprocess.run([sys.executable, "-c", PLAIN_ENGINE_ROLLOUTS], input=json.dumps(plays),
                           capture_output=True, text=True, timeout=300, check=True)
    for (game, actions), plain_states in zip(plays, json.loads(plain.stdout), strict=True):
        # The session shows the first feedback without ALFWorld's banner and task sentence.
        plain_states[0][0] = split_intro(plain_states[0][0])[0]
        assert _play(AlfworldSession(), game, actions) == plain_states, game
        assert _play(first[game], game, actions) == plain_states, game  # the shared translation is unchanged


def test_a_game_is_translated_once_per_process():
    """Fast Downward's translation (a plain task and an optimized one) runs for a game's first load only: its
    reset, and every later load and reset of it in any session of the process, read the cache."""
    AlfworldSession()  # installs the cache
    translate = fast_downward.pddl2sas
    game = GAMES[0]
    before = translate.cache_info()
    AlfworldSession().reset(options={"game": game})
    AlfworldSession().reset(options={"game": game})
    after = translate.cache_info()
    # load + reset, twice, each two translations: at most the first load's two are computed
    assert after.hits + after.misses - before.hits - before.misses == 8
    assert after.misses - before.misses <= 2


def test_junk_action_changes_nothing():
    session = AlfworldSession()
    _, before = session.reset(options={"game": GAMES[0]})
    observation, reward, terminated, _, after = session.step("dance with the fridge")
    assert observation == "Nothing happens." and reward == 0.0 and not terminated
    assert after[INFO_ADMISSIBLE] == before[INFO_ADMISSIBLE]
    assert after[INFO_UNCHANGED] is True and INFO_UNCHANGED not in before  # a reset is a state, not feedback
    _, _, _, _, moved = session.step(before[INFO_ADMISSIBLE][0])
    assert moved[INFO_UNCHANGED] is False


def test_the_registry_truncates_and_passes_knobs():
    """The session never truncates; `make_env` cuts episodes at max_steps, the one place that does."""
    session = make_env("alfworld", max_steps=2, win_reward=1.0)
    session.reset(options={"game": GAMES[0]})
    assert session.step("look")[3] is False
    assert session.step("look")[2:4] == (False, True)
    session.reset(options={"game": GAMES[0]})
    *_, last = [session.step(a) for a in walkthrough(GAMES[0])[:2]]
    assert last[1] == 0.0
    session = make_env("alfworld", max_steps=len(walkthrough(GAMES[0])), win_reward=1.0)
    session.reset(options={"game": GAMES[0]})
    *_, last = [session.step(a) for a in walkthrough(GAMES[0])]
    assert last[1:4] == (1.0, True, True)  # won at the limit: terminated (and truncated) with the reward
    with pytest.raises(ValueError, match="env.win_rewards is not a knob of the environment 'alfworld'"):
        make_env("alfworld", max_steps=2, win_rewards=1.0)
    with pytest.raises(ValueError, match="env.max_steps"):
        make_env("alfworld", max_steps=0)


def test_reset_restarts_the_game_and_accepts_a_game_object():
    session = AlfworldSession()
    first, _ = session.reset(options={"game": GAMES[0]})
    session.step(walkthrough(GAMES[0])[0])
    game = SimpleNamespace(path=GAMES[0], task_type="my_type")
    again, info = session.reset(options={"game": game})
    assert again == first and info[INFO_TASK_TYPE] == "my_type"


def test_bad_inputs_are_value_errors(tmp_path):
    session = AlfworldSession()
    with pytest.raises(ValueError, match="reset first"):
        session.step("look")
    with pytest.raises(ValueError, match="options"):
        session.reset()
    with pytest.raises(ValueError, match="not found"):
        session.reset(options={"game": str(tmp_path / "missing.tw-pddl")})


def test_play_replays_a_piped_walkthrough():
    game = GAMES[0]
    commands = "\n".join(walkthrough(game)) + "\n"
    result = subprocess.run(
        [sys.executable, "-m", "molmo_agent.envs.alfworld.play", game],
        input=commands, capture_output=True, text=True, timeout=120, check=True,
    )
    assert "Admissible commands: " in result.stdout and result.stdout.rstrip().endswith("You won!")


def test_play_quits_on_quit():
    result = subprocess.run(
        [sys.executable, "-m", "molmo_agent.envs.alfworld.play", game_files()[0]],
        input="look\nquit\n", capture_output=True, text=True, timeout=120, check=True,
    )
    assert "> quit" in result.stdout and "You won!" not in result.stdout


def test_a_failed_load_leaves_no_stale_game(tmp_path):
    """The engine takes a game's problem before its grammar fails to parse: the game loaded before must be
    loaded afresh on its next reset, or its task text would be shown while the broken game's problem is played."""
    good, other = GAMES[0], GAMES[-1]
    broken = broken_copy(other, tmp_path, "grammar")
    session = AlfworldSession()
    _, first = session.reset(options={"game": good})
    with pytest.raises(Exception):  # noqa: B017 - which error is the next test's business
        session.reset(options={"game": broken})
    _, info = session.reset(options={"game": good})
    assert info[INFO_TASK] == first[INFO_TASK] and info[INFO_ADMISSIBLE] == first[INFO_ADMISSIBLE]
    for action in walkthrough(good):
        _, reward, terminated, _, info = session.step(action)
    assert terminated and info[INFO_WON] and reward == 10.0


@pytest.mark.parametrize("kind", ["duplicate_object", "grammar", "bad_json", "no_problem", "no_grammar"])
def test_a_broken_game_is_a_value_error_naming_its_file(tmp_path, kind):
    """Fast Downward reports a duplicated object with SystemExit: called directly, the session raises a
    ValueError naming the file instead of ending the caller's process; the session still plays good games."""
    broken = broken_copy(GAMES[1], tmp_path, kind)
    session = AlfworldSession()
    with pytest.raises(ValueError, match=re.escape(broken)) as error:
        session.reset(options={"game": broken})
    assert "pddl_problem" in str(error.value)  # says what a game file holds
    with pytest.raises(ValueError, match="episode is over"):
        session.step("look")
    _, info = session.reset(options={"game": GAMES[1]})
    assert info[INFO_ADMISSIBLE]


def test_an_unreadable_trial_file_is_named(tmp_path):
    broken = broken_copy(GAMES[0], tmp_path, "no_grammar")
    traj = pathlib.Path(broken).parent / "traj_data.json"
    traj.write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(str(traj))):
        AlfworldSession().reset(options={"game": broken})
