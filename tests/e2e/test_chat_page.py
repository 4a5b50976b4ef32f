"""The harness itself, against tiny Chainlit apps written to a temporary folder.

They prove what the labelpilot tests rely on: an upload reaches `on_message` as `message.elements` with
its bytes intact, buttons are clicked and handled (actions and AskActionMessage), downloads are saved,
server errors surface, and login plus chat history (the /thread/ re-mount) do not lose messages.
"""

from __future__ import annotations

import hashlib
import sqlite3
import textwrap
from pathlib import Path

import pytest

from tests.e2e.chat import ChatPage
from tests.e2e.conftest import ChainlitServer, StartServer

ECHO_APP = """
import hashlib
from pathlib import Path

import chainlit as cl


@cl.on_chat_start
async def start():
    await cl.Message(content="echo ready").send()


@cl.on_message
async def on_message(message: cl.Message):
    text = message.content
    if text.startswith("/buttons "):
        n = text.split()[1]
        actions = [cl.Action(name="pick", payload={"n": n, "label": label}, label=label)
                   for label in ("Alpha", "Beta")]
        actions.append(cl.Action(name="boom", payload={}, label="Boom"))
        actions.append(cl.Action(name="nobody", payload={}, label="Orphan"))
        await cl.Message(content=f"buttons {n}", actions=actions).send()
    elif text == "/ask":
        answer = await cl.AskActionMessage(
            content="pick one",
            actions=[cl.Action(name="answer", payload={"v": v}, label=v.title()) for v in ("yes", "no")],
        ).send()
        await cl.Message(content=f"picked {answer['payload']['v'] if answer else None}").send()
    elif text == "/file":
        content = bytes(range(256)) * 4
        await cl.Message(
            content=f"file sha={hashlib.sha256(content).hexdigest()[:16]}",
            elements=[cl.File(name="bytes.bin", content=content, display="inline")],
        ).send()
    else:
        files = []
        for element in message.elements or []:
            data = Path(element.path).read_bytes() if element.path else b""
            files.append(f"{element.name}|{len(data)}|{hashlib.sha256(data).hexdigest()[:16]}")
        await cl.Message(content=f"got [{text}] files [{';'.join(files)}]").send()


@cl.action_callback("pick")
async def pick(action: cl.Action):
    await cl.Message(content=f"clicked {action.payload['label']} on {action.payload['n']}").send()


@cl.action_callback("boom")
async def boom(action: cl.Action):
    raise RuntimeError("boom on purpose")
"""

HISTORY_APP = """
import os

import chainlit as cl
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer


@cl.data_layer
def history():
    return SQLAlchemyDataLayer(conninfo=os.environ["E2E_HISTORY_DB"])


@cl.password_auth_callback
def login(username: str, password: str):
    if (username, password) == ("ann", "pw-for-ann"):
        return cl.User(identifier="ann", metadata={})
    return None


@cl.on_chat_start
async def start():
    await cl.Message(content="history ready").send()


@cl.on_message
async def on_message(message: cl.Message):
    user = cl.user_session.get("user")
    await cl.Message(content=f"{user.identifier} said {message.content}").send()
"""

#: Chainlit's SQLAlchemy data layer tables, in SQLite types (`steps.autoCollapse` is required).
HISTORY_SCHEMA = """
CREATE TABLE users ("id" TEXT PRIMARY KEY, "identifier" TEXT NOT NULL UNIQUE, "metadata" TEXT NOT NULL,
    "createdAt" TEXT);
CREATE TABLE threads ("id" TEXT PRIMARY KEY, "createdAt" TEXT, "name" TEXT, "userId" TEXT,
    "userIdentifier" TEXT, "tags" TEXT, "metadata" TEXT);
CREATE TABLE steps ("id" TEXT PRIMARY KEY, "name" TEXT NOT NULL, "type" TEXT NOT NULL,
    "threadId" TEXT NOT NULL, "parentId" TEXT, "streaming" BOOLEAN NOT NULL, "waitForAnswer" BOOLEAN,
    "isError" BOOLEAN, "metadata" TEXT, "tags" TEXT, "input" TEXT, "output" TEXT, "createdAt" TEXT,
    "command" TEXT, "modes" TEXT, "start" TEXT, "end" TEXT, "generation" TEXT, "showInput" TEXT,
    "language" TEXT, "indent" INT, "defaultOpen" BOOLEAN, "autoCollapse" BOOLEAN, "icon" TEXT);
CREATE TABLE elements ("id" TEXT PRIMARY KEY, "threadId" TEXT, "type" TEXT, "url" TEXT,
    "chainlitKey" TEXT, "name" TEXT NOT NULL, "display" TEXT, "objectKey" TEXT, "size" TEXT, "page" INT,
    "language" TEXT, "forId" TEXT, "mime" TEXT, "props" TEXT, "autoPlay" BOOLEAN, "playerConfig" TEXT);
CREATE TABLE feedbacks ("id" TEXT PRIMARY KEY, "forId" TEXT NOT NULL, "threadId" TEXT NOT NULL,
    "value" INT NOT NULL, "comment" TEXT);
"""


def _write_app(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    app = folder / "app.py"
    app.write_text(textwrap.dedent(source))
    return app


@pytest.fixture(scope="module")
def echo_server(chainlit_server: StartServer, tmp_path_factory: pytest.TempPathFactory) -> ChainlitServer:
    """An app that echoes messages and the name, size and hash of each uploaded file."""
    return chainlit_server(_write_app(tmp_path_factory.mktemp("echo-app"), ECHO_APP))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def test_upload_delivers_files_to_on_message(
    chat: ChatPage, echo_server: ChainlitServer, tmp_path: Path
) -> None:
    chat.open(echo_server.url)
    chat.wait_for_text("echo ready")
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text("text,label\nhello,greeting\n")
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 300)  # 76.8 kB, every byte value

    chat.upload([csv_file, binary], "two files")
    expected = f"{csv_file.name}|{csv_file.stat().st_size}|{_digest(csv_file.read_bytes())}"
    expected += f";{binary.name}|{binary.stat().st_size}|{_digest(binary.read_bytes())}"
    chat.wait_for_text(f"got [two files] files [{expected}]")

    # The same file again, and without text: still delivered.
    chat.upload(csv_file)
    chat.wait_for_text(f"got [] files [{csv_file.name}|{csv_file.stat().st_size}|")
    chat.upload(csv_file, "again")
    chat.wait_for_text(f"got [again] files [{csv_file.name}|")
    assert "Traceback" not in echo_server.log_text()


def test_click_button_runs_actions_and_answers_questions(
    chat: ChatPage, echo_server: ChainlitServer, expect_server_errors: None
) -> None:
    chat.open(echo_server.url)
    chat.send("/buttons 1")
    chat.send("/buttons 2")
    chat.wait_for_text("buttons 2")
    assert chat.button_labels() == ["Alpha", "Beta", "Boom", "Orphan"] * 2

    chat.click_button("Alpha")  # the newest message's
    chat.wait_for_text("clicked Alpha on 2")
    chat.click_button("Beta", nth_last=False)
    chat.wait_for_text("clicked Beta on 1")
    # A callback that raises still answers HTTP 200 and the page shows nothing: only the log tells.
    mark = echo_server.log_size()
    chat.click_button("Boom")
    echo_server.wait_for_log("RuntimeError: boom on purpose")
    assert "boom on purpose" in echo_server.tracebacks(since=mark)[0]
    with pytest.raises(AssertionError, match=r"failed on the server \(HTTP 404"):
        chat.click_button("Orphan")
    with pytest.raises(AssertionError, match="no button 'Gamma'"):
        chat.click_button("Gamma", timeout=0.5)

    chat.send("/ask")
    chat.wait_for_text("pick one")
    chat.click_button("No")
    chat.wait_for_text("picked no")
    assert chat.assistant_texts()[-1] == "picked no"


def test_download_saves_a_file_element(chat: ChatPage, echo_server: ChainlitServer) -> None:
    chat.open(echo_server.url)
    chat.send("/file")
    content = bytes(range(256)) * 4
    chat.wait_for_text(f"file sha={_digest(content)}")
    path = chat.download("bytes.bin")
    assert path.name == "bytes.bin"
    assert path.read_bytes() == content


def test_login_and_chat_history_keep_every_message(
    chat: ChatPage, chainlit_server: StartServer, tmp_path: Path
) -> None:
    database = tmp_path / "history.db"
    with sqlite3.connect(database) as connection:
        connection.executescript(HISTORY_SCHEMA)
    server = chainlit_server(
        _write_app(tmp_path / "history-app", HISTORY_APP),
        env={"E2E_HISTORY_DB": f"sqlite+aiosqlite:///{database}", "CHAINLIT_AUTH_SECRET": "e2e-" + "x" * 60},
    )
    with pytest.raises(AssertionError, match="asks for a login"):
        chat.open(server.url)
    with pytest.raises(AssertionError, match="refused: HTTP 401"):
        chat.login("ann", "wrong")
    chat.login("ann", "pw-for-ann")
    chat.wait_for_text("history ready")

    chat.send("first")  # the chat moves to /thread/ID and re-mounts the composer
    assert "/thread/" in chat.page.url
    chat.send("second")
    chat.wait_for_text("ann said second")
    assert chat.user_texts() == ["first", "second"]
    assert [t for t in chat.assistant_texts() if " said " in t] == ["ann said first", "ann said second"]
    with sqlite3.connect(database) as connection:
        outputs = {
            row[0] for row in connection.execute("SELECT output FROM steps WHERE type = 'user_message'")
        }
    assert outputs == {"first", "second"}
