"""The example store on a real Chroma server (`chroma run` on loopback), and a server that is not there."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.tools.test_examples import LABELED, SPEC, add_task, task_input
from tools.embeddings import HashingEmbedder
from tools.errors import ConfigError
from tools.examples import ExampleStore, examples_for_version
from tools.groundtruth import delete_label, set_label
from tools.projects import create_project
from tools.settings import Settings
from tools.storage import Database
from tools.versions import FewShotKind, FewShotPolicy, PromptConfig

STARTUP_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def chroma_binary() -> str | None:
    beside = Path(sys.executable).with_name("chroma")  # the venv's, installed with chromadb
    return str(beside) if beside.is_file() else shutil.which("chroma")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `chroma run` server on a free loopback port with a temporary data folder: (URL, process)."""
    binary = chroma_binary()
    if binary is None:
        pytest.skip("the `chroma` command is not installed (it comes with the chromadb package)")
    folder = tmp_path_factory.mktemp("chroma-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (folder / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, "run", "--path", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", "HOME": str(folder), "ANONYMIZED_TELEMETRY": "False"},
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"chroma run exited with {process.returncode}:\n{(folder / 'server.log').read_text()}"
                )
            try:
                httpx.get(f"{url}/api/v2/heartbeat", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    pytest.fail(f"chroma run did not answer its heartbeat within {STARTUP_TIMEOUT_S} s")
                time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def client_for(url: str) -> Any:
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    host, port = url.removeprefix("http://").split(":")
    return chromadb.HttpClient(host=host, port=int(port), settings=ChromaSettings(anonymized_telemetry=False))


def test_the_store_lives_on_the_server(
    chroma_server: tuple[str, subprocess.Popen[bytes]], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, process = chroma_server
    monkeypatch.setenv("LABELPILOT_CHROMA_URL", url)
    settings = Settings.from_env()
    create_project(db, "news", spec=SPEC)
    for external_id, (text, label) in LABELED.items():
        add_task(db, external_id, text)
        set_label(db, "news", external_id, label)
    add_task(db, "q1", "football match tonight: the team hopes to win")

    embedder = HashingEmbedder()
    store = ExampleStore.open(settings, 1, embedder=embedder)
    assert store.location == url and store.sync(db).added == 7
    version = PromptConfig(few_shot=FewShotPolicy(kind=FewShotKind.nearest, k=2))
    examples = examples_for_version(db, settings, "news", version, embedder=embedder, store=store)
    assert examples is not None and [e.task_id for e in examples(task_input(db, "q1"))] == ["s1", "s2"]
    assert not settings.chroma_path.exists()  # nothing stored locally

    # Another client of the server sees the collection and every change a sync makes.
    other = client_for(url).get_collection(store.name)
    assert other.count() == 7
    set_label(db, "news", "s1", "World")
    delete_label(db, "news", "b1")
    report = ExampleStore.open(settings, 1, embedder=embedder).sync(db)
    assert (report.updated, report.deleted) == (1, 1)
    found = other.get(ids=["1"], include=["metadatas", "documents"])
    assert found["metadatas"][0]["label"] == "World" and found["documents"][0] == LABELED["s1"][0]
    assert other.count() == 6

    # A server that goes away mid-way is a ConfigError naming it, not a traceback.
    process.terminate()
    process.wait(timeout=10)
    with pytest.raises(ConfigError, match=f"cannot reach the Chroma server at {url}"):
        store.sync(db)


def test_an_unreachable_server_is_a_config_error_without_secrets(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("LABELPILOT_CHROMA_URL", f"http://admin:hunter2@127.0.0.1:{port}")
    create_project(db, "news", spec=SPEC)
    version = PromptConfig(few_shot=FewShotPolicy(kind=FewShotKind.nearest, k=2))
    with pytest.raises(ConfigError) as caught:
        examples_for_version(db, Settings.from_env(), "news", version, embedder=HashingEmbedder())
    message = caught.value.user_message()
    assert f"cannot reach the Chroma server at http://127.0.0.1:{port}" in message
    assert "LABELPILOT_CHROMA_URL" in message and "hunter2" not in message and "admin" not in message
