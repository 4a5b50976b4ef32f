"""Agent test helpers: a context on the test's data folder, conversations on a real SQLite checkpointer,
small projects, and an HTTP-level fake of the OpenAI chat endpoint (respx) that plays the agent model from
a script while answering labeling and writer requests from their content."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from agent.context import AgentContext
from agent.conversation import Conversation
from agent.graph import build_graph
from agent.memory import open_checkpointer
from tests.tools.test_llm import API_KEY, ENDPOINT, completion
from tools.groundtruth import set_label
from tools.labelspec import LabelSpec
from tools.llm import CapabilityStore, EndpointCapabilities, OutputMode
from tools.projects import create_project
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.storage import Database, Task

CLASSES = ["Sports", "World", "Business"]
SPEC = LabelSpec.from_classes(CLASSES, input_fields=["text"])
MODEL = "gpt-4o-mini"
FAST = RateLimits(rpm=60_000, max_concurrency=8)


def gold_of(n: int) -> str:
    return CLASSES[n % 3]


def make_project(db: Database, *, items: int = 12, labeled: int = 0, name: str = "news") -> None:
    """A project of `items` news stories ("sports story number 3"); the first `labeled` have ground truth."""
    summary = create_project(db, name, spec=SPEC)
    with db.session() as session:
        for n in range(1, items + 1):
            session.add(
                Task(
                    project_id=summary.id,
                    external_id=f"t{n}",
                    content_hash=f"h{n}",
                    data={"text": f"{gold_of(n).lower()} story number {n}"},
                )
            )
    for n in range(1, labeled + 1):
        set_label(db, name, f"t{n}", gold_of(n))


@asynccontextmanager
async def chat(
    context: AgentContext, thread: str = "test-thread", **graph: Any
) -> AsyncIterator[Conversation]:
    """A conversation on the data folder's SQLite checkpointer (closed afterwards)."""
    async with open_checkpointer(context.settings) as saver:
        yield Conversation(build_graph(context, checkpointer=saver, **graph), context, thread)


@pytest.fixture
def context(settings: Settings, db: Database) -> AgentContext:
    """An offline agent context; jobs run in the foreground so a turn ends when its job does."""
    return AgentContext(settings=settings, db=db, foreground_s=None, rate_limits=FAST, user="tester")


@pytest.fixture
def model_settings(settings: Settings) -> Settings:
    """Settings with a configured endpoint whose capabilities are known (no probe requests)."""
    configured = settings.model_copy(
        update={"openai_api_key": SecretStr(API_KEY), "openai_base_url": ENDPOINT}
    )
    CapabilityStore.for_settings(configured).remember(
        ENDPOINT, MODEL, EndpointCapabilities(mode=OutputMode.json_schema, logprobs=False)
    )
    return configured


@pytest.fixture
def model_context(model_settings: Settings, db: Database, http: httpx.AsyncClient) -> AgentContext:
    """An agent context whose model calls (agent, labelers, writer) go through the respx-mocked client."""
    return AgentContext(
        settings=model_settings,
        db=db,
        foreground_s=None,
        rate_limits=FAST,
        user="tester",
        http_async_client=http,
    )


# ---------------------------------------------------------------------------------------------- the fake


def tool_call(name: str, args: dict[str, Any]) -> httpx.Response:
    """An agent reply calling one tool, as an OpenAI-compatible server sends it."""
    body = json.loads(completion(None).content)
    body["choices"][0]["message"]["tool_calls"] = [
        {
            "id": f"call_{uuid.uuid4().hex[:8]}",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }
    ]
    body["choices"][0]["finish_reason"] = "tool_calls"
    return httpx.Response(200, json=body)


def say(text: str) -> httpx.Response:
    """An agent reply with text only."""
    return completion(text)


AgentReply = httpx.Response | Callable[[dict[str, Any]], httpx.Response]


def label_named_in_text(body: dict[str, Any]) -> httpx.Response:
    """Answer a labeling request with the class its task text names ("sports story number 3" → Sports)."""
    text = body["messages"][-1]["content"].lower()
    label = next((c for c in CLASSES if c.lower() in text), CLASSES[0])
    return completion(json.dumps({"label": label}), usage=(120, 6, 0))


class FakeOpenAI:
    """The respx side effect: agent requests (they carry our tools) get the scripted replies in order;
    labeling requests get `label`'s answer; writer requests (WRITER_MARKER) get `writer`'s."""

    def __init__(self) -> None:
        self.agent_replies: list[AgentReply] = []
        self.agent_requests: list[dict[str, Any]] = []
        #: May return an awaitable (respx awaits it): a slow endpoint.
        self.label: Callable[[dict[str, Any]], Any] = label_named_in_text
        self.writer: Callable[[dict[str, Any]], httpx.Response] | None = None
        self.labeling_requests = 0
        self.writer_requests = 0

    def script(self, *replies: AgentReply) -> None:
        """Queue the agent model's next replies."""
        self.agent_replies.extend(replies)

    def __call__(self, request: httpx.Request) -> Any:
        body = json.loads(request.content)
        names = {t["function"]["name"] for t in body.get("tools") or []}
        if "project_status" in names:
            self.agent_requests.append(body)
            assert self.agent_replies, f"unscripted agent request: {body['messages'][-1]}"
            reply = self.agent_replies.pop(0)
            return reply(body) if callable(reply) else reply
        from evals.optimize import WRITER_MARKER

        if WRITER_MARKER in str(body["messages"][0]["content"]):
            self.writer_requests += 1
            assert self.writer is not None, "unscripted writer request"
            return self.writer(body)
        self.labeling_requests += 1
        return self.label(body)


def story_number(body: dict[str, Any]) -> int:
    """The n of "story number n" in a labeling request."""
    found = re.search(r"story number (\d+)", body["messages"][-1]["content"])
    assert found is not None
    return int(found.group(1))


def tool_results(body: dict[str, Any]) -> list[str]:
    """The tool results an agent request carries."""
    return [m["content"] for m in body["messages"] if m["role"] == "tool"]
