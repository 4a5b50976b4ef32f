"""The Chainlit chat: the labelpilot agent in a browser (`make run`, then http://localhost:8000).

Start it from this folder (Chainlit reads `.chainlit/config.toml` and `public/` from the current directory):

    cd ui && chainlit run app.py --headless --host 127.0.0.1 --port 8000

Each browser chat gets a `ui.web_chat.WebChat`: the agent conversation (memory in the project's database
folder, continued when a chat is resumed), and the rendering of its turns (steps, cards with buttons,
confirmations, live job progress, pictures and downloads). Handlers here only route Chainlit events to it.
Login and chat history are optional (`ui.web_auth`): they switch on when users are configured.
"""

from __future__ import annotations

import asyncio
from typing import Any

import chainlit as cl
from chainlit.types import ThreadDict

from tools.errors import LabelpilotError
from tools.settings import Settings
from ui import web_auth
from ui.web_chat import (
    CANCEL_JOB_ACTION,
    CARD_ACTION,
    CONFIRM_ACTION,
    IMPORT_ACTION,
    SAY_ACTION,
    STARTER_SCRIPTS,
    STARTERS,
    WebChat,
    say,
)

CHAT_KEY = "labelpilot_chat"


def session_chat() -> WebChat | None:
    """This session's chat (None before it started or when the database could not be opened)."""
    chat = cl.user_session.get(CHAT_KEY)  # type: ignore[no-untyped-call]
    return chat if isinstance(chat, WebChat) else None


def user_name() -> str:
    """Who is talking (the login name, else "chat"): recorded as the author of labels."""
    user = cl.user_session.get("user")  # type: ignore[no-untyped-call]
    return str(getattr(user, "identifier", "") or "chat")


async def open_chat() -> WebChat | None:
    """Start this session's chat and its settings panel; say clearly when the database cannot be opened."""
    settings = Settings.from_env()
    try:
        chat = await WebChat.start(settings, thread_id=cl.context.session.thread_id, user=user_name())
    except LabelpilotError as exc:
        await say(f"**Cannot open the labelpilot database:** {exc.user_message()}")
        return None
    cl.user_session.set(CHAT_KEY, chat)  # type: ignore[no-untyped-call]
    await cl.ChatSettings(chat.settings_widgets()).send()  # type: ignore[no-untyped-call]
    return chat


# ---------------------------------------------------------------------------------------------- login


if web_auth.login_enabled(Settings.from_env()):
    web_auth.ensure_auth_secret(Settings.from_env())

    @cl.password_auth_callback
    async def password_login(username: str, password: str) -> cl.User | None:
        """Users from LABELPILOT_USERS / the users file (`labelpilot users add`)."""
        # scrypt takes ~0.2 s: keep it off the event loop.
        users = await asyncio.to_thread(web_auth.load_users, Settings.from_env())
        if await asyncio.to_thread(web_auth.check_password, users, username, password):
            return cl.User(identifier=username, metadata={"provider": "labelpilot"})
        return None

    web_auth.add_chat_files_route(Settings.from_env())

    @cl.data_layer
    def chat_history() -> Any:
        """Chat history in the project's database (listed per user in the sidebar)."""
        return web_auth.history_data_layer(Settings.from_env())


# ---------------------------------------------------------------------------------------------- lifecycle


@cl.set_starters
async def starters(user: cl.User | None = None, language: str | None = None) -> list[cl.Starter]:
    """One starter per kind of user."""
    return [cl.Starter(label=starter.label, message=starter.message) for starter in STARTERS]


@cl.on_chat_start
async def on_chat_start() -> None:
    """Open the chat and greet with the projects, the model status and what to try."""
    chat = await open_chat()
    if chat is not None:
        await chat.greet()


@cl.on_chat_resume
async def on_chat_resume(thread: ThreadDict) -> None:
    """Continue a chat from the history: the same thread id, so the agent remembers its project and items."""
    # Chainlit replays the stored messages right after this returns (anything sent here would be wiped
    # by that replay); the agent's memory of the thread comes from the checkpointer.
    await open_chat()


@cl.on_chat_end
async def on_chat_end() -> None:
    """Stop this chat's jobs cleanly (they resume later) and close its connections."""
    chat = session_chat()
    if chat is not None:
        await chat.close()


@cl.on_settings_update
async def on_settings_update(values: dict[str, Any]) -> None:
    """The settings panel changed."""
    chat = session_chat()
    if chat is not None:
        await say(await chat.apply_settings(values))


@cl.on_message
async def on_message(message: cl.Message) -> None:
    """Files are previewed for import; starters run their commands; anything else goes to the agent."""
    chat = session_chat()
    if chat is None:
        await say("The chat is not connected to the database: reload the page.")
        return
    await chat.handle_message(message)


# ---------------------------------------------------------------------------------------------- buttons


@cl.action_callback(CARD_ACTION)
async def on_card(button: cl.Action) -> None:
    """A label, Skip, Undo, Done or Accept button of a card."""
    chat = session_chat()
    if chat is not None:
        await chat.press_card(button.forId, button.payload)


@cl.action_callback(CONFIRM_ACTION)
async def on_confirm(button: cl.Action) -> None:
    """Yes or No to a confirmation."""
    chat = session_chat()
    if chat is not None:
        await chat.confirm(button.forId, bool(button.payload.get("answer")))


@cl.action_callback(CANCEL_JOB_ACTION)
async def on_cancel_job(button: cl.Action) -> None:
    """Cancel a running labeling job."""
    chat = session_chat()
    if chat is not None:
        await chat.cancel_job(int(button.payload["run_id"]))


@cl.action_callback(IMPORT_ACTION)
async def on_import(button: cl.Action) -> None:
    """Import, change the mapping of, or cancel an uploaded file."""
    chat = session_chat()
    if chat is not None:
        await chat.import_action(button.forId, button.payload)


@cl.action_callback(SAY_ACTION)
async def on_say(button: cl.Action) -> None:
    """A suggestion button: run its command as if the person typed it."""
    chat = session_chat()
    if chat is not None:
        text = str(button.payload.get("text") or "")
        await say(f"▶ {text}" if text in STARTER_SCRIPTS else f"▶ `{text}`")
        await chat.run_text(text)
