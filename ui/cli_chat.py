"""`labelpilot chat`: talk to the agent in the terminal, or send one message from a script.

Interactive by default (confirmations asked in the terminal, the last conversation continued). With
`-m TEXT` one turn is run and printed (`--json`: messages, tool calls, artifact paths and a pending
confirmation); a pending confirmation is answered by a later `labelpilot chat --thread T -m yes`.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from tools.settings import Settings
from ui.cli_common import JsonOpt, ProjectOpt, app, cli_errors, emit_json, err, open_db, out


def _user() -> str:
    """Who is chatting: $LABELPILOT_USER, else the login name."""
    try:
        found = os.environ.get("LABELPILOT_USER") or getpass.getuser()
    except (OSError, KeyError):  # no login name in some containers
        found = ""
    return found or "local"


def _render(turn: Any) -> None:
    """Print a turn for people: tool calls (dim), the assistant's words, files, a pending question."""
    for message in turn.messages:
        if message.role == "assistant":
            for call in message.tool_calls:
                out.print(Text(f"→ {call['name']} {call['args'] or ''}", style="dim"))
            if message.content:
                out.print(Text(message.content))
        elif message.role == "tool" and message.status == "error":
            out.print(Text(f"({message.name} failed)", style="dim red"))
    for path in turn.artifacts:
        out.print(Text(f"file: {path}", style="cyan"))


def _question(turn: Any) -> str:
    return str((turn.interrupt or {}).get("question") or "Start?")


async def _one_turn(
    settings: Settings, *, project: str | None, thread: str | None, message: str, yes: bool, as_json: bool
) -> None:
    from agent.context import AgentContext
    from agent.conversation import Conversation
    from agent.graph import build_graph
    from agent.memory import new_thread_id, open_checkpointer, remember_thread

    user = _user()
    db = open_db()
    context = AgentContext(settings=settings, db=db, project=project, user=user, foreground_s=None)
    try:
        async with open_checkpointer(settings) as saver:
            conversation = Conversation(
                build_graph(context, checkpointer=saver), context, thread or new_thread_id(user)
            )
            turn = await conversation.send(message, project=project)
            while turn.interrupt is not None and yes:
                turn = turn.extend(await conversation.answer(True))
            remember_thread(settings, user, conversation.thread_id)
    finally:
        await context.jobs.shutdown()
        db.dispose()
    if as_json:
        emit_json({**turn.model_dump(mode="json"), "reply": turn.reply})
        return
    _render(turn)
    if turn.interrupt is not None:
        out.print(Text(_question(turn), style="bold yellow"))
        out.print(
            f"Answer with: labelpilot chat --thread {escape(turn.thread)} -m yes  (or -m no)", highlight=False
        )


async def _interactive(
    settings: Settings, *, project: str | None, thread: str | None, new: bool, yes: bool
) -> None:
    from agent.context import AgentContext
    from agent.conversation import Conversation
    from agent.graph import build_graph
    from agent.memory import last_thread, new_thread_id, open_checkpointer, remember_thread
    from tools.llm import is_configured

    user = _user()
    db = open_db()
    context = AgentContext(settings=settings, db=db, project=project, user=user)
    chosen = thread or (None if new else last_thread(settings, user)) or new_thread_id(user)
    try:
        async with open_checkpointer(settings) as saver:
            graph = build_graph(context, checkpointer=saver)
            conversation = Conversation(graph, context, chosen)
            mode = (
                "model " + (settings.agent_model or settings.label_model)
                if is_configured(settings)
                else "offline commands"
            )
            out.print(
                f"[bold]labelpilot chat[/] ({escape(mode)}) — conversation {escape(chosen)}. "
                "/help for commands, /new for a new conversation, /quit to leave."
            )
            earlier = [m for m in await conversation.messages() if m.type == "ai" and m.content]
            if earlier:
                out.print(Text("Where we left off: " + str(earlier[-1].content)[:600], style="dim"))
            pending = await conversation.pending()
            turn = None
            if pending is not None:
                out.print(
                    Text(str(pending.get("question") or "A confirmation is pending."), style="bold yellow")
                )
            while True:
                if pending is not None:
                    answer = yes or await asyncio.to_thread(typer.confirm, "Your answer", default=False)
                    turn = await conversation.answer(bool(answer))
                    _render(turn)
                    pending = turn.interrupt
                    if pending is not None:
                        out.print(Text(_question(turn), style="bold yellow"))
                    continue
                try:
                    text = (await asyncio.to_thread(input, "you> ")).strip()
                except EOFError:
                    break
                if not text:
                    continue
                if text in ("/quit", "/exit", "/q"):
                    break
                if text == "/new":
                    conversation = Conversation(graph, context, new_thread_id(user))
                    remember_thread(settings, user, conversation.thread_id)
                    out.print(f"New conversation {escape(conversation.thread_id)}.")
                    continue
                turn = await conversation.send(text, project=project)
                remember_thread(settings, user, conversation.thread_id)
                _render(turn)
                pending = turn.interrupt
                if pending is not None:
                    out.print(Text(_question(turn), style="bold yellow"))
    finally:
        running = context.jobs.running()
        if running:
            err.print(
                f"Stopping job(s) {', '.join(map(str, running))}: what is labeled is kept; "
                "start labeling again to resume."
            )
        await context.jobs.shutdown()
        db.dispose()


@app.command("chat")
def chat_command(
    project: ProjectOpt = None,
    thread: Annotated[
        str | None,
        typer.Option("--thread", "-t", help="Continue this conversation (default: a new one with -m)."),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Send one message, print the answer and exit.")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm cost/time estimates without asking.")
    ] = False,
    new: Annotated[bool, typer.Option("--new", help="Interactive: start a new conversation.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Talk to the labelpilot agent: every capability through conversation (offline: slash commands).

    Interactive by default, continuing your last conversation. With -m, one message is answered and
    printed (--json: messages, tool calls, artifact paths and a pending confirmation, which a later
    `labelpilot chat --thread T -m yes` answers).
    """
    settings = Settings.from_env()
    if as_json and message is None:
        err.print("--json needs a message: labelpilot chat -m TEXT --json")
        raise typer.Exit(2)
    with cli_errors(as_json):
        if message is not None:
            asyncio.run(
                _one_turn(settings, project=project, thread=thread, message=message, yes=yes, as_json=as_json)
            )
        else:
            try:
                asyncio.run(_interactive(settings, project=project, thread=thread, new=new, yes=yes))
            except KeyboardInterrupt:
                err.print("Bye (your conversation is kept; `labelpilot chat` continues it).")
