"""The multi-turn environment agent loop, registered in verl as `alfworld_agent`.

One session is one episode: it takes an environment from the worker's pool, resets it to its dataset row's game
(the group's G sessions get the same row, so they play the same game), then per step

    prompt (task, last `env.history_length` (observation, action) pairs, admissible actions; images when the
    environment shows them) -> chat template / processor -> server_manager.generate -> action projection ->
    environment step

and returns one `AgentLoopOutput` per step. verl's V1 trainer (TransferQueue) takes a list of outputs from one
session and stores each as its own sample under the key `{uid}_{session}_{step}`; the legacy trainer cannot, so
`trainer.use_v1=True` is required. Each output's `extra_fields` carry the step fields of `steps.py`. The final
output's `reward_score` is the episode's environment return, which verl places on the last response token of
every step of the session (what GRPO/RLOO train on); GiGPO reads the per-step rewards from the extra fields.
"""
import asyncio
import contextlib
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput, register

from molmo_agent.envs.alfworld.metrics import EpisodeRecord, episode_metrics
from molmo_agent.envs.alfworld.pool import INFO_ERROR, SessionPool
from molmo_agent.envs.alfworld.projection import project_action
from molmo_agent.envs.alfworld.prompts import anchor_observation, build_prompt
from molmo_agent.envs.alfworld.session import INFO_OBSERVATION, AlfworldSession
from molmo_agent.envs.base import (
    INFO_ADMISSIBLE,
    INFO_FAILED,
    INFO_TASK,
    INFO_TASK_TYPE,
    INFO_WON,
    Observation,
    observation_text,
)
from molmo_agent.integrations.verl import steps

logger = logging.getLogger(__name__)

AGENT_NAME = "alfworld_agent"


class EnvSlots:
    """This process's environment pool (one per agent-loop worker), lent one slot per session."""

    _instances: dict[tuple[int, int, float], "EnvSlots"] = {}

    def __init__(self, num_slots: int, num_workers: int, num_cpus: float) -> None:
        # The loop counts steps itself (env.max_steps), so the session never truncates on its own.
        self.pool = SessionPool(num_slots, env_factory=functools.partial(AlfworldSession, max_episode_steps=None),
                                num_workers=num_workers, ray_actor_options={"num_cpus": num_cpus})
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for slot in range(num_slots):
            self._free.put_nowait(slot)

    @classmethod
    def of_process(cls, num_slots: int, num_workers: int, num_cpus: float) -> "EnvSlots":
        key = (num_slots, num_workers, num_cpus)
        if key not in cls._instances:
            logger.info("environment pool: %d slots on %d worker processes, %g CPU each", *key)
            cls._instances[key] = cls(*key)
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
        self.max_steps: int = env_config.max_steps
        self.history_length: int = env_config.history_length
        self.prompt_length: int = self.rollout_config.prompt_length
        self.response_length: int = self.rollout_config.response_length
        self.slots = EnvSlots.of_process(*pool_shape(self.config, os.cpu_count() or 1))

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> list[AgentLoopOutput]:
        game: str = kwargs["extra_info"]["game"]
        traj_uid = uuid4().hex
        # The whole session on one server, so each turn reuses the prefix cache of the one before.
        request_id = traj_uid
        sampling_params = {**sampling_params, "max_tokens": self.response_length}
        outputs: list[AgentLoopOutput] = []
        history: list[tuple[str, str]] = []  # (observation, action) of the steps taken
        anchors: list[str] = []
        episode_return, won = 0.0, False

        async with self.slots.lease() as slot:
            observation, info = await self.slots.pool.reset(slot, game)
            task, task_type = info[INFO_TASK], str(info[INFO_TASK_TYPE])
            for step in range(self.max_steps):
                if info.get(INFO_FAILED):
                    break
                # The observation without ALFWorld's banner and task sentence, as prompts and anchors take it.
                seen = info.get(INFO_OBSERVATION, observation_text(observation))
                prompt = await self._prompt(task, seen, _images(observation), history, info[INFO_ADMISSIBLE])
                if prompt is None:
                    break
                prompt_ids, images = prompt
                t0 = time.perf_counter()
                generated = await self.server_manager.generate(
                    request_id=request_id, prompt_ids=prompt_ids, sampling_params=sampling_params,
                    image_data=images)
                t1 = time.perf_counter()
                response_ids = list(generated.token_ids[: self.response_length])
                projected = project_action(self.tokenizer.decode(response_ids, skip_special_tokens=True),
                                           info[INFO_ADMISSIBLE])
                # An unreadable answer still costs a step: the environment answers it ("Nothing happens.").
                observation, reward, terminated, truncated, info = await self.slots.pool.step(slot, projected.action)
                t2 = time.perf_counter()

                won = bool(info.get(INFO_WON, False))
                done = bool(terminated or truncated or won) or step + 1 == self.max_steps
                anchors.append(anchor_observation(seen, task, step))
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
                        steps.IS_ACTION_VALID: projected.valid,
                        steps.DONE: done,
                        steps.WON: won,
                        steps.TASK_TYPE: task_type,
                        steps.GENERATE_SECONDS: t1 - t0,
                        steps.ENV_SECONDS: t2 - t1,
                    },
                ))
                if done:
                    break
                history.append((seen, projected.action))

        if info.get(INFO_FAILED):
            # The environment broke (a crash or a hang), not the agent: the episode is not scored.
            logger.warning("dropping the episode of %s: %s", game, info.get(INFO_ERROR, "environment failed"))
            return []
        if outputs:
            final = outputs[-1]
            final.reward_score = episode_return
            final.extra_fields["reward_extra_info"] = episode_summary(outputs, anchors, won, task_type)
        return outputs

    async def _prompt(self, task: str, observation: str, images: list | None, history: list[tuple[str, str]],
                      admissible: list[str]) -> tuple[list[int], list | None] | None:
        """Prompt token ids (and images) of one step within `prompt_length`, dropping the oldest history first.

        A text prompt still too long without history keeps its last `prompt_length` tokens; an image prompt
        cannot be cut (its image tokens must stay whole), so the episode ends there (None) with a warning.
        """
        for shown in range(min(self.history_length, len(history)), -1, -1):
            text = build_prompt(task, observation, admissible, history, history_length=shown)
            messages = [{"role": "user", "content": _content(text, images)}]
            prompt_ids = await self.loop.run_in_executor(
                None, lambda m=messages: self.continuous_token_builder.build_initial_tokens(m, images=images))
            if len(prompt_ids) <= self.prompt_length:
                return prompt_ids, images
        if images:
            logger.warning("an image prompt of %d tokens exceeds data.max_prompt_length=%d even without history: "
                           "the episode ends here", len(prompt_ids), self.prompt_length)
            return None
        logger.warning("a prompt of %d tokens exceeds data.max_prompt_length=%d even without history: keeping "
                       "its last tokens", len(prompt_ids), self.prompt_length)
        return prompt_ids[-self.prompt_length:], images


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


def episode_summary(outputs: list[AgentLoopOutput], anchors: list[str], won: bool, task_type: str) -> dict[str, float]:
    """The episode's numbers for verl's validation metrics, which averages each per data source (valid_seen,
    valid_unseen): `acc` is success (verl's core validation metric), `anchor_group_share` is GiGPO's share of
    steps in anchor groups of more than one for a group of one episode."""
    invalid = sum(not o.extra_fields[steps.IS_ACTION_VALID] for o in outputs)
    record = EpisodeRecord(task_type=task_type, won=won, length=len(outputs), invalid_actions=invalid)
    counts = Counter(anchors)
    return {
        "acc": float(won),
        **episode_metrics([record]),
        "anchor_group_share": sum(counts[a] > 1 for a in anchors) / len(anchors),
    }
