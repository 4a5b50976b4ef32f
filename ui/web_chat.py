"""One browser chat: the agent conversation behind it, and how its turns are shown.

`WebChat` is created per Chainlit session (`ui/app.py` keeps it in the user session). It owns the database
handle, the conversation memory (checkpointer), the agent graph and its `Conversation`, and shows each turn:

- tool calls as collapsible steps, live, as the agent makes them;
- the reply with its artifacts: pictures inline, exports and tables as downloads, evaluation metrics,
  per-class scores, the version comparison table and a few wrong examples;
- items to label or review as cards, one per message, with a button per label (`ui.web_cards.Deck`);
- a confirmation (the labeling estimate) as Yes / No buttons; typing "yes" works too;
- a bulk job as a live progress message (done / failed / rate / ETA) with a Cancel button, updated in the
  background while the person keeps chatting.

Dropped files are previewed (first rows, proposed field mapping) and imported after a click.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shlex
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import chainlit as cl

from agent.context import AgentContext
from agent.conversation import Conversation, Turn, TurnMessage
from agent.graph import build_graph
from agent.memory import open_checkpointer
from tools.errors import LabelpilotError
from tools.labelspec import LabelSpec
from tools.projects import list_projects, project_summary
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.storage import Database
from ui import web_render as render
from ui.web_cards import Button, Deck

logger = logging.getLogger(__name__)

#: Action names (one callback each in ui/app.py).
CARD_ACTION = "card"
CONFIRM_ACTION = "confirm"
CANCEL_JOB_ACTION = "cancel_job"
IMPORT_ACTION = "import_file"
SAY_ACTION = "say"

#: Seconds a labeling tool waits for its job before the chat shows live progress instead.
FOREGROUND_S = 2.0
#: Seconds between two updates of a job's progress message.
PROGRESS_EVERY_S = 1.0
#: Characters of a tool's output shown in its step.
STEP_OUTPUT_CHARS = 4000
#: Seconds a closing chat waits for its running turn to end.
CLOSE_WAIT_S = 120.0
#: Wrong examples shown under an evaluation.
WRONG_EXAMPLES = 5


class Starter(NamedTuple):
    """A first step for one kind of user: a button on the greeting (and Chainlit's starter) that runs
    commands, on a demo project."""

    kind: str
    label: str
    message: str
    commands: list[str]
    project: str


STARTERS = [
    Starter(
        "Domain expert",
        "Expert: which summary is best for our reader?",
        "Show me 5 article summaries to judge",
        ["/use reader-preference", "/gt 5"],
        "reader-preference",
    ),
    Starter(
        "Engineer",
        "Engineer: how good is the $0 baseline?",
        "Evaluate the offline baseline on support intents",
        ["/use support-intents", "/eval baseline"],
        "support-intents",
    ),
    Starter(
        "Manager",
        "Manager: the labeled support intents as CSV",
        "Send me the support intents labeled so far as CSV",
        ["/use support-intents", "/export csv"],
        "support-intents",
    ),
]
STARTER_SCRIPTS = {starter.message: starter.commands for starter in STARTERS}

ItemCall = Callable[[Callable[[TurnMessage], Awaitable[None]]], Awaitable[Turn]]


async def say(content: str, **kwargs: Any) -> cl.Message:
    """Send an assistant message."""
    message = cl.Message(content=content, **kwargs)
    await message.send()  # type: ignore[no-untyped-call]
    return message


def action(name: str, label: str, payload: dict[str, Any], tooltip: str = "") -> cl.Action:
    """A button."""
    return cl.Action(name=name, label=label, payload=payload, tooltip=tooltip)


def say_button(label: str, text: str) -> cl.Action:
    """A button that sends `text` as if the person typed it."""
    return action(SAY_ACTION, label, {"text": text}, tooltip=text)


class PendingImport:
    """An uploaded file waiting for the person to confirm its mapping (changed with buttons, or by typing
    `fields=a,b label=c id=d sep=, project=name`)."""

    #: What a typed change may set.
    KEYS = ("fields", "label", "id", "sep", "project")

    def __init__(self, path: Path, preview: Any, project: str, new_project: bool) -> None:
        self.path = path
        self.preview = preview
        self.project = project
        self.new_project = new_project
        self.fields: list[str] = list(preview.fields)
        self.label_column: str | None = preview.label_column
        self.id_column: str | None = preview.id_column
        self.separator: str | None = preview.label_separator
        self.message: cl.Message | None = None

    def set_label(self, column: str | None) -> None:
        """Take labels from `column` (None: no label column); the old label column becomes an input field."""
        old = self.label_column
        if old and old not in self.fields and old != self.id_column:
            self.fields.append(old)
        self.label_column = column
        self.fields = [f for f in self.fields if f != column]
        self.separator = self.preview.label_separator if column == self.preview.label_column else None

    def change(self, text: str, existing: set[str]) -> None:
        """Apply a typed change such as `fields=a,b label=intent`; LabelValueError says what is wrong."""
        from tools.errors import LabelValueError

        columns = list(self.preview.columns)
        changes: dict[str, str] = {}
        for word in shlex.split(text):
            key, equals, value = word.partition("=")
            if not equals or key not in self.KEYS:
                raise LabelValueError(
                    f"'{word}' is not a mapping change",
                    hint="e.g. fields=message,subject label=intent id=ticket_id sep=, project=tickets "
                    f"(columns: {', '.join(columns)})",
                )
            changes[key] = value.strip()
        named = [c.strip() for c in changes.get("fields", "").split(",") if c.strip()]
        for column in [*named, changes.get("label") or "", changes.get("id") or ""]:
            if column and column not in columns:
                raise LabelValueError(
                    f"the file has no column '{column}'", hint="its columns: " + ", ".join(columns)
                )
        if "id" in changes:
            self.id_column = changes["id"] or None
            self.fields = [f for f in self.fields if f != self.id_column]
        if "label" in changes:
            self.set_label(changes["label"] or None)
        if "fields" in changes:
            if not named:
                raise LabelValueError("name at least one input field", hint="e.g. fields=message")
            self.fields = named
        if "sep" in changes:
            self.separator = changes["sep"] or None
        if changes.get("project"):
            from tools.projects import validate_project_name

            self.project = validate_project_name(changes["project"])
            self.new_project = self.project not in existing

    def command(self) -> str:
        """The /import command that imports the file with the confirmed mapping."""
        parts = ["/import", shlex.quote(str(self.path))]
        if self.fields:
            parts.append(shlex.quote("fields=" + ",".join(self.fields)))
        if self.label_column:
            parts.append(shlex.quote(f"label={self.label_column}"))
            if self.separator:
                parts.append(shlex.quote(f"sep={self.separator}"))
        if self.id_column:
            parts.append(shlex.quote(f"id={self.id_column}"))
        parts.append(shlex.quote(f"project={self.project}"))
        return " ".join(parts)

    def text(self) -> str:
        """The preview with the mapping as it stands."""
        guessed = self.label_column == self.preview.label_column
        preview = self.preview.model_copy(
            update={
                "label_column": self.label_column,
                "fields": self.fields,
                "id_column": self.id_column,
                "label_values": self.preview.label_values if guessed else [],
                "label_separator": self.separator,
            }
        )
        return (
            render.preview_text(preview, project=self.project, new_project=self.new_project)
            + "\n\nChange it with the buttons, or type e.g. `fields=message label=intent project=tickets`."
        )

    def actions(self) -> list[cl.Action]:
        """Import / change the label column / cancel."""
        where = f"new project {self.project}" if self.new_project else self.project
        buttons = [action(IMPORT_ACTION, f"Import into {where}", {"do": "import"})]
        if self.label_column:
            buttons.append(action(IMPORT_ACTION, "No label column", {"do": "label", "column": None}))
        else:
            guessed = self.preview.label_column
            others = [c for c in self.preview.columns if c not in (self.id_column, guessed)]
            for column in ([guessed] if guessed else []) + others[: 4 - bool(guessed)]:
                label = f"Labels are in “{column}”"
                buttons.append(action(IMPORT_ACTION, label, {"do": "label", "column": column}))
        buttons.append(action(IMPORT_ACTION, "Cancel", {"do": "cancel"}))
        return buttons


class WebChat:
    """The state of one browser chat and how it shows the agent's turns."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        context: AgentContext,
        conversation: Conversation,
        stack: AsyncExitStack,
    ) -> None:
        self.settings = settings
        self.db = db
        self.context = context
        self.conversation = conversation
        self.stack = stack
        self.decks: dict[str, Deck] = {}
        self.card_messages: dict[str, cl.Message] = {}
        self.card_elements: dict[str, cl.CustomElement] = {}
        self.confirmations: dict[str, cl.Message] = {}
        self.imports: dict[str, PendingImport] = {}
        self.watchers: dict[int, asyncio.Task[None]] = {}
        self.job_messages: dict[int, cl.Message] = {}
        self._busy = asyncio.Lock()

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def start(cls, settings: Settings, *, thread_id: str, user: str) -> WebChat:
        """Open the database and the conversation memory; build the agent for this chat."""
        db = await asyncio.to_thread(Database.open, settings)
        stack = AsyncExitStack()
        try:
            saver = await stack.enter_async_context(open_checkpointer(settings))
        except BaseException:
            await stack.aclose()
            await asyncio.to_thread(db.dispose)
            raise
        context = AgentContext(settings=settings, db=db, user=user, foreground_s=FOREGROUND_S)
        projects = await asyncio.to_thread(list_projects, db)
        if len(projects) >= 1:
            context.project = projects[0].name
        graph = build_graph(context, checkpointer=saver)
        return cls(settings, db, context, Conversation(graph, context, thread_id), stack)

    async def close(self) -> None:
        """Stop watching jobs, stop this chat's jobs cleanly (they resume later), close everything.

        A turn still running (the browser went away mid-turn) may finish first, up to CLOSE_WAIT_S: its
        checkpoints need the conversation memory open.
        """
        for watcher in self.watchers.values():
            watcher.cancel()
        await self.context.jobs.shutdown()
        try:
            await asyncio.wait_for(self._busy.acquire(), timeout=CLOSE_WAIT_S)
        except TimeoutError:
            logger.warning("closing a chat whose turn is still running after %.0f s", CLOSE_WAIT_S)
        await self.stack.aclose()
        await asyncio.to_thread(self.db.dispose)

    async def project(self) -> str | None:
        """The project this chat works on."""
        return await self.conversation.project()

    # ------------------------------------------------------------------ greeting and settings

    async def greet(self) -> None:
        """The projects, the model status (or the offline notice) and what to try first."""
        projects = await asyncio.to_thread(list_projects, self.db)
        current = await self.project()
        names = {project.name for project in projects}
        buttons = [say_button(s.label, s.message) for s in STARTERS if s.project in names]
        buttons.append(say_button("What can I do?", "/help"))
        await say(
            "# labelpilot\nLabel text datasets with LLMs, measured against labels you trust.\n\n"
            f"{render.projects_table(projects, current)}\n\n"
            + (f"Working on **{current}** (switch with `/use NAME`). " if current else "")
            + "Drop a data file here to import it, or start with one of the buttons below.\n\n"
            + render.model_notice(self.settings),
            actions=buttons,
        )

    def settings_widgets(self) -> list[Any]:
        """The settings panel: labeling model, requests in flight, few-shot examples."""
        from chainlit.input_widget import Slider, TextInput

        return [
            TextInput(
                id="labeling_model",
                label="Labeling model",
                initial=self.context.labeling_model or self.settings.label_model,
                description="Overrides the prompt version's model in this chat (needs a configured endpoint).",
            ),
            Slider(
                id="concurrency",
                label="Requests in flight",
                initial=self.context.rate_limits.max_concurrency,
                min=1,
                max=64,
                step=1,
                description="How many labeling requests run at once (the rate limits still apply).",
            ),
            Slider(
                id="few_shot_k",
                label="Few-shot examples per item",
                initial=self.context.few_shot_k if self.context.few_shot_k is not None else 0,
                min=0,
                max=20,
                step=1,
                description="0 keeps what the prompt version says; examples come from the ground truth.",
            ),
        ]

    async def apply_settings(self, values: dict[str, Any]) -> str:
        """Apply the settings panel to this chat; returns what changed."""
        changes = []
        model = str(values.get("labeling_model") or "").strip()
        if model and model != (self.context.labeling_model or self.settings.label_model):
            self.context.labeling_model = model
            changes.append(f"labeling model `{model}`")
        concurrency = int(values.get("concurrency") or self.context.rate_limits.max_concurrency)
        if concurrency != self.context.rate_limits.max_concurrency:
            limits = self.context.rate_limits
            self.context.rate_limits = RateLimits(rpm=limits.rpm, tpm=limits.tpm, max_concurrency=concurrency)
            changes.append(f"{concurrency} request(s) in flight")
        k = int(values.get("few_shot_k") or 0)
        wanted = k or None
        if wanted != self.context.few_shot_k:
            self.context.few_shot_k = wanted
            changes.append(
                f"{k} few-shot example(s) per item" if k else "few-shot examples as the version says"
            )
        if not changes:
            return "Settings unchanged."
        text = "Settings for this chat: " + ", ".join(changes) + "."
        if not render.model_configured(self.settings):
            text += " (No model is configured: the offline baseline labels, so model and examples apply once one is.)"
        return text

    # ------------------------------------------------------------------ turns

    async def run_text(self, text: str) -> None:
        """Text the person typed or a button sent: a starter runs its commands, the rest goes to the agent."""
        for command in STARTER_SCRIPTS.get(text.strip(), [text]):
            await self.run_turn(self._sender(command))

    def _sender(self, text: str) -> ItemCall:
        """A turn that sends `text` to the agent."""

        async def send(shown: Callable[[TurnMessage], Awaitable[None]]) -> Turn:
            return await self.conversation.send(text, on_message=shown)

        return send

    async def handle_message(self, message: cl.Message) -> None:
        """A message from the person: uploaded files are previewed; text goes to the agent."""
        files = [e for e in message.elements or [] if getattr(e, "path", None)]
        for element in files:
            await self.offer_import(element, message.content or "")
        text = (message.content or "").strip()
        if text and not files and not await self.change_import(text):
            await self.run_text(text)

    async def run_turn(self, call: ItemCall) -> None:
        """Run one exchange with the agent and show it (steps live, then the reply and what came with it)."""
        from chainlit.context import local_steps

        # Chainlit runs each handler in a "run" step; nesting the tool steps in it keeps them in order
        # (before the reply) in the browser.
        running = local_steps.get() or []
        parent_id = running[-1].id if running else None
        steps: dict[str, cl.Step] = {}
        before = set(self.context.jobs.running())

        async def shown(item: TurnMessage) -> None:
            if item.role == "assistant":
                for tool_call in item.tool_calls:
                    step = cl.Step(
                        name=str(tool_call["name"]), type="tool", show_input="json", parent_id=parent_id
                    )
                    step.start = datetime.now(UTC).isoformat()
                    step.input = json.dumps(tool_call.get("args") or {}, ensure_ascii=False, default=str)
                    await step.send()  # type: ignore[no-untyped-call]
                    steps[str(tool_call.get("id"))] = step
            elif item.role == "tool":
                found = steps.pop(str(item.tool_call_id), None)
                if found is None:
                    return
                step = found
                output = (
                    item.content
                    if len(item.content) <= STEP_OUTPUT_CHARS
                    else item.content[:STEP_OUTPUT_CHARS] + " …"
                )
                step.output = render.safe_markdown(output)
                step.is_error = item.status == "error"
                step.end = datetime.now(UTC).isoformat()
                await step.update()  # type: ignore[no-untyped-call]

        async with self._busy:
            try:
                turn = await call(shown)
            except LabelpilotError as exc:
                await say(f"**That did not work:** {exc.user_message()}")
                return
            except Exception as exc:  # a bug must not leave the person without an answer
                logger.exception("a chat turn failed")
                await say(
                    f"**Something went wrong** ({type(exc).__name__}). The conversation is kept: try again, "
                    "or reload the page. The server log has the details."
                )
                return
        await self.show_turn(turn)
        for run_id in sorted(set(self.context.jobs.running()) - before):
            self.watch_job(run_id)

    async def show_turn(self, turn: Turn) -> None:
        """The reply with its artifacts, then cards, then a confirmation if the agent waits for one."""
        details = turn.artifact_details
        cards = [a for a in details if a.get("kind") == "cards"]
        reply = turn.reply
        tool_texts = {m.content for m in turn.messages if m.role == "tool"}
        if cards and reply in tool_texts:  # the command model repeats the tool's list: the cards show it
            count = sum(len((a.get("data") or {}).get("cards") or []) for a in cards)
            review = any(a.get("title") == "review" for a in cards)
            reply = (
                f"{count} prediction(s) to review, least confident first: accept or pick the right label."
                if review
                else f"{count} item(s) to label: click the label that fits."
            ) + " Skip leaves one for later; Undo takes the last click back."
        elements: list[Any] = []
        extra: list[str] = []
        buttons: list[cl.Action] = []
        for artifact in details:
            await self._artifact(artifact, elements, extra, buttons)
        if reply or elements or extra:
            body = "\n\n".join(part for part in [render.safe_markdown(reply), *extra] if part)
            await say(body, elements=elements, actions=buttons)
        for artifact in cards:
            await self.start_deck(artifact)
        if turn.interrupt is not None:
            await self.ask_confirmation(turn.interrupt)

    async def _artifact(
        self, artifact: dict[str, Any], elements: list[Any], extra: list[str], buttons: list[cl.Action]
    ) -> None:
        kind, title, path = artifact.get("kind"), str(artifact.get("title") or ""), artifact.get("path")
        if kind == "image" and path:
            elements.append(cl.Image(name=Path(path).name, path=str(path), display="inline", size="large"))
        elif kind in ("file", "table") and path:
            elements.append(cl.File(name=Path(path).name, path=str(path), display="inline"))
            if kind == "table" and title in ("wrong items", "flipped items", "labels to re-check"):
                extra.append(
                    f"**{title}** (first rows; the whole table is attached)\n\n" + render.csv_preview(path)
                )
        elif kind == "data" and title.startswith("evaluation run") and isinstance(artifact.get("data"), dict):
            extra.extend(await self._evaluation(artifact["data"]))
            buttons.extend(
                [
                    say_button("Show errors", "/errors"),
                    say_button("Improve the prompt", "/improve"),
                    say_button("Label everything", "/label"),
                ]
            )
        elif kind == "data" and title == "import" and isinstance(artifact.get("data"), dict):
            buttons.append(say_button("Label 10 items", "/gt 10"))
            if artifact["data"].get("labels_added"):
                buttons.append(say_button("Evaluate the baseline", "/eval baseline"))
        elif kind == "data" and title == "comparison" and isinstance(artifact.get("data"), dict):
            extra.append(render.comparison_table(artifact["data"]))

    async def _evaluation(self, report: dict[str, Any]) -> list[str]:
        """Metrics, per class, the versions side by side and a few wrong examples of an evaluation."""
        from evals.evaluate import error_items, list_evals

        parts = [render.metrics_table(report)]
        per_class = render.per_class_table(report)
        if per_class:
            parts.append("**Per class** (weakest first)\n\n" + per_class)
        project, run_id = str(report["project"]), int(report["run"]["run_id"])
        try:
            board = await asyncio.to_thread(list_evals, self.db, project)
            wrong = await asyncio.to_thread(error_items, self.db, project, run_id, limit=WRONG_EXAMPLES)
        except LabelpilotError as exc:
            parts.append(f"(Could not read the other evaluations: {exc.message})")
            return parts
        if len(board) > 1:
            parts.append(
                "**Evaluations of this project** (newest first)\n\n" + render.leaderboard_table(board)
            )
        if wrong.items:
            parts.append(
                f"**{min(len(wrong.items), WRONG_EXAMPLES)} of {wrong.total_wrong:,} wrong items**\n\n"
                + render.errors_table(wrong.items)
            )
        return parts

    # ------------------------------------------------------------------ confirmations

    async def ask_confirmation(self, interrupt: dict[str, Any]) -> None:
        """Yes / No buttons under the question and its estimate."""
        message = await say(
            render.estimate_lines(interrupt) + "\n\nClick a button, or answer *yes* or *no*.",
            actions=[
                action(CONFIRM_ACTION, "Yes, go ahead", {"answer": True}),
                action(CONFIRM_ACTION, "No", {"answer": False}),
            ],
        )
        self.confirmations[message.id] = message

    async def confirm(self, message_id: str | None, answer: bool) -> None:
        """The person clicked Yes or No."""
        message = self.confirmations.pop(message_id or "", None)
        if message is not None:
            await message.remove_actions()  # type: ignore[no-untyped-call]
        if await self.conversation.pending() is None:
            await say("That question was already answered.")
            return
        await self.run_turn(lambda shown: self.conversation.answer(answer, on_message=shown))

    # ------------------------------------------------------------------ cards

    async def start_deck(self, artifact: dict[str, Any]) -> None:
        """Show the first card of a batch to label (or review)."""
        data = artifact.get("data") or {}
        project = await self.project()
        if project is None or not data.get("cards"):
            return
        summary = await asyncio.to_thread(project_summary, self.db, project)
        if summary.label_spec is None:
            return
        deck = Deck(
            db=self.db,
            project=project,
            spec=LabelSpec.model_validate(summary.label_spec),
            cards=list(data["cards"]),
            author=self.context.user,
            review=artifact.get("title") == "review",
        )
        await asyncio.to_thread(deck.load_inputs)
        await self.show_card(deck)

    async def show_card(self, deck: Deck) -> None:
        """Send the deck's current card (or its summary when it is done)."""
        view = deck.view()
        if view is None:
            await self.finish_deck(deck)
            return
        element = cl.CustomElement(name="TaskCard", props=view.props(), display="inline")
        actions = [self._card_action(button) for button in view.buttons]
        message = await say(f"**{view.progress}**", elements=[element], actions=actions)
        self.decks[message.id] = deck
        self.card_messages[message.id] = message
        self.card_elements[message.id] = element

    async def _redraw_card(self, message: cl.Message, deck: Deck) -> None:
        """Show a card's new state (toggled labels) in the same message, with its buttons again."""
        view = deck.view()
        element = self.card_elements.get(message.id)
        if view is None or element is None:
            return
        element.props = view.props()
        element.content = json.dumps(element.props)
        await element.update()  # type: ignore[no-untyped-call]
        message.actions = [self._card_action(button) for button in view.buttons]
        for button in message.actions:
            await button.send(for_id=message.id)
        self.decks[message.id] = deck
        self.card_messages[message.id] = message

    @staticmethod
    def _card_action(button: Button) -> cl.Action:
        payload = {"kind": button.kind, "value": button.value}
        return action(CARD_ACTION, button.label, payload, tooltip=button.tooltip)

    async def press_card(self, message_id: str | None, payload: dict[str, Any]) -> None:
        """A card's button: label, toggle, done, accept, skip or undo."""
        deck = self.decks.pop(message_id or "", None)
        message = self.card_messages.pop(message_id or "", None)
        if deck is None:
            await say("That card is closed: its label was already given.")
            return
        if message is not None:
            await message.remove_actions()  # type: ignore[no-untyped-call]
        kind = payload.get("kind")
        note = ""
        try:
            if kind == "label":
                stored = await asyncio.to_thread(deck.label, payload.get("value"))
                note = f"✓ {stored}"
            elif kind == "accept":
                stored = await asyncio.to_thread(deck.accept)
                note = f"✓ accepted {stored}"
            elif kind == "toggle":
                deck.toggle(str(payload.get("value")))
                if message is not None:
                    await self._redraw_card(message, deck)
                    return
            elif kind == "done":
                stored = await asyncio.to_thread(deck.done)
                note = f"✓ {stored or '(no label)'}"
            elif kind == "skip":
                deck.skip()
                note = "skipped"
            elif kind == "undo":
                note = await asyncio.to_thread(deck.undo)
        except LabelpilotError as exc:
            await say(f"**Not recorded:** {exc.user_message()}")
        if message is not None and note:
            message.content = f"{message.content} — {note}"
            await message.update()  # type: ignore[no-untyped-call]
        if message is not None:
            self.card_elements.pop(message.id, None)
        await self.show_card(deck)

    async def finish_deck(self, deck: Deck) -> None:
        """The batch is done: what it achieved and the ground truth per class, with next steps."""
        from tools.groundtruth import coverage

        cover = await asyncio.to_thread(coverage, self.db, deck.project)
        counts = ", ".join(f"{c.label} {c.count}" for c in cover.classes)
        await say(
            f"Done: {deck.summary()} Ground truth of **{deck.project}**: {cover.labeled_count:,} item(s)"
            + (f" ({counts})." if counts else "."),
            actions=[
                say_button("Label 10 more", "/gt 10"),
                say_button("Evaluate", "/eval"),
                say_button("Export CSV", "/export csv"),
            ],
        )

    # ------------------------------------------------------------------ jobs

    def watch_job(self, run_id: int) -> None:
        """Show a job's progress live in the background (the chat stays free)."""
        if run_id in self.watchers and not self.watchers[run_id].done():
            return
        self.watchers[run_id] = asyncio.ensure_future(self._watch(run_id))

    async def _watch(self, run_id: int) -> None:
        from tools.engine import job_status

        project = await self.project()
        if project is None:
            return
        cancel = action(
            CANCEL_JOB_ACTION, "Cancel", {"run_id": run_id}, tooltip="Stop it; what is done is kept"
        )
        message = await say(f"**Labeling job {run_id}** starting…", actions=[cancel])
        self.job_messages[run_id] = message
        samples: list[tuple[float, int]] = []
        try:
            while True:
                running = self.context.jobs.is_running(run_id)
                info = await asyncio.to_thread(job_status, self.db, project, run_id)
                now = time.monotonic()
                samples = [s for s in samples if now - s[0] <= 15.0] + [(now, info.done + info.failed)]
                rate = None
                if len(samples) > 1 and samples[-1][0] > samples[0][0]:
                    rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
                message.content = render.progress_text(info, rate=rate or None, running=running)
                await message.update()  # type: ignore[no-untyped-call]
                if not running:
                    break
                await asyncio.sleep(PROGRESS_EVERY_S)
        except asyncio.CancelledError:
            raise
        except Exception:  # a watcher must never take the chat down; the job itself goes on
            logger.exception("watching job %s failed", run_id)
            return
        finally:
            self.job_messages.pop(run_id, None)
        await message.remove_actions()  # type: ignore[no-untyped-call]
        await say(
            f"Labeling job {run_id} is **{info.status}**: {info.done:,} labeled, {info.failed:,} failed.",
            actions=[
                say_button("Review the least confident", "/review 5"),
                say_button("Export CSV", "/export csv"),
                say_button("Job status", f"/jobs {run_id}"),
            ],
        )

    async def cancel_job(self, run_id: int) -> None:
        """The Cancel button of a job's progress message."""
        from tools.engine import cancel_job

        self.context.jobs.cancel(run_id)
        info = await asyncio.to_thread(cancel_job, self.db, run_id)
        message = self.job_messages.get(run_id)
        if message is not None:
            await message.remove_actions()  # type: ignore[no-untyped-call]
        await say(
            f"Stopping job {run_id}: the {info.done:,} item(s) labeled so far are kept. `/label` resumes it."
        )

    # ------------------------------------------------------------------ upload

    async def offer_import(self, element: Any, text: str) -> None:
        """Preview an uploaded file and ask to confirm the mapping before importing it."""
        from tools.importers import preview_file
        from tools.projects import validate_project_name

        source = Path(str(element.path))
        name = _safe_name(str(getattr(element, "name", "") or source.name))
        # Kept under its own name (the extension gives the format) in a folder of its own per upload.
        folder = (
            self.settings.home
            / "uploads"
            / f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        )
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        await asyncio.to_thread(target.write_bytes, source.read_bytes())
        try:
            preview = await asyncio.to_thread(preview_file, target)
        except LabelpilotError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            await say(f"**Cannot import {name}:** {exc.user_message()}")
            return
        existing = {p.name for p in await asyncio.to_thread(list_projects, self.db)}
        wanted = _project_in(text, existing)
        if wanted is None:
            stem = re.sub(r"[^A-Za-z0-9_.\- ]+", "-", Path(name).stem).strip("-. ") or "project"
            try:
                wanted = validate_project_name(stem[:100])
            except LabelpilotError:
                wanted = "uploaded"
        pending = PendingImport(target, preview, wanted, new_project=wanted not in existing)
        message = await say(pending.text(), actions=pending.actions())
        pending.message = message
        self.imports[message.id] = pending

    async def _redraw_import(self, pending: PendingImport) -> None:
        """Show a pending import's mapping as it stands, with its buttons, in the same message."""
        message = pending.message
        if message is None:
            return
        await message.remove_actions()  # type: ignore[no-untyped-call]
        message.content = pending.text()
        message.actions = pending.actions()
        await message.update()  # type: ignore[no-untyped-call]
        for button in message.actions:
            await button.send(for_id=message.id)

    async def change_import(self, text: str) -> bool:
        """A typed mapping change (`fields=… label=…`) for the newest pending import; False: not one."""
        if not self.imports or not re.match(r"^\s*(fields|label|id|sep|project)=", text):
            return False
        pending = list(self.imports.values())[-1]
        existing = {p.name for p in await asyncio.to_thread(list_projects, self.db)}
        try:
            pending.change(text, existing)
        except LabelpilotError as exc:
            await say(f"**Mapping not changed:** {exc.user_message()}")
            return True
        await self._redraw_import(pending)
        await say("Mapping updated: check it above, then click Import.")
        return True

    async def import_action(self, message_id: str | None, payload: dict[str, Any]) -> None:
        """Import / change the label column / cancel, for a previewed file."""
        pending = self.imports.get(message_id or "")
        if pending is None or pending.message is None:
            await say("That file was already imported or cancelled: drop it again to start over.")
            return
        do = payload.get("do")
        if do == "label":
            column = payload.get("column")
            pending.set_label(str(column) if column else None)
            await self._redraw_import(pending)
            return
        self.imports.pop(message_id or "", None)
        await pending.message.remove_actions()  # type: ignore[no-untyped-call]
        if do == "cancel":
            shutil.rmtree(pending.path.parent, ignore_errors=True)
            await say(f"Not imported: {pending.path.name}.")
            return
        command = pending.command()
        await self.run_turn(lambda shown: self.conversation.send(command, on_message=shown))


def _safe_name(name: str) -> str:
    base = Path(name).name
    cleaned = re.sub(r"[^A-Za-z0-9_.\- ]+", "_", base).strip(" .") or "upload"
    return cleaned[-120:]


def _project_in(text: str, existing: set[str]) -> str | None:
    """A project named in the message that came with a file ("into support-intents", "project=x")."""
    lowered = text.lower()
    named = [p for p in existing if p.lower() in lowered]
    if named:
        return max(named, key=len)
    found = re.search(r"(?:project[=:]?|into)\s+([A-Za-z0-9_.\-]+)|project=([A-Za-z0-9_.\-]+)", text)
    if found:
        return (found.group(1) or found.group(2)).strip(".")
    return None
