"""The SFT checkpoint with the lowest validation loss: how the learning recipe fixes the SFT length.

    python -m molmo_agent.integrations.verl.sft_select SFT_LOG CHECKPOINTS --out SELECTION.json

verl's SFT trainer logs `val/loss` on the validation rows (valid_seen) after each epoch and, with
`trainer.save_freq=after_each_epoch`, saves each epoch's model under CHECKPOINTS/global_step_<N>/huggingface.
This picks the saved step whose validation loss is lowest (the earlier one on a tie), prints its huggingface/
folder and writes SELECTION.json: {"step", "epoch", "val_loss", "val_losses": {step: loss}, "path"}.
"""
import argparse
import json
import sys
from pathlib import Path

from molmo_agent.integrations.verl.eval_report import logged_steps

VAL_LOSS = "val/loss"


def select(log: str, checkpoints: Path) -> dict:
    """The selection record of the lowest-validation-loss step that has a saved huggingface/ folder."""
    losses = {step: metrics[VAL_LOSS] for step, metrics in sorted(logged_steps(log).items()) if VAL_LOSS in metrics}
    saved = {step: loss for step, loss in losses.items()
             if (checkpoints / f"global_step_{step}" / "huggingface" / "config.json").is_file()}
    if not saved:
        raise ValueError(f"no step with a {VAL_LOSS} in the log has a checkpoint under {checkpoints} "
                         f"(validated steps: {sorted(losses)}): save with trainer.save_freq=after_each_epoch")
    step = min(saved, key=lambda s: (saved[s], s))
    steps_per_epoch = min(losses)  # validation runs after each epoch, so the first validated step is one epoch
    return {"step": step, "epoch": step // steps_per_epoch, "val_loss": saved[step], "val_losses": losses,
            "path": str(checkpoints / f"global_step_{step}" / "huggingface")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="the SFT run's console log")
    parser.add_argument("checkpoints", type=Path, help="the SFT run's trainer.default_local_dir")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        selection = select(args.log.read_text(errors="replace"), args.checkpoints)
    except ValueError as error:
        sys.exit(f"{args.log}: {error}")
    args.out.write_text(json.dumps(selection, indent=1) + "\n")
    print(selection["path"])


if __name__ == "__main__":
    main()
