"""verl wiring: the only package that imports verl. `register()` runs when verl loads our plugin."""
import logging
import os


def show_our_logs() -> None:
    """Keep the `molmo_agent` loggers' records from MOLMO_AGENT_LOGGING_LEVEL (default INFO) up, on stderr where the
    process has no handler. Otherwise the root logger's level (WARNING, as verl's import configures it in Ray's
    workers) drops our once-per-process notes: which engine scores which positions, the environment pool."""
    package = logging.getLogger("molmo_agent")
    if package.level == logging.NOTSET:
        package.setLevel(os.environ.get("MOLMO_AGENT_LOGGING_LEVEL", "INFO"))
    if not (package.handlers or logging.getLogger().handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:%(asctime)s:%(name)s: %(message)s"))
        package.addHandler(handler)


def register() -> None:
    """Register our components in verl's registries (and Molmo2 with transformers) and replace verl's per-token
    log-prob loop, its entropy, its row selection, micro-batch split and output assembly of nested tensors and its
    per-sample response rows; idempotent."""
    show_our_logs()
    from molmo_agent.integrations.verl import (advantage, engine, entropy, flops, logprobs, micro_batches,
                                              response_columns, row_select)
    from molmo_agent.models import molmo2

    advantage.register_estimators()
    flops.register_flops()
    logprobs.patch_verl()
    entropy.patch_verl()
    row_select.patch_verl()
    micro_batches.patch_verl()
    response_columns.patch_verl()
    engine.register_engine()
    # Importing registers: the V1 trainer `agent_sync` and the agent loop `env_agent` (verl's registries).
    from molmo_agent.integrations.verl import agent_loop, trainer  # noqa: F401
    molmo2.register()
    from molmo_agent.integrations.verl import processor

    processor.install()  # verl's hf_processor -> ours, which also knows Molmo2


# verl registers us when it is first imported (its `verl.plugins` entry point). Import it here, after `register`
# exists, so that entering this package first (e.g. `from molmo_agent.integrations.verl import steps`) loads verl
# and our registration in that order; otherwise the registration would import this package's modules while one of
# them was still half-imported, fail, and verl would hide the failure.
import verl  # noqa: E402,F401
