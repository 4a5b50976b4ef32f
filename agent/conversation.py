"""One conversation with the agent: send a message or answer a confirmation, get back what happened.

A UI (the terminal chat, Chainlit) holds a `Conversation` per thread and renders its `Turn`s: the new
messages, the tool calls, the artifact files, and a pending confirmation if the graph paused for one.
A message sent while a confirmation is pending answers it when it reads as yes or no; anything else
declines it and is then handled as a new message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.types import Command
from pydantic import BaseModel, Field

from agent.artifacts import artifact_paths
from agent.confirm import parse_answer
from agent.context import AgentContext
from agent.graph import AgentGraph


class TurnMessage(BaseModel):
    """A message of a turn, as a UI shows it."""

    role: Literal["user", "assistant", "tool"]
    content: str
    name: str | None = None
    #: For a tool message: the id of the call it answers.
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    status: str | None = None
    artifacts: list[dict[str, Any]] = Field(default_factory=list)


class Turn(BaseModel):
    """What one exchange produced."""

    thread: str
    messages: list[TurnMessage] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    #: Paths of the files the tools produced (exports, tables, pictures).
    artifacts: list[str] = Field(default_factory=list)
    #: Every artifact with its kind and title (cards and small documents have no path).
    artifact_details: list[dict[str, Any]] = Field(default_factory=list)
    #: The confirmation the graph waits for ({"kind": "confirm", "action", "question", "estimate"}).
    interrupt: dict[str, Any] | None = None

    @property
    def reply(self) -> str:
        """The assistant's last words in this turn."""
        said = [m.content for m in self.messages if m.role == "assistant" and m.content]
        return said[-1] if said else ""

    def extend(self, later: Turn) -> Turn:
        """This turn followed by a later one in the same thread."""
        return Turn(
            thread=self.thread,
            messages=[*self.messages, *later.messages],
            tool_calls=[*self.tool_calls, *later.tool_calls],
            artifacts=[*self.artifacts, *later.artifacts],
            artifact_details=[*self.artifact_details, *later.artifact_details],
            interrupt=later.interrupt,
        )


def _content(message: AnyMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


def _turn_message(message: AnyMessage) -> TurnMessage | None:
    if isinstance(message, HumanMessage):
        return TurnMessage(role="user", content=_content(message))
    if isinstance(message, AIMessage):
        calls = [{"name": c["name"], "args": c["args"], "id": c.get("id")} for c in message.tool_calls]
        return TurnMessage(role="assistant", content=_content(message), tool_calls=calls)
    if isinstance(message, ToolMessage):
        artifacts = message.artifact if isinstance(message.artifact, list) else []
        return TurnMessage(
            role="tool",
            content=_content(message),
            name=message.name,
            tool_call_id=message.tool_call_id,
            status=message.status,
            artifacts=artifacts,
        )
    return None


#: Called with each message as the graph produces it (a UI shows tool steps live).
OnMessage = Callable[[TurnMessage], Awaitable[None]]


def _update_messages(update: Any) -> list[AnyMessage]:
    """The messages a node's update adds (a tool node's Command updates come as a list of dicts)."""
    items = update if isinstance(update, list) else [update]
    found: list[AnyMessage] = []
    for item in items:
        if isinstance(item, dict):
            found.extend(m for m in item.get("messages", []) if isinstance(m, AIMessage | ToolMessage))
    return found


class Conversation:
    """A thread of the agent graph, run with one context."""

    def __init__(self, graph: AgentGraph, context: AgentContext, thread_id: str) -> None:
        self.graph = graph
        self.context = context
        self.thread_id = thread_id

    @property
    def config(self) -> RunnableConfig:
        """The run config naming this thread."""
        return {"configurable": {"thread_id": self.thread_id}, "recursion_limit": 50}

    async def messages(self) -> list[AnyMessage]:
        """Every message of the thread so far."""
        state = await self.graph.aget_state(self.config)
        return list(state.values.get("messages", []))

    async def pending(self) -> dict[str, Any] | None:
        """The confirmation the thread waits for, or None."""
        state = await self.graph.aget_state(self.config)
        return dict(state.interrupts[0].value) if state.interrupts else None

    async def project(self) -> str | None:
        """The project the conversation works on (the thread's, else the context's)."""
        state = await self.graph.aget_state(self.config)
        chosen = state.values.get("project") if state.values else None
        return str(chosen) if chosen else self.context.project

    async def send(
        self, text: str, *, project: str | None = None, on_message: OnMessage | None = None
    ) -> Turn:
        """Send a person's message (an answer, when a confirmation is pending and it says yes or no)."""
        if await self.pending() is not None:
            answer = parse_answer(text)
            if answer is not None:
                return await self.answer(answer, on_message=on_message)
            declined = await self.answer(False, on_message=on_message)
            return declined.extend(await self.send(text, project=project, on_message=on_message))
        payload: dict[str, Any] = {"messages": [HumanMessage(content=text)]}
        if project:
            payload["project"] = project
        return await self._run(payload, on_message)

    async def answer(self, confirmed: bool, *, on_message: OnMessage | None = None) -> Turn:
        """Answer the pending confirmation(s) with yes or no (nothing pending: an empty turn)."""
        state = await self.graph.aget_state(self.config)
        if not state.interrupts:
            return Turn(thread=self.thread_id)
        if len(state.interrupts) == 1:
            resume: Any = confirmed
        else:
            resume = {item.id: confirmed for item in state.interrupts}
        return await self._run(Command(resume=resume), on_message)

    async def _run(self, payload: Any, on_message: OnMessage | None = None) -> Turn:
        before = len(await self.messages())
        if on_message is None:
            await self.graph.ainvoke(payload, self.config, context=self.context)
        else:
            async for update in self.graph.astream(
                payload, self.config, context=self.context, stream_mode="updates"
            ):
                for node_update in update.values():
                    for message in _update_messages(node_update):
                        shown = _turn_message(message)
                        if shown is not None:
                            await on_message(shown)
        state = await self.graph.aget_state(self.config)
        new = list(state.values.get("messages", []))[before:]
        turn = Turn(thread=self.thread_id)
        for message in new:
            shown = _turn_message(message)
            if shown is None:
                continue
            turn.messages.append(shown)
            turn.tool_calls.extend(shown.tool_calls)
            turn.artifact_details.extend(shown.artifacts)
            turn.artifacts.extend(artifact_paths(shown.artifacts))
        turn.interrupt = dict(state.interrupts[0].value) if state.interrupts else None
        return turn
