"""Parse each of TextWorld's PDDL grammar strings once per process, not at every step, and copy its derivation
contexts shallowly.

At every step TextWorld's PDDL env derives the text of each admissible command and of the feedback through its
context-sensitive grammar, and each derivation re-parses (with tatsu) the same few hundred strings: command
templates, feedback rules, rule conditions. Both parsers are pure functions of their string, so we memoize
them. With parsing gone, most of a step's CPU is the grammar deep-copying each derivation's context (the
variables bound so far and their mapping) thousands of times a step: a derivation only adds bindings to its
own copy and never changes a bound object (an entity's info, a placeholder's variable), so copies of the two
dicts do the same. The same text comes out (tests/test_alfworld_session.py compares against the plain engine),
for a fraction of the CPU (bench/alfworld_env.py).

`install()` swaps the two parsers and the context copy of this process; every PDDL env in the process gains.
"""
import copy
import functools

import textworld.envs.pddl.textgen as textgen
from textworld.logic import Rule

_installed = False


def install() -> None:
    """Memoize TextWorld's grammar-symbol and conjunctive-query parsers in this process (idempotent)."""
    global _installed
    if _installed:
        return
    parse_symbols = functools.lru_cache(maxsize=None)(textgen._parse_and_convert)

    def parse_symbols_copy(text: str, **options):
        # The grammar writes each derivation's context into the symbols it is given: hand out copies.
        return copy.deepcopy(parse_symbols(text, **options))

    textgen._parse_and_convert = parse_symbols_copy
    # A parsed query (a Rule) is only read by the grammar, so one shared instance per string is safe.
    Rule.parse_conjunctive_query = classmethod(functools.lru_cache(maxsize=None)(Rule.parse_conjunctive_query.__func__))
    textgen.copy_context = copy_context
    _installed = True


def copy_context(context: dict) -> dict:
    """TextWorld's `textgen.copy_context` without its deep copies: new binding dicts, the bound objects shared."""
    return {**context, "variables": dict(context["variables"]), "mapping": dict(context["mapping"])}


def installed() -> bool:
    """Whether `install()` ran in this process."""
    return _installed
