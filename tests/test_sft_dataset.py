"""SFT through verl's own trainer: our dataset class gives verl's items, the config composes, and the trainer runs.

`PromptResponseDataset` is checked against verl's `MultiTurnSFTDataset` on the same conversation (a tiny Qwen3
with a ChatML template, which verl's class can template), then on the rows `sft_data` writes for a tiny Molmo2.
The launch script's config is composed by Hydra as it runs it; verl's SFT trainer itself runs two steps on the
CPU (tests/cpu_sft_trainer.py) and its checkpoint carries a Molmo2 that loads with its processor.
"""
import os
import pathlib
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from verl.trainer.sft_trainer import create_sft_dataset
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.dataset.dataset_utils import SFTTensorCollator
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

from molmo_agent.envs.alfworld.games import load_games
from molmo_agent.integrations.verl.sft_data import StepRows, write_parquet
from molmo_agent.integrations.verl.sft_dataset import PromptResponseDataset
from molmo_agent.models.molmo2.processing import Molmo2Processor

from alfworld_games import GAMES_ROOT
from test_agent_loop import compose_config

REPO = pathlib.Path(__file__).parents[1]
SCRIPT = REPO / "examples" / "sft" / "run_alfworld_sft_molmo2.sh"
NO_PADDING = OmegaConf.create({"pad_mode": "no_padding", "max_length": 1024, "truncation": "error"})


def sft_config(*overrides: str):
    with initialize_config_module("molmo_agent.config", version_base=None):
        return compose("alfworld_sft", overrides=list(overrides))


@pytest.fixture(scope="module")
def sft_rows(molmo2_dir, tmp_path_factory) -> pathlib.Path:
    """sft_data's rows of the fixture train and valid_seen games for the tiny Molmo2 (RL defaults, with room for
    the answers: sft_data refuses one the RL run would cut)."""
    out = tmp_path_factory.mktemp("sft_rows")
    rows_of = StepRows(compose_config(molmo2_dir, "env.max_steps=50", "data.max_prompt_length=2048",
                                      "data.max_response_length=64"))
    for split in ("train", "valid_seen"):
        write_parquet([row for game in load_games(str(GAMES_ROOT), split) for row in rows_of(game)],
                      str(out / f"{split}.parquet"))
    return out


def test_items_are_verls_multiturn_items_for_the_same_conversation(model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    user = {"role": "user", "content": "you see a fridge 1. Available actions: look, go to fridge 1"}
    answer = "<think>I go to the fridge.</think><action>go to fridge 1</action>"
    pd.DataFrame({"messages": [[user, {"role": "assistant", "content": answer}]]}).to_parquet(tmp_path / "chat.parquet")
    expected = MultiTurnSFTDataset(str(tmp_path / "chat.parquet"), tokenizer, NO_PADDING)[0]
    # The agent loop's view of the same step: the templated user turn up to the assistant header, then the model's
    # answer and EOS (ChatML's template adds one "\n" after EOS, which a generation never holds).
    prompt_ids = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=True, return_dict=False)
    response_ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
    pd.DataFrame({"prompt_ids": [prompt_ids], "response_ids": [response_ids]}).to_parquet(tmp_path / "ids.parquet")
    item = PromptResponseDataset(str(tmp_path / "ids.parquet"), tokenizer, NO_PADDING)[0]

    assert item.keys() == expected.keys() == {"input_ids", "position_ids", "loss_mask"}
    assert tokenizer.decode(expected["input_ids"][len(item["input_ids"]):]) == "\n"
    for key, value in item.items():
        assert value.dtype == expected[key].dtype and value.dim() == 1
        assert torch.equal(value, expected[key][: len(value)])
    assert item["loss_mask"].sum() == len(response_ids)


def test_config_names_our_dataset_and_it_reads_sft_rows(sft_rows, molmo2_dir):
    config = sft_config(f"model.path={molmo2_dir}", f"data.train_files={sft_rows / 'train.parquet'}",
                        f"data.val_files={sft_rows / 'valid_seen.parquet'}")
    model_config = omega_conf_to_dataclass(config.model)
    dataset = create_sft_dataset(config.data.train_files, config.data, model_config.tokenizer, model_config.processor)
    assert isinstance(dataset, PromptResponseDataset) and isinstance(model_config.processor, Molmo2Processor)
    rows = pd.read_parquet(sft_rows / "train.parquet")
    assert len(dataset) == len(rows)
    for index in (0, len(rows) - 1):
        item, row = dataset[index], rows.iloc[index]
        prompt, response = list(row["prompt_ids"]), list(row["response_ids"])
        assert item["input_ids"].tolist() == prompt + response
        assert item["loss_mask"].tolist() == [0] * len(prompt) + [1] * len(response)
        assert item["position_ids"].tolist() == list(range(len(prompt) + len(response)))
    # verl's collator packs them as the trainer's engine reads them: jagged tensors, one row per sample.
    batch = SFTTensorCollator(config.data.pad_mode)([dataset[0], dataset[1]])
    assert batch["input_ids"].is_nested and batch["input_ids"].offsets().diff().tolist() == [
        len(dataset[0]["input_ids"]), len(dataset[1]["input_ids"])]
    # verl's trainer builds its configs from these sections; every checkpoint holds the HF model (the RL trainer
    # and vLLM load it from huggingface/).
    engine, optim = omega_conf_to_dataclass(config.engine), omega_conf_to_dataclass(config.optim)
    assert (engine.strategy, optim.lr_scheduler_type) == ("fsdp", "cosine")
    assert "hf_model" in omega_conf_to_dataclass(config.checkpoint).save_contents


@pytest.mark.parametrize("truncation, kept", [("left", slice(-8, None)), ("right", slice(None, 8))])
def test_long_sequences_follow_data_truncation(tmp_path, truncation, kept):
    pd.DataFrame({"prompt_ids": [list(range(10))], "response_ids": [[100, 101]]}).to_parquet(tmp_path / "r.parquet")
    config = OmegaConf.create({"pad_mode": "no_padding", "max_length": 8, "truncation": truncation})
    item = PromptResponseDataset(str(tmp_path / "r.parquet"), None, config)[0]
    assert item["input_ids"].tolist() == [*range(10), 100, 101][kept]
    assert item["loss_mask"].tolist() == ([0] * 10 + [1, 1])[kept]
    assert item["position_ids"].tolist() == list(range(8))


def test_bad_inputs_are_refused_naming_them(sft_rows, tmp_path):
    rows = str(sft_rows / "train.parquet")
    too_short = OmegaConf.create({"pad_mode": "no_padding", "max_length": 16, "truncation": "error"})
    with pytest.raises(ValueError, match=r"row 0 \(game .*game.tw-pddl, step 0\) has \d+ tokens, more than "
                                         r"data.max_length=16"):
        PromptResponseDataset(rows, None, too_short)[0]
    with pytest.raises(ValueError, match="data.pad_mode='right'.* must be 'no_padding'"):
        PromptResponseDataset(rows, None, OmegaConf.create({"pad_mode": "right"}))
    pd.DataFrame({"messages": [[]]}).to_parquet(tmp_path / "chat.parquet")
    with pytest.raises(ValueError, match=r"chat.parquet lacks the columns \['prompt_ids', 'response_ids'\]"):
        PromptResponseDataset(str(tmp_path / "chat.parquet"), None, NO_PADDING)
    assert len(PromptResponseDataset([rows, rows], None, NO_PADDING, max_samples=3)) == 3


def test_launch_script_composes_verls_sft_config(tmp_path):
    env = {**os.environ, "MODEL_PATH": "/models/small", "DATA_DIR": str(tmp_path / "data"), "DRY_RUN": "1",
           "MAX_PROMPT": "1024", "MAX_RESPONSE": "256", "EPOCHS": "3", "PYTHON": sys.executable,
           "PYTHONPATH": str(REPO)}
    done = subprocess.run(["bash", str(SCRIPT), "trainer.total_epochs=4"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    config = yaml.safe_load(done.stdout)
    assert config["model"]["path"] == "/models/small"
    assert config["data"]["train_files"] == str(tmp_path / "data" / "sft" / "train.parquet")
    assert config["data"]["val_files"] == str(tmp_path / "data" / "sft" / "valid_seen.parquet")
    assert config["data"]["custom_cls"] == {"path": "pkg://molmo_agent.integrations.verl.sft_dataset",
                                            "name": "PromptResponseDataset"}
    assert config["data"]["max_length"] == 1280 and config["data"]["pad_mode"] == "no_padding"
    assert "hf_model" in config["checkpoint"]["save_contents"]
    assert config["trainer"]["total_epochs"] == 4  # the caller's override wins over the script's EPOCHS
    assert not (tmp_path / "data").exists() and list(tmp_path.iterdir()) == []  # a dry run writes nothing


@pytest.mark.slow
def test_verls_sft_trainer_runs_on_cpu_and_saves_a_loadable_molmo2(sft_rows, molmo2_dir, tmp_path):
    out = tmp_path / "checkpoints"
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "cpu_sft_trainer.py"), f"model.path={molmo2_dir}",
         f"data.train_files={sft_rows / 'train.parquet'}", f"data.val_files={sft_rows / 'valid_seen.parquet'}",
         "data.train_batch_size=4", "data.val_max_samples=4", "data.num_workers=0", "data.max_token_len_per_gpu=2048",
         "trainer.total_training_steps=2", "trainer.device=cpu", f"trainer.default_local_dir={out}",
         "engine.strategy=fsdp2", "engine.use_torch_compile=False"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "step:2 - val/loss:" in done.stdout
    saved = out / "global_step_2" / "huggingface"
    assert isinstance(AutoProcessor.from_pretrained(saved), Molmo2Processor)
    trained = AutoModelForImageTextToText.from_pretrained(saved)
    initial = AutoModelForImageTextToText.from_pretrained(molmo2_dir)
    assert not torch.equal(trained.lm_head.weight.float(), initial.lm_head.weight.float())  # two updates landed
