"""The whole loop in a real browser, as a person does it: upload, label with buttons, evaluate, label
everything, export and download — offline (the embedding baseline) and against a fake OpenAI-compatible
server; then login, labels recorded under the user's name, and a chat resumed from the history.

Every check reads a result (the database, the downloaded file, the fake server's counters), not only
what the page shows.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from evals.fake_openai import AnswerRule, FakeOpenAIServer, FakeServerConfig
from tests.e2e.chat import ChatPage
from tests.e2e.conftest import ChainlitServer, StartServer, setup_demo_home
from tools.groundtruth import latest_annotations
from tools.projects import get_project, project_summary
from tools.settings import Settings
from tools.storage import Database

INTENTS = {
    "delivery": [
        "Where is my parcel?",
        "My package has not arrived",
        "When will the order be delivered?",
        "Tracking says it is still in transit",
        "The courier never came",
        "Delivery is late again",
    ],
    "refund": [
        "I want my money back",
        "Please refund the broken kettle",
        "How long does a refund take?",
        "Refund my last order please",
        "I returned it, where is my refund?",
        "Give me a refund",
    ],
    "login": [
        "I cannot sign in",
        "My password does not work",
        "The login code never arrives",
        "Account locked after three tries",
        "Reset my password please",
        "Two-factor code is wrong",
    ],
}


def tickets_csv(path: Path) -> Path:
    """18 support messages; the first four of each intent carry a label, the rest do not."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "message", "intent"])
        for intent, texts in INTENTS.items():
            for n, text in enumerate(texts):
                writer.writerow([f"{intent}-{n}", text, intent if n < 4 else ""])
    return path


def open_db(home: Path) -> Database:
    return Database.open(Settings.from_env({"LABELPILOT_HOME": str(home)}))


def ground_truth(home: Path, project: str) -> dict[str, tuple[Any, str, str]]:
    """{task id: (label, source, author)} of a project's current ground truth."""
    db = open_db(home)
    try:
        with db.session() as session:
            project_id = get_project(session, project).id
            return {
                task.external_id: (ann.value, ann.source, ann.author)
                for task, ann in latest_annotations(session, project_id)
            }
    finally:
        db.dispose()


def label_cards(chat: ChatPage, count: int) -> list[str]:
    """Click the first label button of `count` cards in a row; return the labels clicked."""
    clicked = []
    for _ in range(count):
        chat.page.locator(".task-card").last.wait_for(state="visible", timeout=30_000)
        labels = [b for b in chat.button_labels() if b not in ("Skip", "Undo")]
        choice = labels[-1]  # the newest card's buttons come last; its last label
        chat.click_button(choice, until_gone=True, timeout=30)
        clicked.append(choice)
    return clicked


@pytest.fixture(scope="module")
def empty_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty-home")


@pytest.fixture(scope="module")
def offline_server(chainlit_server: StartServer, empty_home: Path) -> ChainlitServer:
    return chainlit_server(home=empty_home)


def test_offline_upload_label_evaluate_label_all_and_download(
    chat: ChatPage, offline_server: ChainlitServer, empty_home: Path, tmp_path: Path
) -> None:
    chat.open(offline_server.url)
    chat.wait_for_text("Offline mode", timeout=30)

    # Upload: preview and proposed mapping, then import with a click.
    chat.upload(tickets_csv(tmp_path / "tickets.csv"))
    preview = chat.wait_for_text("Proposed mapping", timeout=30).inner_text()
    assert "tickets.csv" in preview and "18 rows" in preview
    assert "Where is my parcel?" in preview
    chat.screenshot("1-upload-preview")
    chat.click_button("Import into new project tickets", timeout=30)
    chat.wait_for_text("Imported", timeout=60)
    summary = project_summary(open_db(empty_home), "tickets")
    assert (summary.task_count, summary.ground_truth_count) == (18, 12)

    # Three labels with buttons; each is ground truth at once.
    chat.send("/gt 3")
    clicked = label_cards(chat, 3)
    chat.wait_for_text("Done: 3 labeled, 0 skipped, of 3.", timeout=30)
    chat.screenshot("2-labeled")
    truth = ground_truth(empty_home, "tickets")
    assert len(truth) == 15
    new = {task: value for task, value in truth.items() if value[1] == "chat"}
    assert sorted(v[0] for v in new.values()) == sorted(clicked)

    # Evaluate the offline baseline: metrics table, pictures, wrong items.
    chat.send("/eval baseline")
    report = chat.wait_for_text("items scored", timeout=90).inner_text()
    assert re.search(r"accuracy\s+[01]\.\d{3}", report), report
    assert chat.page.locator('[data-step-type="assistant_message"] img').count() >= 1
    chat.screenshot("3-evaluation")

    # Label everything: estimate, Yes, live progress, finished.
    chat.send("/label")
    chat.wait_for_text("Please confirm", timeout=60)
    chat.click_button("Yes, go ahead", timeout=30)
    chat.wait_for_text(re.compile(r"(labeled|finished)", re.IGNORECASE), timeout=120)
    chat.screenshot("4-labeled-all")

    # Export and download: every task, with the ground truth given by buttons.
    chat.send("/export csv")
    chat.wait_for_text("Exported 18 row(s) of tickets", timeout=60)
    path = chat.download("tickets-", timeout=60)  # tickets-DATE-TIME.csv, not the uploaded tickets.csv
    with path.open(newline="", encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert len(rows) == 18
    for task, (value, _source, _author) in new.items():
        assert rows[task]["label"] == value
    assert all(rows[f"refund-{n}"]["label"] == "refund" for n in range(4))


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAIServer]:
    rules = [AnswerRule(contains=text, label=intent) for intent, texts in INTENTS.items() for text in texts]
    with FakeOpenAIServer(FakeServerConfig(latency_ms=5, jitter_ms=1, answers=rules)) as server:
        yield server


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-home")


@pytest.fixture(scope="module")
def model_server(
    chainlit_server: StartServer, model_home: Path, fake_openai: FakeOpenAIServer
) -> ChainlitServer:
    env = {
        "OPENAI_BASE_URL": fake_openai.url,
        "OPENAI_API_KEY": "sk-test-not-secret",
        "LABELPILOT_MODEL": "fake-mini",
    }
    return chainlit_server(home=model_home, env=env)


def test_with_a_model_evaluation_asks_then_calls_the_server(
    chat: ChatPage,
    model_server: ChainlitServer,
    model_home: Path,
    fake_openai: FakeOpenAIServer,
    tmp_path: Path,
) -> None:
    chat.open(model_server.url)
    welcome = chat.wait_for_text("fake-mini", timeout=30).inner_text()
    assert "Offline" not in welcome and fake_openai.url in welcome

    chat.upload(tickets_csv(tmp_path / "tickets.csv"))
    chat.click_button("Import into new project tickets", timeout=30)
    chat.wait_for_text("Imported", timeout=60)
    before = fake_openai.stats().requests

    chat.send("/eval")
    chat.wait_for_text("Please confirm", timeout=60)
    assert fake_openai.stats().requests == before  # nothing is sent before the yes
    chat.click_button("Yes, go ahead", timeout=30)
    report = chat.wait_for_text("items scored", timeout=120).inner_text()
    assert "fake-mini" in report
    assert re.search(r"accuracy\s+1\.000", report), report  # the fake answers every ticket right
    assert fake_openai.stats().requests >= 12

    chat.send("/export csv")
    chat.wait_for_text("Exported 18 row(s) of tickets", timeout=60)
    path = chat.download("tickets-", timeout=60)  # tickets-DATE-TIME.csv, not the uploaded tickets.csv
    with path.open(newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == 18


@pytest.fixture(scope="module")
def login_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return setup_demo_home(tmp_path_factory.mktemp("login-home"))


@pytest.fixture(scope="module")
def login_server(chainlit_server: StartServer, login_home: Path) -> ChainlitServer:
    return chainlit_server(home=login_home, env={"LABELPILOT_USERS": "alice:wonder-land-7"})


def test_login_records_the_author_and_a_chat_resumes_from_history(
    chat: ChatPage, login_server: ChainlitServer, login_home: Path
) -> None:
    chat.open(login_server.url, user="alice", password="wonder-land-7")
    chat.wait_for_text("reader-preference", timeout=30)
    chat.send("/use support-intents")
    chat.wait_for_text("support-intents", timeout=30)
    before = ground_truth(login_home, "support-intents")
    chat.send("/gt 1")
    [label] = label_cards(chat, 1)
    chat.wait_for_text("Done: 1 labeled", timeout=30)
    added = {t: v for t, v in ground_truth(login_home, "support-intents").items() if t not in before}
    assert list(added.values()) == [(label, "chat", "alice")]
    chat.send("/export csv")
    chat.wait_for_text("Exported", timeout=60)
    thread_url = chat.page.url
    assert "/thread/" in thread_url

    # A new page on the thread's address replays the conversation — its card and its file too — and the
    # agent remembers its project (a new chat would work on the first project, reader-preference).
    chat.page.goto(thread_url)
    chat.wait_for_text("1 item(s) to label", timeout=30)
    chat.page.locator(".task-card").first.wait_for(state="visible", timeout=30_000)
    path = chat.download("support-intents-", timeout=30)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    [(task, _)] = added.items()
    assert rows[task]["label"] == label
    # The file is served to its owner only.
    href = chat.page.locator("a[download]").filter(has_text="support-intents-").last.get_attribute("href")
    assert href is not None and href.startswith("/labelpilot/chat-files/")
    assert httpx.get(login_server.url + href, timeout=10).status_code in (401, 404)
    chat.send("/status")
    chat.wait_for_text("Project support-intents", timeout=30)


def test_a_wrong_password_is_refused(page: Any, login_server: ChainlitServer) -> None:
    chat = ChatPage(page)
    with pytest.raises(AssertionError, match="refused"):
        chat.open(login_server.url, user="alice", password="not-it")
