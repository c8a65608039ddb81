"""Our V1 trainer, `trainer.v1.trainer_mode=agent_sync`: verl's synchronous trainer on agent step samples.

verl's estimator registry hands an estimator only rewards, the response mask and the group index; GiGPO also
needs each step's trajectory, step index, anchor observation, reward and action validity. So the advantage stage
is where we plug in: with `algorithm.adv_estimator=gigpo` it reads the agent loop's extra fields from
TransferQueue and calls `write_gigpo_advantages`; any other estimator (grpo, rloo, ...) runs verl's own stage
unchanged on the same step samples, whose reward is the episode return on the final response token, except GRPO
with `algorithm.compute_mean_std_cross_steps=True`: verl's GRPO function then scores every step sample, not each
session's last one (verl's V1 stage), so that its group statistics weigh each episode by its steps. Either way
the step samples' environment metrics (success per task type, episode length, invalid actions, anchor groups,
dropped episodes), where the sessions' time went (generation vs environment) and where the advantage mass sits
(`advantage_sources`) are logged with the training metrics, with the environment steps trained on so far
(`env/cumulative_steps`). Checkpoints keep that count and every validation logs it, so each validation point of
a learning curve carries its own x, across resumes too.

The actor's stages (old log-probs, reference log-probs, update) fetch only the fields the engine reads: verl's
worker bridge fetches every field of every step sample otherwise, and builds a Python object per sample for each
non-tensor one (the agent loop's extra fields, metrics, ids: ~15 of them), ~2 s of host time a stage for ~3,100
step samples, measured on the CPU. Of the per-sample non-tensor fields, verl's engines read `multi_modal_inputs`
alone; tensor fields all still travel. `MOLMO_AGENT_ENGINE_FIELDS=0` keeps verl's fetch of every field.
"""
import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator

import numpy as np
import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta

from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.transferqueue_utils import kv_batch_meta2batch_meta
from verl.workers.utils.padding import response_to_nested

from molmo_agent.algorithms.advantage_sources import advantage_sources
from molmo_agent.integrations.verl.advantage import CROSS_STEPS, GIGPO, write_gigpo_advantages
from molmo_agent.integrations.verl.steps import (WON, episode_metrics, gigpo_batch, longest_session_metrics,
                                                 session_time_metrics)

TRAINER_MODE = "agent_sync"
# In each global_step_N checkpoint folder: {"env_steps": agent actions of the training rollouts up to step N}
ENV_STEPS_FILE = "env_steps.json"

# The per-sample non-tensor fields verl's engines read (`prepare_model_inputs`); the others stay in TransferQueue
# during the actor's stages.
ENGINE_NON_TENSOR_FIELDS = ("multi_modal_inputs",)
FIELDS_SWITCH = "MOLMO_AGENT_ENGINE_FIELDS"
# Seconds between the replay buffer's looks at TransferQueue while a batch's sessions finish. verl's 2 s (not a
# config knob) rounds every generation up to its next multiple: 1 s lost on average per training batch and per
# validation. Each look lists every stored key's metadata (thousands of step samples), so not much more often.
REPLAY_POLL_S = 0.5

logger = logging.getLogger(__name__)


def engine_fields(field_schema: dict[str, dict]) -> list[str]:
    """The stored fields (TransferQueue's `BatchMeta.field_schema`: name -> {is_non_tensor, ...}) that the actor's
    engine reads: every tensor field, and of the per-sample non-tensor ones those in ENGINE_NON_TENSOR_FIELDS."""
    return [name for name, meta in field_schema.items()
            if not meta.get("is_non_tensor", False) or name in ENGINE_NON_TENSOR_FIELDS]


@contextlib.contextmanager
def fetching(batch: KVBatchMeta, fields: list[str]) -> Iterator[None]:
    """Within the block, a worker that gets `batch` fetches `fields` only (verl's bridge selects `batch.fields`)."""
    before, batch.fields = batch.fields, fields
    try:
        yield
    finally:
        batch.fields = before


@register_trainer(TRAINER_MODE)
class AgentTrainer(PPOTrainerSync):
    """verl's sync trainer whose advantage stage runs GiGPO on step samples."""

    # verl keys its synchronous behaviour (replay buffer, refills, checkpoint layout) on the mode's name being
    # "sync"; we are the sync trainer under another registry name, so the attribute always reads "sync".
    @property
    def trainer_mode(self) -> str:
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, _registry_name: str) -> None:
        pass

    # agent actions of the training rollouts so far (a dropped episode leaves no step sample, so none of its own)
    env_steps: int = 0

    def _build_replay_buffer(self) -> ReplayBuffer:
        buffer = super()._build_replay_buffer()
        buffer.poll_interval = REPLAY_POLL_S
        return buffer

    def _save_checkpoint(self) -> None:
        # before verl's save, whose last write (latest_checkpointed_iteration.txt) marks the checkpoint complete
        folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, ENV_STEPS_FILE), "w") as f:
            json.dump({"env_steps": self.env_steps}, f)
        super()._save_checkpoint()

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()
        if self.global_steps == 0:  # nothing to resume
            return
        trainer = self.config.trainer
        folder = (trainer.resume_from_path if trainer.resume_mode == "resume_path"
                  else os.path.join(trainer.default_local_dir, f"global_step_{self.global_steps}"))
        path = os.path.join(folder, ENV_STEPS_FILE)
        if os.path.isfile(path):
            with open(path) as f:
                self.env_steps = int(json.load(f)["env_steps"])
        else:
            logger.warning("%s is missing (a checkpoint older than the counter): env/cumulative_steps restarts "
                           "from 0 at step %d", path, self.global_steps)

    def _validate(self) -> dict[str, float]:
        return {**super()._validate(), "env/cumulative_steps": self.env_steps}

    def _compute_old_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        return self._actor_stage(super()._compute_old_log_prob, batch, metrics)

    def _compute_ref_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        return self._actor_stage(super()._compute_ref_log_prob, batch, metrics)

    def _update_actor(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        return self._actor_stage(super()._update_actor, batch, metrics)

    @staticmethod
    def _actor_stage(stage: Callable[[KVBatchMeta, dict], KVBatchMeta], batch: KVBatchMeta,
                     metrics: dict) -> KVBatchMeta:
        """verl's `stage`, its worker fetching only the fields the engine reads (module docstring)."""
        if os.environ.get(FIELDS_SWITCH, "1") == "0":
            return stage(batch, metrics)
        with fetching(batch, engine_fields(kv_batch_meta2batch_meta(batch).field_schema)):
            return stage(batch, metrics)

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        gigpo = self.config.algorithm.adv_estimator == GIGPO
        grpo_over_steps = not gigpo and self.config.algorithm.get(CROSS_STEPS, False)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["uid", "response_mask", "extra_fields"]
                               + (["rm_scores"] if grpo_over_steps else []))
        # Non-tensor fields come back as a list, a NonTensorStack or an array, by TransferQueue backend.
        uids = [str(uid) for uid in list(data["uid"])]
        extra_fields = list(data["extra_fields"])
        sessions = self.config.data.train_batch_size * self.config.actor_rollout_ref.rollout.n
        response_mask = data["response_mask"]
        padded_mask = response_mask.to_padded_tensor(padding=0)
        # verl pads the batch with copies of a real sample (masked out): no metric or GiGPO step may count them
        real_uids, real_fields, real_mask = [uids[i] for i in real], [extra_fields[i] for i in real], padded_mask[real]
        metrics.update(episode_metrics(real_uids, real_fields, sessions))
        self.env_steps += len(real)  # one step sample per agent action
        metrics["env/steps"], metrics["env/cumulative_steps"] = len(real), self.env_steps
        metrics.update(session_time_metrics(real_fields))
        metrics.update(longest_session_metrics(real_fields, real_mask.sum(-1).tolist()))
        if gigpo or grpo_over_steps:
            advantages = torch.zeros_like(padded_mask, dtype=torch.float32)
            if gigpo:
                advantages[real] = self._gigpo_advantages(real_uids, real_fields, real_mask, metrics)
            else:
                # stored jagged or right-padded, by TransferQueue backend: cut to the response width
                scores = data.select("rm_scores").to_padded_tensor()["rm_scores"][real, :padded_mask.shape[1]]
                advantages[real] = self._grpo_advantages_over_steps(scores, real_uids, real_mask)
            nested = response_to_nested(advantages, response_mask)
            # returns equal the advantages, as verl's GRPO writes them: no critic learns from them
            written = tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id,
                                      fields=TensorDict({"advantages": nested, "returns": nested.clone()},
                                                        batch_size=len(batch)))
        else:
            written = super()._compute_advantage(batch, metrics)
            stored = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["advantages"])
            # as verl reads its fields back (nested or padded), cut to the response width
            advantages = stored.to_padded_tensor()["advantages"][:, :padded_mask.shape[1]]
        # one advantage per step sample: its value on each of its response tokens
        per_step = (advantages[real] * real_mask).sum(-1) / real_mask.sum(-1).clamp(min=1)
        sources = advantage_sources(real_uids, [fields[WON] for fields in real_fields], per_step.tolist())
        metrics.update({f"advantage/{name}": value for name, value in sources.items()})
        return written

    def _grpo_advantages_over_steps(self, scores: torch.Tensor, uids: list[str],
                                    response_mask: torch.Tensor) -> torch.Tensor:
        """verl's GRPO advantages (R, response_length) of R real step samples from their token scores and padded
        response mask (R, response_length) and uids: every step sample's score (its episode's return, on its last
        response token) counted in its group's mean and std, as verl-agent's compute_mean_std_cross_steps does;
        verl's V1 stage counts each session's last step alone."""
        advantages, _ = compute_grpo_outcome_advantage(
            scores.to(torch.float32), response_mask, np.array(uids, dtype=object),
            norm_adv_by_std_in_grpo=self.config.algorithm.get("norm_adv_by_std_in_grpo", True))
        return advantages

    def _gigpo_advantages(self, uids: list[str], extra_fields: list[dict], response_mask: torch.Tensor,
                          metrics: dict) -> torch.Tensor:
        """GiGPO's advantages (R, response_length) of R real step samples, from their uids, extra fields and
        padded response mask (R, response_length); its episode-return metrics go to `metrics`."""
        assert not self.config.algorithm.use_kl_in_reward, "refused for GiGPO by validate.check_algorithm"
        step_data = write_gigpo_advantages(gigpo_batch(uids, extra_fields, response_mask), self.config.algorithm)
        metrics.update(step_data.meta_info["metrics"])
        return step_data.batch["advantages"].to(torch.float32)
