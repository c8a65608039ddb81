"""The recipe's SFT checkpoint is the saved epoch with the lowest validation loss, never simply the last."""
import json

import pytest

from molmo_agent.integrations.verl.sft_select import main, select

LOG = "\n".join([
    "step:1 - train/loss:9.1 - train/lr:1e-05",
    "step:19 - val/loss:4.55",
    "step:38 - val/loss:1.85",
    "step:57 - val/loss:1.49",
    "step:76 - val/loss:1.62",  # overfitting from here
    "step:95 - val/loss:1.49",  # a tie: the earlier epoch wins
])


def save(root, *steps):
    for step in steps:
        folder = root / f"global_step_{step}" / "huggingface"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")


def test_the_lowest_validation_loss_wins_and_ties_go_to_the_earlier_epoch(tmp_path):
    save(tmp_path, 19, 38, 57, 76, 95)
    selection = select(LOG, tmp_path)
    assert (selection["step"], selection["epoch"], selection["val_loss"]) == (57, 3, 1.49)
    assert selection["path"] == str(tmp_path / "global_step_57" / "huggingface")
    assert selection["val_losses"] == {19: 4.55, 38: 1.85, 57: 1.49, 76: 1.62, 95: 1.49}


def test_only_saved_steps_count(tmp_path):
    save(tmp_path, 76, 95)
    assert select(LOG, tmp_path)["step"] == 95


def test_command_writes_the_selection_and_refuses_a_run_without_saved_epochs(tmp_path, capsys):
    (tmp_path / "sft.log").write_text(LOG)
    save(tmp_path / "ckpt", 38)
    main([str(tmp_path / "sft.log"), str(tmp_path / "ckpt"), "--out", str(tmp_path / "selection.json")])
    assert capsys.readouterr().out.strip().endswith("global_step_38/huggingface")
    assert json.loads((tmp_path / "selection.json").read_text())["step"] == 38
    with pytest.raises(SystemExit, match="save with trainer.save_freq=after_each_epoch"):
        main([str(tmp_path / "sft.log"), str(tmp_path / "empty"), "--out", str(tmp_path / "x.json")])
