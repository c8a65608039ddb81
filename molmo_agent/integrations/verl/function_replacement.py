"""Replacing a verl function by ours, where verl's callers look it up: one switch, one log line, idempotent.

verl's callers look most functions up in their defining module at each call, so replacing that module's attribute
reaches them; a module that bound the function by name at import is named too, and its attribute replaced alike.
"""
import logging
import os
from collections.abc import Callable, Sequence
from types import ModuleType


def replace_verl_function(modules: Sequence[ModuleType], name: str, ours: Callable, switch: str,
                          description: str) -> bool:
    """Make `<module>.<name>` our `ours` in each of `modules` (the defining module first), unless the environment
    variable `switch` is "0". Idempotent; logs `description` once per process on `ours`' module's logger. Returns
    whether ours is installed."""
    if os.environ.get(switch, "1") == "0":
        return False
    if any(getattr(module, name) is not ours for module in modules):
        for module in modules:
            setattr(module, name, ours)
        logging.getLogger(ours.__module__).info("verl's %s: %s (%s.%s; %s=0 keeps verl's)",
                                                name, description, modules[0].__name__, name, switch)
    return True
