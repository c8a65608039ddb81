"""The multi-turn environment agent loop, registered in verl as `env_agent`: it plays any registered environment.

`env.env_name` picks the environment (`molmo_agent.envs.registry`); its `EnvSpec` says how to make one, build a
step's prompt, read the model's action and name the step's GiGPO anchor. One session is one episode: it takes an
environment from the worker's pool, resets it with its dataset row's `extra_info` as the reset options (`seed`
from there too; the group's G sessions get the same row, so they start alike), then per step

    prompt (the spec's builder: task, last `env.history_length` (observation, action) pairs, actions; images when
    the environment shows them) -> chat template / processor -> server_manager.generate -> the spec's action
    parser -> environment step

until the environment ends the episode (terminated, or truncated after `env.max_steps` steps by `make_env`)
and returns one `AgentLoopOutput` per step. verl's V1 trainer (TransferQueue) takes a list of outputs from one
session and stores each as its own sample under the key `{uid}_{session}_{step}`; the legacy trainer cannot, so
`trainer.use_v1=True` is required. Each output's `extra_fields` carry the step fields of `steps.py`. The final
output's `reward_score` is the episode's environment return less `env.reward_invalid_penalty` per invalid action,
which verl places on the last response token of every step of the session (what GRPO/RLOO train on; set the knob
to GiGPO's `algorithm.gigpo.invalid_action_penalty_coef` to give them the same penalty); GiGPO reads the per-step
rewards from the extra fields and applies its own penalty.
"""
import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from molmo_agent.algorithms.gigpo import anchor_group_share
from molmo_agent.envs.base import (INFO_ADMISSIBLE, INFO_FAILED, INFO_TASK_TYPE, INFO_UNCHANGED, INFO_WON,
                                   Observation, observation_text)
from molmo_agent.envs.metrics import episode_metrics
from molmo_agent.envs.pool import INFO_ERROR, SessionPool
from molmo_agent.envs.projection import is_admissible
from molmo_agent.envs.registry import EnvSpec, get_env, make_env
from molmo_agent.integrations.verl import steps

logger = logging.getLogger(__name__)

AGENT_NAME = "env_agent"
# The `env.*` keys the loop itself reads, and serve_text_only (text_only.py's); every other key is a knob of the
# selected environment (`EnvSpec.knobs`).
LOOP_KEYS = frozenset({"env_name", "max_steps", "history_length", "pool_size", "workers_per_pool",
                       "resources_per_worker", "reward_invalid_penalty", "require_admissible", "serve_text_only"})
UNKNOWN_TASK_TYPE = "unknown"


def env_knobs(env_config: Any) -> dict[str, Any]:
    """The `env.*` keys that are the selected environment's knobs, as plain values (passed to `make_env`)."""
    return {key: env_config[key] for key in env_config if key not in LOOP_KEYS}


class EnvSlots:
    """This process's environment pool (one per agent-loop worker and environment), lent one slot per session."""

    _instances: dict[tuple, "EnvSlots"] = {}

    def __init__(self, env_name: str, max_steps: int, knobs: dict[str, Any], num_slots: int, num_workers: int,
                 num_cpus: float) -> None:
        factory = functools.partial(make_env, env_name, max_steps, **knobs)
        self.pool = SessionPool(num_slots, env_factory=factory, num_workers=num_workers,
                                ray_actor_options={"num_cpus": num_cpus})
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(num_slots):
            self._free.put_nowait(slot)

    @classmethod
    def of_process(cls, env_name: str, max_steps: int, knobs: dict[str, Any], num_slots: int, num_workers: int,
                   num_cpus: float) -> "EnvSlots":
        key = (env_name, max_steps, tuple(sorted(knobs.items())), num_slots, num_workers, num_cpus)
        if key not in cls._instances:
            logger.info("%s environment pool: %d slots on %d worker processes, %g CPU each", env_name,
                        num_slots, num_workers, num_cpus)
            cls._instances[key] = cls(env_name, max_steps, knobs, num_slots, num_workers, num_cpus)
        return cls._instances[key]

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[int]:
        """A free slot for one episode; waits while all are busy."""
        slot = await self._free.get()
        try:
            yield slot
        finally:
            self._free.put_nowait(slot)


@register(AGENT_NAME)
class EnvAgentLoop(AgentLoopBase):
    """Plays one episode per session and returns one output per agent step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        env_config = self.config.env
        self.spec = get_env(env_config.env_name)
        self.history_length: int = env_config.history_length
        self.prompt_length: int = self.rollout_config.prompt_length
        self.response_length: int = self.rollout_config.response_length
        self.invalid_penalty: float = float(env_config.reward_invalid_penalty)
        self.require_admissible: bool = bool(env_config.require_admissible)
        self.slots = EnvSlots.of_process(env_config.env_name, env_config.max_steps, env_knobs(env_config),
                                         *pool_shape(self.config, os.cpu_count() or 1))

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput]:
        options = dict(kwargs["extra_info"])  # the row's start: ALFWorld's game file, a level's seed, ...
        traj_uid = uuid4().hex
        # The whole session on one server, so each turn reuses the prefix cache of the one before.
        request_id = traj_uid
        sampling_params = {**sampling_params, "max_tokens": self.response_length}
        outputs: list[AgentLoopOutput] = []
        history: list[tuple[str, str]] = []  # (observation, action) of the steps taken
        anchors: list[str | bytes] = []
        episode_return, won = 0.0, False

        async with self.slots.lease() as slot:
            observation, info = await self.slots.pool.reset(slot, options, options.get("seed"))
            task_type = str(info.get(INFO_TASK_TYPE, UNKNOWN_TASK_TYPE))
            for step in itertools.count():
                if info.get(INFO_FAILED):
                    break
                seen = observation_text(observation)
                prompt = await self._prompt(seen, _images(observation), info, history)
                if prompt is None:
                    break
                prompt_ids, images = prompt
                t0 = time.perf_counter()
                generated = await self.server_manager.generate(
                    request_id=request_id, prompt_ids=prompt_ids, sampling_params=sampling_params,
                    image_data=images)
                t1 = time.perf_counter()
                response_ids = list(generated.token_ids[: self.response_length])
                projected = self.spec.parse_action(self.tokenizer.decode(response_ids, skip_special_tokens=True),
                                                   info)
                admissible = is_admissible(projected.action, info.get(INFO_ADMISSIBLE))
                # a step after an action that changed nothing stands in the state that action was taken in
                anchors.append(anchors[-1] if anchors and info.get(INFO_UNCHANGED)
                               else self.spec.anchor(observation, info, step))
                # An unreadable answer still costs a step: the environment answers it (ALFWorld: "Nothing happens.").
                observation, reward, terminated, truncated, info = await self.slots.pool.step(slot, projected.action)
                t2 = time.perf_counter()

                won = bool(info.get(INFO_WON, False))
                done = bool(terminated or truncated)
                episode_return += float(reward)
                # Every step sample of a batch must carry log-probs or none do (one TensorDict); [] stays [].
                logprobs = None if generated.log_probs is None else generated.log_probs[: self.response_length]
                outputs.append(AgentLoopOutput(
                    prompt_ids=prompt_ids,
                    response_ids=response_ids,
                    response_mask=[1] * len(response_ids),
                    response_logprobs=logprobs,
                    multi_modal_data={"images": images} if images else None,
                    num_turns=2,
                    metrics=AgentLoopMetrics(generate_sequences=t1 - t0, tool_calls=t2 - t1,
                                             num_preempted=generated.num_preempted or 0),
                    # The server's own fields first (the weight versions that generated the step, which verl's
                    # staleness metrics read), then the step fields. The two waits repeat `metrics` on purpose:
                    # verl's V1 trainer drops agent-loop metrics, and our trainer logs these as agent/*.
                    extra_fields={
                        **generated.extra_fields,
                        steps.TRAJ_UID: traj_uid,
                        steps.STEP_INDEX: step,
                        steps.ANCHOR_OBS: anchors[-1],
                        steps.ENV_REWARD: float(reward),
                        steps.IS_ACTION_VALID: projected.valid and (admissible or not self.require_admissible),
                        steps.IS_ACTION_ADMISSIBLE: admissible,
                        steps.DONE: done,
                        steps.WON: won,
                        steps.TASK_TYPE: task_type,
                        steps.GENERATE_SECONDS: t1 - t0,
                        steps.ENV_SECONDS: t2 - t1,
                        steps.IMAGES: len(images or ()),
                    },
                ))
                if done:
                    break
                history.append((seen, projected.action))

        if info.get(INFO_FAILED):
            # The environment broke (a crash or a hang), not the agent: the episode is not scored.
            logger.warning("dropping the episode of %s: %s", options, info.get(INFO_ERROR, "environment failed"))
            return []
        if outputs:
            final = outputs[-1]
            invalid_steps = sum(not output.extra_fields[steps.IS_ACTION_VALID] for output in outputs)
            final.reward_score = episode_return - self.invalid_penalty * invalid_steps
            final.extra_fields["reward_extra_info"] = episode_summary(outputs)
        return outputs

    async def _prompt(self, observation: str, images: list | None, info: dict[str, Any],
                      history: list[tuple[str, str]]) -> tuple[list[int], list | None] | None:
        """`step_prompt_ids` of one step, built off the event loop (tokenizing takes a while)."""
        return await self.loop.run_in_executor(None, functools.partial(
            step_prompt_ids, self.spec, self.continuous_token_builder.build_initial_tokens, observation, images,
            info, history, self.history_length, self.prompt_length))


def step_prompt_ids(spec: EnvSpec, build_tokens: Callable[..., list[int]], observation: str, images: list | None,
                    info: dict[str, Any], history: Sequence[tuple[str, str]], history_length: int,
                    prompt_length: int) -> tuple[list[int], list | None] | None:
    """Prompt token ids (and images) of one step within `prompt_length`, dropping the oldest history first.

    The text is the spec's prompt of the last `history_length` pairs of `history` (fewer until it fits), sent as
    one user message through `build_tokens` (verl's Continuous Token builder's `build_initial_tokens`: the chat
    template, through the processor when the model has one). A text prompt still too long without history keeps
    its last `prompt_length` tokens; an image prompt cannot be cut (its image tokens must stay whole), so the
    episode ends there (None) with a warning. The agent loop and the SFT rows (`sft_data`) both build prompts here.
    """
    for shown in range(min(history_length, len(history)), -1, -1):
        text = spec.prompt(observation, info, history, shown)
        prompt_ids = build_tokens([{"role": "user", "content": _content(text, images)}], images=images)
        if len(prompt_ids) <= prompt_length:
            return prompt_ids, images
    if images:
        logger.warning("an image prompt of %d tokens exceeds data.max_prompt_length=%d even without history: "
                       "the episode ends here", len(prompt_ids), prompt_length)
        return None
    logger.warning("a prompt of %d tokens exceeds data.max_prompt_length=%d even without history: keeping "
                   "its last tokens", len(prompt_ids), prompt_length)
    return prompt_ids[-prompt_length:], images


def pool_shape(config: Any, node_cpus: int) -> tuple[int, int, float]:
    """(slots, worker processes, Ray CPUs per worker) of one agent-loop worker's environment pool.

    Slots: `env.pool_size`, else the sessions this agent-loop worker runs at once (B·G ÷ agent workers).
    Workers: `env.workers_per_pool`, else the node's cores shared among the agent-loop workers on it — one
    process per session would ask Ray for more CPUs than a node has at verl's default batch, and an env worker
    Ray cannot place never starts. A worker serves its slots in turn; an env step is short next to a generation.
    """
    env, rollout = config.env, config.actor_rollout_ref.rollout
    agent_workers = rollout.agent.num_workers
    slots = env.get("pool_size") or max(1, -(-config.data.train_batch_size * rollout.n // agent_workers))
    agent_workers_per_node = -(-agent_workers // config.trainer.nnodes)
    workers = env.get("workers_per_pool") or max(1, node_cpus // agent_workers_per_node)
    return slots, min(slots, workers), float(env.resources_per_worker.num_cpus)


def _images(observation: Observation) -> list | None:
    return None if isinstance(observation, str) else list(observation["images"]) or None


def _content(text: str, images: list | None) -> str | list[dict[str, Any]]:
    if not images:
        return text
    return [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]


def episode_summary(outputs: list[AgentLoopOutput]) -> dict[str, float]:
    """The episode's numbers for verl's validation metrics, which averages each per data source (valid_seen,
    valid_unseen): `acc` is success (verl's core validation metric), then the environment's episode metrics and
    GiGPO's anchor-group share of the episode's steps (repeated states inside one episode)."""
    fields = [output.extra_fields for output in outputs]
    record = steps.episode_record(fields)
    return {
        "acc": float(record.won),
        **episode_metrics([record]),
        "anchor_group_share": anchor_group_share([0] * len(fields), [f[steps.ANCHOR_OBS] for f in fields]),
    }
