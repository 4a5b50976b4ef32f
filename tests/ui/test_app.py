"""The Chainlit app: handlers called with a fake Chainlit context, and the real server started once."""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tools.demo import setup_demo
from tools.groundtruth import task_history
from tools.settings import Settings
from tools.storage import Database

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The `ui.app` module, imported so that Chainlit writes its folders into a temporary directory."""
    if "chainlit" not in sys.modules:
        # Chainlit creates .chainlit/ and .files/ in CHAINLIT_APP_ROOT (default: the cwd) when imported.
        previous = os.environ.get("CHAINLIT_APP_ROOT")
        os.environ["CHAINLIT_APP_ROOT"] = str(tmp_path_factory.mktemp("chainlit-root"))
        try:
            importlib.import_module("chainlit")
        finally:
            if previous is None:
                del os.environ["CHAINLIT_APP_ROOT"]
            else:
                os.environ["CHAINLIT_APP_ROOT"] = previous
    yield importlib.import_module("ui.app")


@dataclass
class Chat:
    """A fake browser tab: the messages, buttons and files the app sent, and a way to type and click."""

    app: ModuleType
    steps: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    removed_actions: list[str] = field(default_factory=list)
    elements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [str(step["output"]) for step in self.steps]

    def actions_of(self, message_id: str) -> list[dict[str, Any]]:
        return [a for a in self.actions if a["forId"] == message_id and a["id"] not in self.removed_actions]

    async def type(self, text: str) -> list[str]:
        """Send a user message; return the texts of the replies."""
        import chainlit as cl

        before = len(self.steps)
        await self.app.on_message(cl.Message(content=text, type="user_message"))
        return self.texts[before:]

    async def click(self, action: dict[str, Any]) -> list[str]:
        """Click a button the app sent; return the texts of the replies."""
        import chainlit as cl

        callbacks = {self.app.LABEL_ACTION: self.app.on_label, self.app.SKIP_ACTION: self.app.on_skip}
        before = len(self.steps)
        await callbacks[action["name"]](cl.Action(**action))
        return self.texts[before:]


async def open_chat(app: ModuleType, files_dir: Path) -> Chat:
    """Install a fake Chainlit context (session + recording emitter) for the running test."""
    from chainlit.context import ChainlitContext, context_var
    from chainlit.emitter import BaseChainlitEmitter
    from chainlit.session import HTTPSession

    chat = Chat(app=app)

    class Session(HTTPSession):
        @property
        def files_dir(self) -> Path:
            return files_dir

    class RecordingEmitter(BaseChainlitEmitter):
        async def send_step(self, step_dict: Any) -> None:
            chat.steps.append(dict(step_dict))

        async def emit(self, event: str, data: Any) -> None:
            if event == "action":
                chat.actions.append(dict(data))
            elif event == "remove_action":
                chat.removed_actions.append(data["id"])

        async def send_element(self, element_dict: Any) -> None:
            chat.elements.append(dict(element_dict))

    session = Session(id=str(uuid.uuid4()), client_type="webapp")
    context_var.set(ChainlitContext(session, emitter=RecordingEmitter(session)))
    await app.on_chat_start()
    return chat


@pytest.fixture
def demo(db: Database, settings: Settings) -> Database:
    """A database holding the shipped demo projects."""
    setup_demo(db, settings, shared_dir=None)
    return db


async def test_welcome_lists_projects_and_says_offline(
    app: ModuleType, demo: Database, tmp_path: Path
) -> None:
    chat = await open_chat(app, tmp_path / "files")
    [welcome] = chat.texts
    assert "| **reader-preference** | 6 | 6 | single choice: Summary 1, Summary 2, Summary 3 |" in welcome
    assert "| **support-intents** | 60 | 30 |" in welcome
    assert "offline mode" in welcome and "OPENAI_API_KEY" in welcome and "OPENAI_BASE_URL" in welcome
    assert "/gt [n]" in welcome


async def test_welcome_names_a_configured_model(
    app: ModuleType, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("LABELPILOT_MODEL", "local-model")
    [welcome] = (await open_chat(app, tmp_path)).texts
    assert "offline" not in welcome
    assert "`local-model` at http://127.0.0.1:9/v1" in welcome
    assert "No projects yet" in welcome and "labelpilot demo setup" in welcome


async def test_help_projects_and_unknown_text(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path)
    [help_text] = await chat.type("/help")
    for usage in ("/help", "/projects", "/status [project]", "/use <project>", "/gt [n]", "/export [format]"):
        assert f"`{usage}`" in help_text
    [projects] = await chat.type("/projects")
    assert "| **support-intents** | 60 | 30 |" in projects
    [reply] = await chat.type("please label everything")
    assert "/gt [n]" in reply and "/export [format]" in reply


async def test_use_and_status(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path)
    [reply] = await chat.type("/use nope")
    assert "no project named 'nope'" in reply and "reader-preference, support-intents" in reply
    [reply] = await chat.type("/gt")
    assert "several projects exist" in reply and "/use NAME" in reply
    [reply] = await chat.type("/use support-intents")
    assert "Now working on **support-intents** (60 tasks, 30 with ground truth)" in reply
    [status] = await chat.type("/status")
    assert "- tasks: 60" in status and "| card_lost | 6 |" in status
    [status] = await chat.type("/status reader-preference")
    assert "| Summary 1 | 2 |" in status
    [projects] = await chat.type("/projects")
    assert "**support-intents** ← current" in projects


async def test_gt_buttons_record_labels_and_skip(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path)
    await chat.type("/use support-intents")
    cards = await chat.type("/gt 3")
    assert len(cards) == 3 and all("**text**" in card for card in cards)
    first, second, third = chat.steps[-3:]
    buttons = chat.actions_of(first["id"])
    assert [b["label"] for b in buttons] == [
        "card_lost",
        "refund_request",
        "delivery_status",
        "change_address",
        "account_login",
        "Skip",
    ]
    external_id = buttons[0]["payload"]["external_id"]
    assert f"task `{external_id}`" in cards[0]

    [confirmation] = await chat.click(buttons[2])
    assert confirmation == f"Labeled task `{external_id}` as **delivery_status**."
    [record] = task_history(demo, "support-intents", external_id)
    assert (record.value, record.source) == ("delivery_status", "chat")
    assert chat.actions_of(first["id"]) == []  # the card's buttons are gone

    skipped_id = chat.actions_of(second["id"])[-1]["payload"]["external_id"]
    [reply] = await chat.click(chat.actions_of(second["id"])[-1])
    assert reply == f"Skipped task `{skipped_id}`."
    assert task_history(demo, "support-intents", skipped_id) == []

    shown_next = " ".join(await chat.type("/gt 20"))
    assert skipped_id not in shown_next and external_id not in shown_next
    assert chat.actions_of(third["id"])  # untouched cards keep their buttons

    [reply] = await chat.type("/gt lots")
    assert "not a number of tasks from 1 to 20" in reply


async def test_gt_when_everything_is_labeled(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path)
    await chat.type("/use reader-preference")
    [reply] = await chat.type("/gt")
    assert reply == "Every task of **reader-preference** has ground truth."


async def test_export_sends_a_file(app: ModuleType, demo: Database, tmp_path: Path) -> None:
    chat = await open_chat(app, tmp_path / "files")
    await chat.type("/use reader-preference")
    [reply] = await chat.type("/export jsonl")
    assert reply == "Exported **6** tasks of **reader-preference** (6 with ground truth) as jsonl."
    [element] = chat.elements
    assert element["type"] == "file" and element["name"].endswith(".jsonl")
    assert element["forId"] == chat.steps[-1]["id"]
    [sent] = (tmp_path / "files").iterdir()  # the copy Chainlit serves for download
    rows = [json.loads(line) for line in sent.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and {"article", "summary_1", "summary_2", "summary_3", "label"} <= set(rows[0])
    [reply] = await chat.type("/export docx")
    assert "'docx' is not an export format" in reply and "labelstudio_min" in reply


# ---------------------------------------------------------------- the real server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chat_over_socketio(port: int, text: str) -> tuple[str, str]:
    """Open a chat like the browser does (Socket.IO); return the welcome and the reply to `text`."""
    import socketio

    replies: list[str] = []
    arrived = threading.Condition()

    client = socketio.Client()

    @client.on("new_message")
    def on_new_message(step: dict[str, Any]) -> None:
        if step.get("type") == "assistant_message":
            with arrived:
                replies.append(str(step["output"]))
                arrived.notify_all()

    def wait_for(count: int) -> None:
        with arrived:
            assert arrived.wait_for(lambda: len(replies) >= count, timeout=15), f"replies so far: {replies}"

    auth = {"clientType": "webapp", "sessionId": str(uuid.uuid4()), "threadId": None, "userEnv": "{}"}
    client.connect(
        f"http://127.0.0.1:{port}", socketio_path="/ws/socket.io", transports=["websocket"], auth=auth
    )
    try:
        client.emit("connection_successful")
        wait_for(1)
        message = {"id": str(uuid.uuid4()), "name": "User", "type": "user_message", "output": text}
        client.emit("client_message", {"message": {**message, "createdAt": "2026-01-01T00:00:00Z"}})
        wait_for(2)
    finally:
        client.disconnect()
    return replies[0], replies[1]


@pytest.mark.subprocess
def test_chainlit_serves_the_app_from_ui_folder(tmp_path: Path) -> None:
    port = _free_port()
    # CI=true would put Chainlit in its "CI mode", which overwrites OPENAI_API_KEY with a fake key.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LABELPILOT_", "OPENAI_")) and key != "CI"
    }
    env.update(
        LABELPILOT_HOME=str(tmp_path / "home"),
        # Keep .chainlit/, .files/ and chainlit.md out of the repository.
        CHAINLIT_APP_ROOT=str(tmp_path / "chainlit-root"),
    )
    (tmp_path / "chainlit-root").mkdir()
    chainlit = str(Path(sys.executable).with_name("chainlit"))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [chainlit, "run", "app.py", "--headless", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO / "ui",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code
            except httpx.TransportError:
                status = None
            if status == 200:
                break
            time.sleep(0.2)
        output = (tmp_path / "server.log").read_text()
        assert status == 200, f"no HTTP 200 within 30 s (exit code {server.poll()}):\n{output}"
        # Our own server must be the one answering (not another process that held the port).
        assert server.poll() is None, f"the server exited:\n{output}"
        welcome, reply = _chat_over_socketio(port, "/help")
        assert "No projects yet" in welcome, welcome
        assert "offline mode" in welcome, f"{welcome}\n--- server log:\n{output}"
        assert "`/export [format]`" in reply
        assert "Traceback" not in (tmp_path / "server.log").read_text()
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
