"""The agent's state: the conversation and a few ids, nothing bulky (it is checkpointed after every step)."""

from __future__ import annotations

from typing import Annotated, NotRequired, TypeVar

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

# typing_extensions' TypedDict: pydantic (used by tool argument schemas that see the state) needs it on 3.11.
from typing_extensions import TypedDict

T = TypeVar("T")


def latest(_old: T, new: T) -> T:
    """Keep the newest value (tools running in parallel may each set one in the same step)."""
    return new


class AgentState(TypedDict):
    """Messages, the project the conversation is about, and ids it refers back to."""

    messages: Annotated[list[AnyMessage], add_messages]
    #: The project chosen in this conversation (a returning user continues with it).
    project: NotRequired[Annotated[str | None, latest]]
    #: External ids of the tasks last shown as numbered cards: "#3" means the third of them.
    shown_tasks: NotRequired[Annotated[list[str], latest]]
    #: The bulk labeling job started last (what "how is it going?" and "cancel" refer to).
    job_id: NotRequired[Annotated[int | None, latest]]
