"""verl's actor and reference workers (`ActorRolloutRefWorker`) on the CPU, one process: the old log-probs, the
reference log-probs and one update of a batch of recipe-shaped step samples, saved to OUT.

    python cpu_actor_worker.py WORK OUT [N_SAMPLES]

Everything between the batch and the numbers is verl's worker, engine and loss with the plugin loaded (as on a GPU
node, through verl's entry point), on cpu_sft_trainer's CPU platform with gloo and FSDP2: the path where our
replacements of verl's functions meet (row selection, micro-batch split and join, response rows, length-sorted
micro-batches, response-only logits). The recipe's padded path, micro-batches of 8, mini-batches of 4 x 4 step
samples. WORK holds a tiny Molmo2 (a 1024-token vocabulary: the host's work, not the LM head, dominates), made
on the first call. OUT: {"old_log_probs", "entropy", "ref_log_prob": [N, response] padded, "metrics": {...}}.
"""
import os
import pathlib
import socket
import sys

import torch
import torch.distributed

from cpu_sft_trainer import CPUPlatform

VOCAB = 1024


def make_model(path: pathlib.Path) -> None:
    """A one-layer Molmo2 of hidden size 16 over token ids below VOCAB, with the released processor files."""
    from molmo_agent.models.molmo2 import Molmo2ForConditionalGeneration
    from molmo_agent.models.molmo2.configuration import tiny_config
    from molmo_agent.models.molmo2.make_checkpoint import write_processor_files

    image_ids = dict(image_start_token_id=VOCAB, image_end_token_id=VOCAB + 1, image_patch_id=VOCAB + 2,
                     image_high_res_id=VOCAB + 2, image_col_id=VOCAB + 3, low_res_image_start_token_id=VOCAB + 4,
                     image_low_res_id=VOCAB + 6, frame_start_token_id=VOCAB + 7, frame_end_token_id=VOCAB + 8)
    config = tiny_config(text_config=dict(hidden_size=16, num_attention_heads=1, num_key_value_heads=1, head_dim=16,
                                          num_hidden_layers=1, intermediate_size=16, vocab_size=VOCAB,
                                          additional_vocab_size=128),
                         adapter_config=dict(text_hidden_size=16), **image_ids)
    torch.manual_seed(0)
    Molmo2ForConditionalGeneration(config).save_pretrained(path)
    write_processor_files(str(path))


def step_samples(n: int):
    """`n` step samples as TransferQueue hands them to the worker: prompts of 20-60 tokens, answers of 2-12."""
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        prompt = torch.randint(5, VOCAB, (int(torch.randint(20, 60, (1,), generator=g)),), generator=g)
        answer = torch.randint(5, VOCAB, (int(torch.randint(2, 12, (1,), generator=g)),), generator=g)
        rows.append({"prompts": prompt, "responses": answer, "response_mask": torch.ones(len(answer), dtype=torch.long),
                     "input_ids": torch.cat([prompt, answer]), "position_ids": torch.arange(len(prompt) + len(answer)),
                     "loss_mask": torch.ones(len(answer), dtype=torch.long), "multi_modal_inputs": {},
                     "uid": f"group-{i // 4}"})
    return list_of_dict_to_tensordict(rows)


def main() -> None:
    work, out = pathlib.Path(sys.argv[1]), sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VERL_ENGINE_DEVICE="cuda", VERL_ENGINE_VENDOR="nvidia")
    torch.set_num_threads(1)
    from verl.plugin.platform.platform_manager import set_platform

    set_platform(CPUPlatform())
    torch.distributed.init_process_group("gloo")
    import verl  # noqa: F401  (loads molmo_agent through verl's plugin entry point)
    from hydra import compose, initialize_config_dir
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine_workers import ActorRolloutRefWorker
    from verl.workers.utils.padding import response_from_nested

    model = work / "model"
    if not (model / "config.json").exists():
        make_model(model)
    config_dir = pathlib.Path(__file__).resolve().parents[1] / "molmo_agent" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose("alfworld_gigpo", overrides=[
            f"actor_rollout_ref.model.path={model}", "data.train_files=x", "data.val_files=x",
            "++actor_rollout_ref.model.override_config.attn_implementation=sdpa",
            "actor_rollout_ref.model.use_remove_padding=False",
            "actor_rollout_ref.model.enable_gradient_checkpointing=False",
            "actor_rollout_ref.actor.strategy=fsdp2", "actor_rollout_ref.ref.strategy=fsdp2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8", "actor_rollout_ref.actor.optim.lr=1e-3"])
    actor = ActorRolloutRefWorker(config.actor_rollout_ref, role="actor")
    actor.init_model()
    ref = ActorRolloutRefWorker(config.actor_rollout_ref, role="ref")
    ref.init_model()

    batch = step_samples(n)
    passes = {}
    for name, worker, entropy in (("actor", actor.compute_log_prob, True), ("ref", ref.compute_ref_log_prob, False)):
        data = batch.select(*batch.keys())
        tu.assign_non_tensor(data, calculate_entropy=entropy, compute_loss=False, temperature=1.0)
        passes[name] = worker(data)
    mask = batch["response_mask"]
    update = batch.select(*batch.keys())
    update["old_log_probs"] = response_from_nested(passes["actor"]["log_probs"], mask)
    update["ref_log_prob"] = response_from_nested(passes["ref"]["log_probs"], mask)
    advantages = torch.randn(mask.values().shape[0], generator=torch.Generator().manual_seed(1))
    update["advantages"] = torch.nested.nested_tensor_from_jagged(advantages, mask.offsets())
    update["returns"] = update["advantages"]
    tu.assign_non_tensor(update, calculate_entropy=True, distillation_use_topk=False, distillation_only=False,
                         global_batch_size=16, mini_batch_size=16, epochs=1, seed=0,
                         dataloader_kwargs={"shuffle": True}, temperature=1.0)
    metrics = actor.update_actor(update)["metrics"]
    torch.save({"old_log_probs": passes["actor"]["log_probs"].to_padded_tensor(0.0),
                "entropy": passes["actor"]["entropy"].to_padded_tensor(0.0),
                "ref_log_prob": passes["ref"]["log_probs"].to_padded_tensor(0.0),
                "metrics": {key: value for key, value in metrics.items()  # the numbers, not the clock's
                            if not (key.startswith("perf/") or key == "mfu")}}, out)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
