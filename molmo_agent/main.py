"""`python -m molmo_agent.main [--dry-run] [hydra overrides]`: verl's run_ppo with our config, checks and V1 task
runner.

The config is molmo_agent/config/alfworld_gigpo.yaml (verl's ppo_trainer.yaml plus the environment, the agent
loop and GiGPO); pick another with `--config-name`. The trainer, agent loop and estimator are registered in
verl's registries when verl imports our plugin, in this process and in every Ray worker.

Every check (ours, then verl's) runs before Ray starts; a bad config exits with status 1 and one line naming the
knob. `--dry-run` runs the same checks, prints the resolved config on stdout and exits: nothing starts and
nothing is written (no Hydra output folder).
"""
import contextlib
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

from molmo_agent.integrations.verl.text_only import serve_text_only
from molmo_agent.integrations.verl.validate import validate_training_config

DRY_RUN_FLAG = "--dry-run"
# Hydra's run writes an output folder and a log file; a dry run keeps the working directory as it was.
DRY_RUN_HYDRA_OVERRIDES = ("hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none",
                           "hydra/hydra_logging=none")

hydra_main = hydra.main(config_path="config", config_name="alfworld_gigpo", version_base=None)


def check_config(config: DictConfig) -> None:
    """The device and text-only serving filled in, then our checks and verl's; a bad config ends the process with
    its one error (exit status 1)."""
    auto_set_device(config)
    try:
        serve_text_only(config)
        validate_training_config(config)
        validate_config(config=config, use_reference_policy=need_reference_policy(config),
                        use_critic=need_critic(config))
    except ValueError as error:
        raise SystemExit(f"bad config: {error}") from None


@hydra_main
def main(config: DictConfig) -> None:
    check_config(config)
    # verl hands ray_kwargs to ray.init unresolved: without this, workers would see "${oc.env:...}" as values
    OmegaConf.resolve(config)
    run_ppo(config, task_runner_class=TaskRunnerV1)


@hydra_main
def dry_run(config: DictConfig) -> None:
    with contextlib.redirect_stdout(sys.stderr):  # verl's checks print; stdout carries only the config
        check_config(config)
    print(OmegaConf.to_yaml(config, resolve=True), end="")


if __name__ == "__main__":
    if DRY_RUN_FLAG in sys.argv[1:]:
        sys.argv = [sys.argv[0], *DRY_RUN_HYDRA_OVERRIDES, *(arg for arg in sys.argv[1:] if arg != DRY_RUN_FLAG)]
        dry_run()
    else:
        main()
