"""The agent graph: a model node that answers or calls tools, and a tool node that runs each call.

    START → agent ─(tool calls: one Send per call)→ tools → agent … → END

Each tool call is its own task (`Send("tools", [call])`), so when one of them pauses for a confirmation,
the calls that already finished keep their results and are not run again on resume. The chat model is the
configured one (`tools.llm.build_chat_model`, the agent model name) or, without a model, the command model;
slash commands always go to the command model, so they are exact and never cost a call.

Build it with `build_graph(context, checkpointer=...)` and pass the same context to every run
(`graph.ainvoke(..., context=context)`); `agent.conversation.Conversation` does both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import httpx
import openai
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.runnables import Runnable
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode
from langgraph.runtime import Runtime
from langgraph.types import Send

from agent.command_model import CommandModel
from agent.context import AgentContext
from agent.prompts import system_prompt
from agent.state import AgentState
from agent.tools import agent_tools, tool_error_message

#: Messages of the conversation sent to the model at most (older ones stay in the checkpoint).
HISTORY_MESSAGES = 40
#: Tokens the agent model may answer with.
AGENT_MAX_OUTPUT_TOKENS = 1024
#: Rounds of tool calls in one turn before the agent stops and says so (a model that never stops calling
#: tools, e.g. a server that forces a tool call on every request, must not loop until the recursion limit).
MAX_TOOL_ROUNDS = 8

AgentGraph = CompiledStateGraph[AgentState, AgentContext, Any, Any]


def default_chat_model(context: AgentContext) -> BaseChatModel:
    """The configured chat model (LABELPILOT_AGENT_MODEL, else the labeling model), or the command model."""
    from tools.llm import ModelSettings, build_chat_model, is_configured

    settings = context.settings
    if not is_configured(settings):
        return CommandModel()
    model_settings = ModelSettings.from_settings(
        settings,
        model=settings.agent_model or settings.label_model,
        params={"max_output_tokens": AGENT_MAX_OUTPUT_TOKENS},
    )
    return build_chat_model(model_settings, http_async_client=context.http_async_client, max_retries=2)


def recent_messages(messages: Sequence[AnyMessage], limit: int = HISTORY_MESSAGES) -> list[AnyMessage]:
    """The newest messages, starting at a person's message so no tool result loses its tool call."""
    if len(messages) <= limit:
        return list(messages)
    start = len(messages) - limit
    while start < len(messages) and not isinstance(messages[start], HumanMessage):
        start += 1
    return list(messages[start:]) if start < len(messages) else list(messages[-1:])


def tool_rounds(messages: Sequence[BaseMessage]) -> int:
    """How many times the model called tools since the person's last message."""
    rounds = 0
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            break
        if isinstance(message, AIMessage) and message.tool_calls:
            rounds += 1
    return rounds


def _is_command(messages: Sequence[BaseMessage]) -> bool:
    """Whether the turn started with a slash command (the command model answers the whole turn)."""
    last = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
    return last is not None and isinstance(last.content, str) and last.content.lstrip().startswith("/")


def model_failure_text(error: Exception) -> str:
    """What the person reads when the chat model itself cannot be reached or refuses."""
    from tools.llm import to_model_call_error

    failure = to_model_call_error(error)
    text = f"I could not reach the chat model: {failure.message}."
    if failure.hint:
        text += f" {failure.hint[0].upper()}{failure.hint[1:]}."
    return text + " Slash commands (/help) work without it."


def build_graph(
    context: AgentContext,
    *,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    chat_model: BaseChatModel | None = None,
) -> AgentGraph:
    """Build the agent: `chat_model` if given, else the configured model, else the command model."""
    tools = agent_tools()
    model = chat_model if chat_model is not None else default_chat_model(context)
    bound: Runnable[Any, BaseMessage] = model.bind_tools(tools)
    commands: Runnable[Any, BaseMessage] = CommandModel().bind_tools(tools)

    async def call_model(state: AgentState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
        from tools.llm import is_configured

        messages = state["messages"]
        project = state.get("project") or runtime.context.project
        settings = runtime.context.settings
        labeling = settings.label_model if is_configured(settings) else "none (offline mode)"
        prompt = system_prompt(project=project, model=labeling)
        if tool_rounds(messages) >= MAX_TOOL_ROUNDS:
            stop = (
                f"I stopped after {MAX_TOOL_ROUNDS} rounds of tool calls without reaching an answer. Tell me "
                "what you need in other words, or use a command (/help)."
            )
            return {"messages": [AIMessage(content=stop)]}
        chosen = commands if _is_command(messages) else bound
        try:
            reply = await chosen.ainvoke([SystemMessage(content=prompt), *recent_messages(messages)])
        except (openai.APIError, httpx.HTTPError) as exc:
            reply = AIMessage(content=model_failure_text(exc))
        if isinstance(reply, AIMessage) and reply.invalid_tool_calls and not reply.tool_calls:
            problems = "; ".join(
                str(call.get("error") or call.get("name")) for call in reply.invalid_tool_calls
            )
            text = f"{reply.content or ''}\n(The model sent a tool call that could not be read: {problems}.)"
            reply = AIMessage(content=text.strip())
        return {"messages": [reply]}

    def route(state: AgentState) -> list[Send] | Literal["__end__"]:
        last = state["messages"][-1]
        if isinstance(last, AIMessage) and last.tool_calls:
            return [Send("tools", [call]) for call in last.tool_calls]
        return "__end__"

    graph = StateGraph(AgentState, context_schema=AgentContext)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=tool_error_message))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, ["tools", END])
    graph.add_edge("tools", "agent")
    return graph.compile(checkpointer=checkpointer, name="labelpilot")
