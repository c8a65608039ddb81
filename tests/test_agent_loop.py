"""The agent loop on real ALFWorld games, answered by a real tiny model through an in-process generation server.

The server stands in for verl's `server_manager`: its `generate` runs a tiny random Qwen3 (transformers, CPU).
The loop's step samples go through verl's own conversion (`AgentLoopOutput.as_dict`, TransferQueue's
`list_of_dict_to_tensordict`) into GiGPO, as in training.
"""
import asyncio
import pathlib

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM, AutoTokenizer

from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.utils.tensordict_utils import list_of_dict_to_tensordict
from verl.workers.rollout.replica import TokenOutput

from molmo_agent.envs.base import INFO_ADMISSIBLE, INFO_TASK
from molmo_agent.integrations.verl import steps
from molmo_agent.integrations.verl.advantage import write_gigpo_advantages
from molmo_agent.integrations.verl.agent_loop import EnvAgentLoop, pool_shape

from alfworld_games import game_files

CONFIG_DIR = str(pathlib.Path(__file__).parents[1] / "molmo_agent" / "config")
MAX_STEPS, RESPONSE_LENGTH, PENALTY = 3, 24, 0.1


def compose_config(model_dir: pathlib.Path, *overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("alfworld_gigpo", overrides=[
            f"actor_rollout_ref.model.path={model_dir}", "data.train_files=unused", "data.val_files=unused",
            f"data.max_response_length={RESPONSE_LENGTH}", "data.max_prompt_length=1024", "data.train_batch_size=1",
            "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.agent.num_workers=1",
            f"env.max_steps={MAX_STEPS}", "env.history_length=2",
            f"algorithm.gigpo.invalid_action_penalty_coef={PENALTY}", *overrides])


SERVER_FIELDS = {"global_steps": 3, "min_global_steps": 3, "max_global_steps": 3}


class TinyModelServer:
    """`server_manager.generate` on a real HF model: samples up to `max_tokens` new tokens after `prompt_ids`."""

    def __init__(self, model_dir: pathlib.Path):
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.calls: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs) -> TokenOutput:
        self.calls.append({"request_id": request_id, "prompt_ids": list(prompt_ids), **sampling_params})
        with torch.no_grad():
            out = self.model.generate(torch.tensor([prompt_ids]), max_new_tokens=sampling_params["max_tokens"],
                                      do_sample=True, temperature=sampling_params["temperature"],
                                      output_scores=True, return_dict_in_generate=True)
        new = out.sequences[0, len(prompt_ids):]
        logprobs = [torch.log_softmax(score[0], -1)[token].item() for score, token in zip(out.scores, new)]
        # What verl's server manager adds: the weight versions that generated the answer.
        return TokenOutput(token_ids=new.tolist(), log_probs=logprobs, extra_fields=dict(SERVER_FIELDS))


class ScriptedServer:
    """Answers every step with the same text, tokenized (a stand-in for a model that learned the format)."""

    def __init__(self, tokenizer, text: str):
        self.token_ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, **kwargs) -> TokenOutput:
        return TokenOutput(token_ids=self.token_ids[: sampling_params["max_tokens"]])


def make_loop(config, server, tokenizer) -> EnvAgentLoop:
    """As verl's AgentLoopWorker builds an agent loop (hydra.utils.instantiate with these arguments)."""
    return EnvAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tokenizer,
                        processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data),
                        hf_model_type="qwen3")


def play(config, servers, tokenizer, game: str) -> list[list]:
    """One group: one session per server, all on `game`, run concurrently as verl runs them."""
    sampling_params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}
    row = {"uid": "group-0", "extra_info": {"game": game, "task_type": "from-the-row", "index": 0}}

    async def group():
        loops = [make_loop(config, server, tokenizer) for server in servers]
        return await asyncio.gather(*(loop.run(sampling_params, **row, session_id=i) for i, loop in enumerate(loops)))

    return asyncio.run(group())


def stored(sessions: list[list]) -> tuple[list[str], list[dict], torch.Tensor]:
    """What the trainer reads back from TransferQueue for the group's step samples."""
    rows = [{**output.as_dict(), "uid": "group-0"} for outputs in sessions for output in outputs]
    table = list_of_dict_to_tensordict(rows)
    mask = torch.nn.utils.rnn.pad_sequence([row["response_mask"] for row in rows], batch_first=True)
    return list(table["uid"]), list(table["extra_fields"]), mask


def test_tiny_model_sessions_give_step_samples_and_gigpo_advantages(model_dir):
    config = compose_config(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    servers = [TinyModelServer(model_dir), TinyModelServer(model_dir)]
    game = game_files()[0]
    sessions = play(config, servers, tokenizer, game)

    for outputs, server in zip(sessions, servers, strict=True):
        # A random model never answers in the format: every step is invalid, none is fatal, none wins.
        assert len(outputs) == MAX_STEPS
        fields = [o.extra_fields for o in outputs]
        assert [f[steps.STEP_INDEX] for f in fields] == list(range(MAX_STEPS))
        assert len({f[steps.TRAJ_UID] for f in fields}) == 1
        assert [f[steps.DONE] for f in fields] == [False] * (MAX_STEPS - 1) + [True]
        assert not any(f[steps.IS_ACTION_VALID] or f[steps.WON] for f in fields)
        assert all(f[steps.ENV_REWARD] == 0.0 for f in fields)
        assert all(f[key] == value for f in fields for key, value in SERVER_FIELDS.items())  # verl's metrics read them
        assert all(f[steps.GENERATE_SECONDS] > 0 and f[steps.ENV_SECONDS] > 0 for f in fields)
        assert fields[0][steps.TASK_TYPE] != "from-the-row"  # the game's own type, from the environment
        for output, call in zip(outputs, server.calls, strict=True):
            assert output.prompt_ids == call["prompt_ids"] and call["max_tokens"] == RESPONSE_LENGTH
            assert 0 < len(output.response_ids) <= RESPONSE_LENGTH
            assert output.response_mask == [1] * len(output.response_ids)
            assert len(output.response_logprobs) == len(output.response_ids)
        # One request id per session (its turns share a server and its prefix cache), distinct across sessions.
        assert len({call["request_id"] for call in server.calls}) == 1
        # The step's prompt shows the task and the observation; later steps show the earlier actions.
        first_prompt = tokenizer.decode(outputs[0].prompt_ids)
        assert fields[0][steps.ANCHOR_OBS].split("\n")[0] in first_prompt
        assert "Your task is to:" in first_prompt and "Available actions" in first_prompt
        assert "Step 1: you saw" in tokenizer.decode(outputs[2].prompt_ids)
        # The episode's return and summary ride on the final step, for verl's reward placement and validation.
        assert outputs[-1].reward_score == 0.0
        summary = outputs[-1].extra_fields["reward_extra_info"]
        assert summary["acc"] == 0.0 and summary["invalid_action_rate"] == 1.0
        assert summary["episode_length"] == MAX_STEPS
    assert servers[0].calls[0]["request_id"] != servers[1].calls[0]["request_id"]
    # Both sessions start in the same room of the same game, and no unreadable answer moves them ("Nothing
    # happens." is feedback, not a state): every step of both stands in the first step's anchor state.
    first_anchor = sessions[0][0].extra_fields[steps.ANCHOR_OBS]
    assert "Your task is to:" in first_anchor
    assert {o.extra_fields[steps.ANCHOR_OBS] for session in sessions for o in session} == {first_anchor}

    uids, extra_fields, mask = stored(sessions)
    data = write_gigpo_advantages(steps.gigpo_batch(uids, extra_fields, mask), config.algorithm)
    advantages = data.batch["advantages"]
    assert advantages.shape == mask.shape and torch.isfinite(advantages).all()
    assert torch.all(advantages[mask == 0] == 0)
    # Both sessions are penalized alike, so neither episode is preferred: what is left are step advantages, all
    # in the one anchor group, mean-normalized to sum 0; steps at the same index of the two sessions match.
    per_step = advantages[:, 0]
    assert per_step.sum().abs() < 1e-5 and per_step.abs().max() > 0
    assert torch.allclose(per_step[:MAX_STEPS], per_step[MAX_STEPS:])
    metrics = steps.episode_metrics(uids, extra_fields, expected_episodes=2)
    assert metrics["env/anchor_group_share"] == 1.0 and metrics["env/images_per_step"] == 0.0


def test_malformed_answers_are_penalized_against_well_formed_ones(model_dir):
    config = compose_config(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    servers = [ScriptedServer(tokenizer, "<think>I look around.</think><action>look</action>"),
               ScriptedServer(tokenizer, "<action>look</action><action>inventory"),  # malformed
               ScriptedServer(tokenizer, "")]  # nothing at all
    sessions = play(config, servers, tokenizer, game_files()[0])
    assert [len(outputs) for outputs in sessions] == [MAX_STEPS] * 3
    assert [o.extra_fields[steps.IS_ACTION_VALID] for o in sessions[0]] == [True] * MAX_STEPS
    assert not any(o.extra_fields[steps.IS_ACTION_VALID] for o in sessions[1] + sessions[2])
    # a malformed answer sends the game no action it lists: inadmissible too
    assert [o.extra_fields[steps.IS_ACTION_ADMISSIBLE] for o in sessions[0]] == [True] * MAX_STEPS
    assert not any(o.extra_fields[steps.IS_ACTION_ADMISSIBLE] for o in sessions[1] + sessions[2])

    uids, extra_fields, mask = stored(sessions)
    advantages = write_gigpo_advantages(steps.gigpo_batch(uids, extra_fields, mask), config.algorithm)
    first_token = advantages.batch["advantages"][:, 0].reshape(3, MAX_STEPS)
    assert torch.all(first_token[0] > 0) and torch.all(first_token[1:] < 0)


def test_a_well_formed_action_the_game_does_not_list_is_valid_but_inadmissible(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    answers = ["<think>I look around.</think><action>look</action>",
               "<think>Hm.</think><action>eat moon</action>"]  # within the tiny tokenizer's 24 tokens
    sessions = play(compose_config(model_dir), [ScriptedServer(tokenizer, text) for text in answers], tokenizer,
                    game_files()[0])
    fields = [[output.extra_fields for output in outputs] for outputs in sessions]
    assert [[f[steps.IS_ACTION_VALID] for f in session] for session in fields] == [[True] * MAX_STEPS] * 2
    assert [[f[steps.IS_ACTION_ADMISSIBLE] for f in session] for session in fields] == [[True] * MAX_STEPS,
                                                                                        [False] * MAX_STEPS]
    summaries = [outputs[-1].extra_fields["reward_extra_info"] for outputs in sessions]
    assert [(s["invalid_action_rate"], s["inadmissible_action_rate"]) for s in summaries] == [(0, 0), (0, 1)]


def test_require_admissible_makes_an_unlisted_action_invalid_and_penalized(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    answers = ["<think>I look around.</think><action>look</action>", "<think>Hm.</think><action>eat moon</action>"]
    config = compose_config(model_dir, "env.require_admissible=True", "algorithm.adv_estimator=grpo",
                            f"env.reward_invalid_penalty={PENALTY}")
    sessions = play(config, [ScriptedServer(tokenizer, text) for text in answers], tokenizer, game_files()[0])
    assert [[o.extra_fields[steps.IS_ACTION_VALID] for o in outputs] for outputs in sessions] == [
        [True] * MAX_STEPS, [False] * MAX_STEPS]
    assert [outputs[-1].reward_score for outputs in sessions] == pytest.approx([0.0, -PENALTY * MAX_STEPS])
    summary = sessions[1][-1].extra_fields["reward_extra_info"]
    assert summary["invalid_action_rate"] == summary["inadmissible_action_rate"] == 1.0


def test_reward_invalid_penalty_charges_grpo_episode_returns_per_invalid_action(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    answers = ["<think>I look around.</think><action>look</action>", "<action>look</action><action>inventory"]
    returns = {}
    for penalty in (0.0, PENALTY):
        config = compose_config(model_dir, "algorithm.adv_estimator=grpo", f"env.reward_invalid_penalty={penalty}")
        sessions = play(config, [ScriptedServer(tokenizer, text) for text in answers], tokenizer, game_files()[0])
        returns[penalty] = [outputs[-1].reward_score for outputs in sessions]
    # "look" is valid and earns nothing; the malformed answer is invalid at each of its MAX_STEPS steps.
    assert returns[0.0] == [0.0, 0.0]
    assert returns[PENALTY] == pytest.approx([0.0, -PENALTY * MAX_STEPS])


def test_prompt_drops_oldest_history_first_and_never_exceeds_the_limit(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    history = [("you see a long corridor " * 20, "go to drawer 1"), ("the drawer 1 is closed", "open drawer 1")]

    async def prompt_text(prompt_length: int) -> tuple[str, int]:
        loop = make_loop(compose_config(model_dir, f"data.max_prompt_length={prompt_length}"), None, tokenizer)
        info = {INFO_TASK: "put an apple in the fridge.", INFO_ADMISSIBLE: ["look", "go to fridge 1"]}
        prompt_ids, _ = await loop._prompt("you see a fridge 1.", None, info, history)
        return tokenizer.decode(prompt_ids), len(prompt_ids)

    full, full_length = asyncio.run(prompt_text(4096))
    assert "long corridor" in full and "open drawer 1" in full
    # Room for the newest step only: the oldest pair (the long corridor) goes first.
    newest_only, length = asyncio.run(prompt_text(full_length - 1))
    assert "long corridor" not in newest_only and "open drawer 1" in newest_only and length < full_length
    # Room for nothing but the current step, cut to the limit: the prompt's end (the instructions) survives.
    cut, length = asyncio.run(prompt_text(40))
    assert length == 40 and cut.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("overrides, node_cpus, shape", [
    # verl's defaults (8 agent-loop workers) at B=16, G=8 on a 16-core node: 16 sessions per agent-loop worker
    # share 2 env processes, so the 8 pools ask Ray for 1.6 CPUs, not 12.8 (which starved a GPU run).
    ([], 16, (16, 2, 0.1)),
    (["trainer.nnodes=2"], 16, (16, 4, 0.1)),
    (["actor_rollout_ref.rollout.agent.num_workers=1"], 16, (128, 16, 0.1)),
    (["data.train_batch_size=1", "actor_rollout_ref.rollout.n=2"], 64, (1, 1, 0.1)),
    (["env.pool_size=6", "env.workers_per_pool=3", "env.resources_per_worker.num_cpus=0.5"], 2, (6, 3, 0.5)),
    (["env.pool_size=2", "env.workers_per_pool=5"], 16, (2, 2, 0.1)),
])
def test_env_pool_shape_fits_the_node(overrides, node_cpus, shape):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        config = compose("alfworld_gigpo", overrides=["data.train_batch_size=16", "actor_rollout_ref.rollout.n=8",
                                                      *overrides])
    assert pool_shape(config, node_cpus) == shape
