"""The trainer's image inputs of a Molmo2 step sample are the ones of the images the rollout used.

A Sokoban session plays through our agent loop with the Molmo2 checkpoint's processor (image blocks in the
prompt ids); each step sample then goes through the agent-loop worker's `_compute_multi_modal_inputs`, where verl
rebuilds the trainer's image inputs. verl's own worker fails there (it decodes the ids without the image blocks);
ours gives exactly the processor's tensors for the prompt the step was built from.
"""
import asyncio

import pytest
import ray
import torch
from transformers import AutoProcessor

from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopWorkerTQ
from verl.utils.dataset.rl_dataset import RLHFDataset

from molmo_agent.envs.sokoban.levels import generate_level
from molmo_agent.integrations.verl import steps
from molmo_agent.integrations.verl.agent_loop import EnvAgentLoop, _content
from molmo_agent.integrations.verl.multimodal import ZERO_PIXELS_ENV, Molmo2AgentLoopWorker
from molmo_agent.models.molmo2.processing import Molmo2Processor

from test_agent_loop import compose_config
from test_molmo2_processor import random_image
from test_sokoban import WalkthroughServer

IMAGE_KEYS = ("pixel_values", "image_token_pooling", "image_grids", "image_num_crops")


@pytest.fixture(scope="module")
def molmo2_processor(molmo2_dir) -> Molmo2Processor:
    return AutoProcessor.from_pretrained(molmo2_dir)


@pytest.fixture(scope="module")
def sokoban_outputs(molmo2_dir, molmo2_processor) -> list:
    """One Sokoban session's step samples, played by the walkthrough with the Molmo2 processor building prompts."""
    config = compose_config(molmo2_dir, "env.env_name=sokoban", "env.max_steps=15", "data.max_prompt_length=2048")
    walkthrough = generate_level(3).walkthrough
    server = WalkthroughServer(molmo2_processor.tokenizer, walkthrough)
    row = {"uid": "group-0", "extra_info": {"seed": 3, "index": 0, "task_type": "sokoban"}}

    async def session():  # as verl's worker does, the loop is made inside the event loop it runs on
        loop = EnvAgentLoop(trainer_config=DictConfigWrap(config), server_manager=server,
                            tokenizer=molmo2_processor.tokenizer, processor=molmo2_processor,
                            dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data), hf_model_type="molmo2")
        return await loop.run({"temperature": 1.0}, **row, session_id=0)

    outputs = asyncio.run(session())
    assert len(outputs) == len(walkthrough)
    return outputs


def worker(processor: Molmo2Processor, cls: type = Molmo2AgentLoopWorker):
    """An agent-loop worker with only what `_compute_multi_modal_inputs` reads (no Ray, no servers)."""
    instance = cls.__new__(cls)
    instance.processor, instance.tokenizer, instance.mm_processor_kwargs = processor, processor.tokenizer, {}
    return instance


def step_ids(output) -> torch.Tensor:
    """The step's ids as verl's TransferQueue worker passes them: prompt then response, one row."""
    return torch.tensor(output.prompt_ids + output.response_ids)


def test_verls_worker_cannot_rebuild_molmo2_image_inputs(sokoban_outputs, molmo2_processor):
    output = sokoban_outputs[0]
    verl_worker = worker(molmo2_processor, AgentLoopWorkerTQ.__ray_actor_class__)
    with pytest.raises(ValueError, match="placeholder"):
        verl_worker._compute_multi_modal_inputs(output, step_ids(output))


def test_trainer_image_inputs_are_the_processors_for_the_steps_prompt(sokoban_outputs, molmo2_processor):
    ours = worker(molmo2_processor)
    for output in sokoban_outputs:
        images = output.multi_modal_data["images"]
        assert len(images) == 1
        inputs = ours._compute_multi_modal_inputs(output, step_ids(output))
        assert set(inputs) == set(IMAGE_KEYS)
        # The processor on the chat-template text of the step's user message and its image: the prompt ids the
        # rollout sent, and the image tensors the trainer must get.
        messages = [{"role": "user", "content": _content("the step's text", images)}]
        text = molmo2_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        expected = molmo2_processor(text=text, images=images)
        for key in IMAGE_KEYS:
            torch.testing.assert_close(inputs[key], expected[key], rtol=0, atol=0)


def test_every_sokoban_step_sample_carries_one_image(sokoban_outputs):
    fields = [output.extra_fields for output in sokoban_outputs]
    metrics = steps.episode_metrics(["group-0"] * len(fields), fields, expected_episodes=1)
    assert metrics["env/images_per_step"] == 1.0 and metrics["env/success_rate"] == 1.0


def test_a_text_step_has_no_image_inputs(sokoban_outputs, molmo2_processor):
    output = sokoban_outputs[0]
    text_step = type(output)(**{**output.model_dump(), "multi_modal_data": None})
    assert worker(molmo2_processor)._compute_multi_modal_inputs(text_step, step_ids(output)) == {}


def test_zeroed_pixels_are_the_negative_controls_only_change(sokoban_outputs, molmo2_processor, monkeypatch):
    output = sokoban_outputs[0]
    real = worker(molmo2_processor)._compute_multi_modal_inputs(output, step_ids(output))
    monkeypatch.setenv(ZERO_PIXELS_ENV, "1")
    zeroed = worker(molmo2_processor)._compute_multi_modal_inputs(output, step_ids(output))
    assert real["pixel_values"].abs().sum() > 0 and zeroed["pixel_values"].eq(0).all()
    for key in IMAGE_KEYS[1:]:
        assert zeroed[key].equal(real[key])


def test_images_that_do_not_match_the_ids_are_named(sokoban_outputs, molmo2_processor):
    output = sokoban_outputs[0]
    ids = step_ids(output).tolist()
    image = output.multi_modal_data["images"][0]
    with pytest.raises(ValueError, match="more image blocks than the 1 image"):
        molmo2_processor.image_inputs(ids + ids, [image])
    with pytest.raises(ValueError, match="none for image 1"):
        molmo2_processor.image_inputs(ids, [image, image])
    with pytest.raises(ValueError, match="image 0's block .* is not the one its"):
        molmo2_processor.image_inputs(ids, [random_image(300, 900)])  # another crop grid


def test_the_worker_starts_as_a_ray_actor():
    """Ray ships the actor class to its worker process; verl's __init__ chain must run there. With an inherited
    __init__ it failed first ("super(type, obj): obj must be an instance or subtype of type"); given no config,
    the chain now reaches verl's AgentLoopWorker.__init__, which reads the config."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        actor = ray.remote(Molmo2AgentLoopWorker).remote(None, None, None, None)
        with pytest.raises(ray.exceptions.ActorDiedError) as died:
            ray.get(actor.__ray_ready__.remote(), timeout=120)
        assert "super(type, obj)" not in str(died.value)
        assert "'NoneType' object has no attribute" in str(died.value)
    finally:
        ray.shutdown()
