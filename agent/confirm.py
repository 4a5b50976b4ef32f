"""Confirmation before anything that spends money or takes long: a LangGraph interrupt with the estimate.

A tool computes its estimate (read-only), then calls `confirm`, which pauses the graph with
`{"kind": "confirm", "action", "question", "estimate"}`. The caller resumes it with
`Command(resume=answer)`: True/False, "yes"/"no", or {"confirmed": bool}. LangGraph re-runs the tool from
its start on resume, so everything before `confirm` must be free of side effects (estimates only), and what
follows must be safe to repeat (the engine resumes a job instead of starting it twice).
"""

from __future__ import annotations

import re
from typing import Any

from langgraph.types import interrupt

_YES = re.compile(
    r"^(y|yes|yeah|yep|ok|okay|sure|go ahead|confirm|confirmed|do it|proceed|please do)\b", re.IGNORECASE
)
_NO = re.compile(r"^(n|no|nope|stop|cancel|don'?t|do not|decline|not now|abort|wait)\b", re.IGNORECASE)
#: Words that make a "yes, ..." doubtful ("yes, but not now"): such an answer is not a yes.
_DOUBT = re.compile(r"\b(not|no|don'?t|wait|but|cancel|stop)\b", re.IGNORECASE)


def parse_answer(value: Any) -> bool | None:
    """Read a person's answer to a confirmation: True, False, or None when it is neither yes nor no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, dict):
        return parse_answer(value.get("confirmed"))
    if isinstance(value, str):
        text = value.strip()
        if _NO.match(text):
            return False
        if _YES.match(text):
            return None if _DOUBT.search(text) else True
    return None


def confirm(action: str, question: str, estimate: dict[str, Any]) -> bool:
    """Pause for the person's yes or no to `question` (with the estimate); True only for a clear yes."""
    answer = interrupt({"kind": "confirm", "action": action, "question": question, "estimate": estimate})
    return parse_answer(answer) is True
