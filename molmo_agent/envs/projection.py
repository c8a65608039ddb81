"""From the model's text to an environment action: `<think>…</think><action>…</action>` → "go to fridge 1".

Never raises: whatever the text (empty, huge, nested or repeated tags, markup inside the action), the answer
is a `ProjectedAction`, invalid with a reason when the text does not follow the format.
"""
import re
from collections.abc import Sequence
from dataclasses import dataclass

# No ALFWorld command comes near this; a longer "action" is text the model failed to close.
MAX_ACTION_CHARS = 200

_TAG = re.compile(r"</?(think|action)>", re.IGNORECASE)


@dataclass(frozen=True)
class ProjectedAction:
    """`action`: the normalized command (lower case, single spaces; "" when none could be read).
    `valid`: the text followed the format (and, when asked, named an admissible action).
    `reason`: why not, "" when valid."""

    action: str
    valid: bool
    reason: str = ""


def normalize(command: str) -> str:
    """Lower case, whitespace runs collapsed to one space, trimmed."""
    return " ".join(command.split()).lower()


def is_admissible(action: str, admissible: Sequence[str] | None) -> bool:
    """Whether `action` is one of the commands the environment listed (compared normalized); True where it lists
    none, as an environment without such a list accepts any text."""
    return admissible is None or normalize(action) in {normalize(command) for command in admissible}


def project_action(
    text: str,
    admissible: Sequence[str] | None = None,
    *,
    require_admissible: bool = False,
    require_think: bool = True,
) -> ProjectedAction:
    """Read the action from `text`.

    Valid when the text's tags are exactly <think></think><action></action> in that order (the think pair may
    be absent unless `require_think`), the action is non-empty, has no markup and at most `MAX_ACTION_CHARS`
    characters, and — with `require_admissible` — is one of `admissible` (compared normalized).
    """
    if not isinstance(text, str):
        return ProjectedAction("", False, "not_text")
    matches = list(_TAG.finditer(text))
    tags = [match.group(0).lower() for match in matches]
    if "<action>" not in tags or "</action>" not in tags:
        return ProjectedAction("", False, "missing_action_tags")
    if require_think and ("<think>" not in tags or "</think>" not in tags):
        return ProjectedAction("", False, "missing_think_tags")
    with_think = "<think>" in tags or "</think>" in tags
    if tags != (["<think>", "</think>"] if with_think else []) + ["<action>", "</action>"]:
        return ProjectedAction("", False, "repeated_or_misplaced_tags")
    raw = text[matches[-2].end() : matches[-1].start()]  # between the <action> and </action> just checked
    if len(raw) > MAX_ACTION_CHARS:
        return ProjectedAction("", False, "too_long")
    action = normalize(raw)
    if not action:
        return ProjectedAction("", False, "empty_action")
    if "<" in action or ">" in action:
        return ProjectedAction(action, False, "markup_in_action")
    if require_admissible and not is_admissible(action, admissible or ()):
        return ProjectedAction(action, False, "not_admissible")
    return ProjectedAction(action, True)

