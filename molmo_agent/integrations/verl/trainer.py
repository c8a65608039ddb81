"""Our V1 trainer, `trainer.v1.trainer_mode=agent_sync`: verl's synchronous trainer on agent step samples.

verl's estimator registry hands an estimator only rewards, the response mask and the group index; GiGPO also
needs each step's trajectory, step index, anchor observation, reward and action validity. So the advantage stage
is where we plug in: with `algorithm.adv_estimator=gigpo` it reads the agent loop's extra fields from
TransferQueue and calls `write_gigpo_advantages`; any other estimator (grpo, rloo, ...) runs verl's own stage
unchanged on the same step samples, whose reward is the episode return on the final response token. Either way
the step samples' environment metrics (success per task type, episode length, invalid actions, anchor groups,
dropped episodes), where the sessions' time went (generation vs environment) and where the advantage mass sits
(`advantage_sources`) are logged with the training metrics, with the environment steps trained on so far
(`env/cumulative_steps`). Checkpoints keep that count and every validation logs it, so each validation point of
a learning curve carries its own x, across resumes too.
"""
import json
import logging
import os

import torch
import transfer_queue as tq
from tensordict import TensorDict
from transfer_queue import KVBatchMeta

from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_to_nested

from molmo_agent.algorithms.advantage_sources import advantage_sources
from molmo_agent.integrations.verl.advantage import GIGPO, write_gigpo_advantages
from molmo_agent.integrations.verl.steps import (WON, episode_metrics, gigpo_batch, longest_session_metrics,
                                                 session_time_metrics)

TRAINER_MODE = "agent_sync"
# In each global_step_N checkpoint folder: {"env_steps": agent actions of the training rollouts up to step N}
ENV_STEPS_FILE = "env_steps.json"

logger = logging.getLogger(__name__)


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

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        real = [i for i, tag in enumerate(batch.tags) if not tag.get("is_padding", False)]
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["uid", "response_mask", "extra_fields"])
        # Non-tensor fields come back as a list, a NonTensorStack or an array, by TransferQueue backend.
        uids = [str(uid) for uid in list(data["uid"])]
        extra_fields = list(data["extra_fields"])
        sessions = self.config.data.train_batch_size * self.config.actor_rollout_ref.rollout.n
        response_mask = data["response_mask"]
        padded_mask = response_mask.to_padded_tensor(padding=0)
        metrics.update(episode_metrics([uids[i] for i in real], [extra_fields[i] for i in real], sessions))
        self.env_steps += len(real)  # one step sample per agent action
        metrics["env/steps"], metrics["env/cumulative_steps"] = len(real), self.env_steps
        metrics.update(session_time_metrics([extra_fields[i] for i in real]))
        metrics.update(longest_session_metrics([extra_fields[i] for i in real], padded_mask[real].sum(-1).tolist()))
        if self.config.algorithm.adv_estimator == GIGPO:
            written = self._write_gigpo_advantages(batch, real, uids, extra_fields, response_mask, metrics)
        else:
            written = super()._compute_advantage(batch, metrics)
        # one advantage per step sample (its value on each response token), whichever estimator wrote them
        stored = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["advantages"])
        advantages = stored.to_padded_tensor()["advantages"]  # as verl reads its fields back: nested or not
        mask = padded_mask[real]
        advantages = advantages[:, :mask.shape[1]]
        per_step = (advantages[real] * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        sources = advantage_sources([uids[i] for i in real], [extra_fields[i][WON] for i in real], per_step.tolist())
        metrics.update({f"advantage/{name}": value for name, value in sources.items()})
        return written

    def _write_gigpo_advantages(self, batch: KVBatchMeta, real: list[int], uids: list[str],
                                extra_fields: list[dict], response_mask: torch.Tensor, metrics: dict) -> KVBatchMeta:
        """GiGPO's advantages and returns of the real step samples, written to TransferQueue (0 on padding)."""
        assert not self.config.algorithm.use_kl_in_reward, "refused for GiGPO by validate.check_algorithm"
        padded_mask = response_mask.to_padded_tensor(padding=0)
        # verl pads the batch with copies of a real sample (masked out); GiGPO must not count them as steps.
        step_data = gigpo_batch([uids[i] for i in real], [extra_fields[i] for i in real], padded_mask[real])
        step_data = write_gigpo_advantages(step_data, self.config.algorithm)
        metrics.update(step_data.meta_info["metrics"])

        advantages = torch.zeros_like(padded_mask, dtype=torch.float32)
        returns = torch.zeros_like(padded_mask, dtype=torch.float32)
        advantages[real] = step_data.batch["advantages"].to(torch.float32)
        returns[real] = step_data.batch["returns"].to(torch.float32)
        output = TensorDict({"advantages": response_to_nested(advantages, response_mask),
                             "returns": response_to_nested(returns, response_mask)}, batch_size=len(batch))
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)
