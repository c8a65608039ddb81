"""Our V1 trainer's advantage stage on step samples as TransferQueue stores them, and its replay buffer's polling,
without Ray or GPUs."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transfer_queue import KVBatchMeta

from verl.trainer.ppo.v1 import get_trainer_cls, replay_buffer
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

from molmo_agent.integrations.verl import steps, trainer
from molmo_agent.integrations.verl.trainer import REPLAY_POLL_S, TRAINER_MODE, AgentTrainer


def step(traj: str, index: int, anchor: str, reward: float = 0.0, valid: bool = True, done: bool = False,
         won: bool = False, task_type: str = "pick_and_place_simple", generate_s: float = 0.3,
         env_s: float = 0.1, admissible: bool | None = None) -> dict:
    """One step's extra fields; an invalid answer is inadmissible unless said otherwise."""
    return {steps.TRAJ_UID: traj, steps.STEP_INDEX: index, steps.ANCHOR_OBS: anchor, steps.ENV_REWARD: reward,
            steps.IS_ACTION_VALID: valid, steps.IS_ACTION_ADMISSIBLE: valid if admissible is None else admissible,
            steps.DONE: done, steps.WON: won, steps.TASK_TYPE: task_type, steps.GENERATE_SECONDS: generate_s,
            steps.ENV_SECONDS: env_s}


# One group ("g"), two sessions of the same game: "a" wins in two steps, "b" loses after three, with one invalid
# action, and passes through the same first observation as "a" (an anchor group of two).
STEPS = [
    ("g", step("a", 0, "kitchen")),
    ("g", step("a", 1, "fridge open", reward=10.0, done=True, won=True)),
    ("g", step("b", 0, "kitchen")),
    ("g", step("b", 1, "nothing happens", valid=False)),
    ("g", step("b", 2, "drawer", done=True)),
]


class FakeTransferQueue:
    """TransferQueue's kv_batch_get / kv_batch_put of a whole batch, on one in-memory TensorDict."""

    def __init__(self, rows: list[dict]):
        self.keys = [f"{row['uid']}_{row['extra_fields'][steps.TRAJ_UID]}_{row['extra_fields'][steps.STEP_INDEX]}"
                     for row in rows]
        self.data = list_of_dict_to_tensordict(rows)
        # TransferQueue keeps response masks jagged, whatever their lengths (the helper stacks equal ones)
        self.data["response_mask"] = torch.nested.as_nested_tensor([row["response_mask"] for row in rows],
                                                                   layout=torch.jagged)

    def kv_batch_get(self, keys, partition_id, select_fields):
        assert keys == self.keys
        return self.data.select(*select_fields)

    def kv_batch_put(self, keys, partition_id, fields):
        assert keys == self.keys
        for name in fields.keys():
            self.data[name] = fields[name]
        return KVBatchMeta(partition_id=partition_id, keys=keys, tags=[{}] * len(keys))


def put_session_advantages(queue: FakeTransferQueue, per_session: dict[str, float], dense_width: int = 0) -> None:
    """What verl's GRPO stage stores: each session's advantage on every response token of its step samples, jagged,
    or right-padded to `dense_width` columns."""
    rows = [torch.full((len(mask),), per_session[fields[steps.TRAJ_UID]])
            for mask, fields in zip(queue.data["response_mask"], queue.data["extra_fields"])]
    queue.data["advantages"] = (torch.stack([torch.nn.functional.pad(row, (0, dense_width - len(row))) for row in rows])
                                if dense_width else torch.nested.as_nested_tensor(rows, layout=torch.jagged))


def stored_rows(response_lengths: list[int]) -> list[dict]:
    return [{"uid": uid, "response_mask": torch.ones(length, dtype=torch.int64), "extra_fields": fields}
            for (uid, fields), length in zip(STEPS, response_lengths, strict=True)]


def make_trainer(adv_estimator: str, cross_steps: bool = False) -> AgentTrainer:
    agent_trainer = AgentTrainer.__new__(AgentTrainer)  # the advantage stage needs only the config
    agent_trainer.config = OmegaConf.create({"algorithm": {
        "adv_estimator": adv_estimator, "gamma": 1.0, "use_kl_in_reward": False,
        "compute_mean_std_cross_steps": cross_steps,
        "gigpo": {"step_advantage_w": 1.0, "mode": "mean_norm", "invalid_action_penalty_coef": 0.5,
                  "enable_similarity": False, "similarity_thresh": 0.95}},
        # B×G sessions were asked for: one game, a group of 2 (STEPS)
        "data": {"train_batch_size": 1}, "actor_rollout_ref": {"rollout": {"n": 2}}})
    return agent_trainer


def test_registered_in_verl_v1_registry_and_keeps_sync_semantics():
    assert get_trainer_cls(TRAINER_MODE) is AgentTrainer
    agent_trainer = AgentTrainer.__new__(AgentTrainer)
    agent_trainer.trainer_mode = TRAINER_MODE  # what verl's __init__ assigns from trainer.v1.trainer_mode
    assert agent_trainer.trainer_mode == "sync"


def test_the_replay_buffer_looks_for_finished_sessions_every_half_second(monkeypatch):
    agent_trainer = AgentTrainer.__new__(AgentTrainer)
    agent_trainer.config = OmegaConf.create({
        "trainer": {"v1": {"trainer_mode": TRAINER_MODE, "sampler": {
            "max_off_policy_threshold": 8, "max_off_policy_strategy": "drop", "sampler_kwargs": {},
            "custom_sampler": {"path": None, "name": None}}}},
        "algorithm": {"filter_groups": None}, "data": {"train_batch_size": 4}})
    buffer = agent_trainer._build_replay_buffer()
    assert type(buffer) is ReplayBuffer  # verl's own, built with verl's arguments
    slept = []
    monkeypatch.setattr(replay_buffer.time, "sleep", slept.append)
    buffer._wait_for_next_poll("train", last_debug_time=replay_buffer.time.time())  # what sample() calls
    assert slept == [REPLAY_POLL_S] == [0.5]


def test_gigpo_advantage_stage_writes_step_advantages_and_skips_padding(monkeypatch):
    # The last row is verl's batch padding: a masked-out copy of a real sample (tag is_padding).
    rows = stored_rows([3, 2, 4, 1, 2])
    rows.append({**rows[0], "response_mask": torch.zeros(1, dtype=torch.int64)})
    queue = FakeTransferQueue(rows)
    queue.keys[-1] = "padding"
    monkeypatch.setattr(trainer, "tq", queue)
    tags = [{}] * 5 + [{"is_padding": True}]
    metrics = {}
    make_trainer("gigpo")._compute_advantage(KVBatchMeta(partition_id="train", keys=queue.keys, tags=tags), metrics)

    advantages = [queue.data["advantages"][i] for i in range(len(rows))]
    assert [len(a) for a in advantages] == [3, 2, 4, 1, 2, 1]
    per_step = [float(a[0]) for a in advantages]
    for a in advantages:  # one advantage per step, on every response token
        assert torch.all(a == a[0])
    # Episode returns: a = 10, b = -0.5 (one invalid action) -> A_E = +5.25 / -5.25 (mean_norm).
    # Step returns (gamma 1): a: 10, 10; b: -0.5, -0.5, 0. The anchor "kitchen" holds a0 (10) and b0 (-0.5):
    # A_S = +5.25 / -5.25; all other anchors are alone (A_S = 0).
    assert per_step[:5] == pytest.approx([10.5, 5.25, -10.5, -5.25, -5.25])
    assert per_step[5] == 0.0  # padding has no advantage
    assert torch.equal(queue.data["returns"].values(), queue.data["advantages"].values())  # no critic: returns = A
    assert metrics["env/anchor_group_share"] == pytest.approx(2 / 5)
    assert metrics["env/success_rate"] == 0.5
    assert metrics["env/invalid_action_rate"] == pytest.approx(1 / 5)
    assert metrics["env/episode_length"] == 2.5
    assert metrics["env/dropped_episode_rate"] == 0.0
    assert metrics["env/steps"] == 5 and metrics["env/cumulative_steps"] == 5  # not the padding row
    # the one group holds a success; b's three steps carry the negative half of the mass, padding none of it
    assert metrics["advantage/no_success_group_share"] == 0.0 and metrics["advantage/no_success_abs_share"] == 0.0
    assert metrics["advantage/negative_abs_share"] == pytest.approx(21 / 36.75)
    assert metrics["advantage/abs_mean"] == pytest.approx(36.75 / 5)
    # b's answers (4 + 1 + 2 tokens) outlast a's (3 + 2); the padding row's token is not counted
    assert metrics["rollout/longest_session_tokens"] == 7 and metrics["rollout/longest_session_steps"] == 3


@pytest.mark.parametrize("dense_width", [0, 6])  # stored jagged, or padded wider than the longest response
def test_other_estimators_run_verls_stage(monkeypatch, dense_width):
    queue = FakeTransferQueue(stored_rows([1, 2, 1, 1, 1]))
    monkeypatch.setattr(trainer, "tq", queue)
    called = []

    def verls_stage(self, batch, metrics):  # GRPO's advantage, one per session on each of its response tokens
        called.append(1)
        put_session_advantages(queue, {"a": 0.7, "b": -0.7}, dense_width)

    monkeypatch.setattr(trainer.PPOTrainerSync, "_compute_advantage", verls_stage)
    metrics = {}
    make_trainer("grpo")._compute_advantage(KVBatchMeta(partition_id="train", keys=queue.keys, tags=[{}] * 5),
                                            metrics)
    assert called == [1]
    assert metrics["env/success_rate/pick_and_place_simple"] == 0.5
    assert metrics["advantage/negative_abs_share"] == pytest.approx(3 / 5)  # b's three steps, a's two
    assert metrics["advantage/abs_mean"] == pytest.approx(0.7)


@pytest.mark.parametrize("dense_width", [0, 6])  # scores stored jagged, or padded wider than the longest response
def test_grpo_over_step_samples_weighs_each_episode_by_its_steps(monkeypatch, dense_width):
    # The agent loop puts the episode's return on the last response token of each of its step samples: a won
    # (1.0, two steps), b lost (0.0, three). Over the five step samples the mean is 0.4 and the unbiased std
    # sqrt(0.3), so a's steps get 0.6 / sqrt(0.3) and b's -0.4 / sqrt(0.3): equal mass either way, where verl's
    # stage (each session once: ±1/√2) gives b's three steps 3/5 of it.
    lengths = [3, 2, 1, 2, 1]
    rows = stored_rows(lengths)
    for row in rows:
        score = torch.zeros(len(row["response_mask"]))
        score[-1] = 1.0 if row["extra_fields"][steps.TRAJ_UID] == "a" else 0.0
        row["rm_scores"] = score
    rows.append({**rows[0], "response_mask": torch.zeros(1, dtype=torch.int64), "rm_scores": torch.zeros(1)})
    queue = FakeTransferQueue(rows)
    scores = [row["rm_scores"] for row in rows]
    padded = [torch.nn.functional.pad(row, (0, dense_width - len(row))) for row in scores]
    queue.data["rm_scores"] = (torch.stack(padded) if dense_width
                               else torch.nested.as_nested_tensor(scores, layout=torch.jagged))
    queue.keys[-1] = "padding"
    monkeypatch.setattr(trainer, "tq", queue)
    monkeypatch.setattr(trainer.PPOTrainerSync, "_compute_advantage", lambda *_: pytest.fail("verl's stage ran"))
    metrics = {}
    tags = [{}] * 5 + [{"is_padding": True}]
    make_trainer("grpo", cross_steps=True)._compute_advantage(
        KVBatchMeta(partition_id="train", keys=queue.keys, tags=tags), metrics)

    advantages = [queue.data["advantages"][i] for i in range(len(rows))]
    assert [len(a) for a in advantages] == lengths + [1]
    for a in advantages:  # one advantage per step, on every response token
        assert torch.all(a == a[0])
    std = np.sqrt(0.3)
    assert [float(a[0]) for a in advantages] == pytest.approx([0.6 / std] * 2 + [-0.4 / std] * 3 + [0.0], rel=1e-5)
    assert torch.equal(queue.data["returns"].values(), queue.data["advantages"].values())
    assert metrics["advantage/negative_abs_share"] == pytest.approx(0.5)


def test_episode_metrics_per_task_type_and_anchor_share():
    uids = ["g1", "g1", "g2", "g2"]
    fields = [step("a", 0, "room"), step("a", 1, "room", won=True, done=True, task_type="look_at_obj_in_light"),
              step("b", 0, "room", valid=False), step("c", 0, "hall", done=True, admissible=False)]
    metrics = steps.episode_metrics(uids, fields, expected_episodes=4)
    # episodes: a (won, 2 steps, its last step says look_at...), b (1 step), c (1 step); a fourth was dropped
    assert metrics["env/dropped_episode_rate"] == 0.25
    assert metrics["env/success_rate"] == pytest.approx(1 / 3)
    assert metrics["env/success_rate/look_at_obj_in_light"] == 1.0
    assert metrics["env/success_rate/pick_and_place_simple"] == 0.0
    assert metrics["env/episode_length"] == pytest.approx(4 / 3)
    assert metrics["env/invalid_action_rate"] == pytest.approx(1 / 4)
    assert metrics["env/inadmissible_action_rate"] == pytest.approx(2 / 4)  # b's malformed, c's unlisted action
    # "room" twice in g1 (shared); "room" and "hall" once each in g2
    assert metrics["env/anchor_group_share"] == 0.5
    assert steps.episode_metrics([], [], expected_episodes=4)["env/dropped_episode_rate"] == 1.0


def test_session_time_metrics():
    fields = [step("a", 0, "x", generate_s=0.5, env_s=0.1), step("a", 1, "y", generate_s=0.3, env_s=0.3)]
    metrics = steps.session_time_metrics(fields)
    assert metrics["agent/generate_seconds_per_step"] == pytest.approx(0.4)
    assert metrics["agent/env_seconds_per_step"] == pytest.approx(0.2)
    assert metrics["agent/env_time_share"] == pytest.approx(0.4 / 1.2)
    assert steps.session_time_metrics([]) == {}


def test_longest_session_by_generated_tokens_not_steps():
    fields = [step("a", 0, "x"), step("a", 1, "y"), step("a", 2, "z"), step("b", 0, "x")]
    assert steps.longest_session_metrics(fields, [1, 1, 1, 40]) == {
        "rollout/longest_session_tokens": 40.0, "rollout/longest_session_steps": 1.0}
    assert steps.longest_session_metrics([], []) == {}
    with pytest.raises(ValueError):  # a length for every step sample
        steps.longest_session_metrics(fields, [1, 1])


def test_gigpo_batch_names_missing_fields():
    with pytest.raises(ValueError, match="anchor_obs"):
        steps.gigpo_batch(["g"], [{k: v for k, v in step("a", 0, "x").items() if k != steps.ANCHOR_OBS}],
                          torch.ones(1, 2))
    batch = steps.gigpo_batch(["g"], [step("a", 0, "x", reward=1.0)], torch.ones(1, 2))
    assert batch.non_tensor_batch[steps.ENV_REWARD].dtype == np.float32


def test_environment_steps_add_up_over_iterations_and_survive_a_resume(monkeypatch, tmp_path):
    queue = FakeTransferQueue(stored_rows([1, 1, 1, 1, 1]))
    monkeypatch.setattr(trainer, "tq", queue)
    monkeypatch.setattr(trainer.PPOTrainerSync, "_compute_advantage",
                        lambda self, batch, metrics: put_session_advantages(queue, {"a": 0.0, "b": 0.0}) or batch)
    monkeypatch.setattr(trainer.PPOTrainerSync, "_validate", lambda self: {"val-core/alfworld/acc": 0.5})
    saved_first = []
    # verl's save writes latest_checkpointed_iteration.txt last: the count must be on disk by then
    monkeypatch.setattr(trainer.PPOTrainerSync, "_save_checkpoint",
                        lambda self: saved_first.append((tmp_path / "ckpt/global_step_2/env_steps.json").is_file()))
    monkeypatch.setattr(trainer.PPOTrainerSync, "_load_checkpoint", lambda self: setattr(self, "global_steps", 2))
    first = make_trainer("grpo")
    first.config.trainer = {"default_local_dir": str(tmp_path / "ckpt"), "resume_mode": "auto"}
    batch = KVBatchMeta(partition_id="train", keys=queue.keys, tags=[{}] * 5)
    for _ in range(2):
        metrics = {}
        first._compute_advantage(batch, metrics)
    assert metrics["env/steps"] == 5 and metrics["env/cumulative_steps"] == 10
    first.global_steps = 2
    first._save_checkpoint()
    assert saved_first == [True]
    assert first._validate() == {"val-core/alfworld/acc": 0.5, "env/cumulative_steps": 10}

    resumed = make_trainer("grpo")
    resumed.config.trainer = first.config.trainer
    resumed._load_checkpoint()
    assert resumed._validate()["env/cumulative_steps"] == 10  # the resumed run's validation at step 2
    resumed._compute_advantage(batch, metrics := {})
    assert metrics["env/cumulative_steps"] == 15


SCHEMA = {"input_ids": {"is_non_tensor": False, "is_nested": True}, "uid": {"is_non_tensor": True},
          "multi_modal_inputs": {"is_non_tensor": True}, "advantages": {"is_non_tensor": False},
          "extra_fields": {"is_non_tensor": True}, "metrics": {"is_non_tensor": True}}


def test_the_engine_fetches_tensor_fields_and_multi_modal_inputs_only():
    assert trainer.engine_fields(SCHEMA) == ["input_ids", "multi_modal_inputs", "advantages"]


@pytest.mark.parametrize("stage", ["_compute_old_log_prob", "_compute_ref_log_prob", "_update_actor"])
def test_each_actor_stage_fetches_the_engines_fields_then_restores_them_unless_switched_off(monkeypatch, stage):
    class Stored:
        field_schema = SCHEMA

    seen = []

    def verls(self, batch, metrics):
        seen.append(None if batch.fields is None else list(batch.fields))
        raise RuntimeError("the worker failed")

    monkeypatch.setattr(trainer, "kv_batch_meta2batch_meta", lambda batch: Stored)
    monkeypatch.setattr(trainer.PPOTrainerSync, stage, verls)
    batch = KVBatchMeta(partition_id="train_0", keys=["k0"], tags=[{}])
    with pytest.raises(RuntimeError, match="the worker failed"):
        getattr(object.__new__(AgentTrainer), stage)(batch, {})
    assert seen == [["input_ids", "multi_modal_inputs", "advantages"]]
    assert batch.fields is None  # every other reader of the batch sees all its fields again
    monkeypatch.setenv(trainer.FIELDS_SWITCH, "0")  # verl's fetch of every field
    with pytest.raises(RuntimeError, match="the worker failed"):
        getattr(object.__new__(AgentTrainer), stage)(batch, {})
    assert seen[-1] is None
