"""What every node and tool of the agent reads from the LangGraph runtime: settings and service handles.

One `AgentContext` is built at an entry point (the CLI chat, the Chainlit app, a test) and passed to each
run (`graph.ainvoke(..., context=context)`); nothing here connects to anything at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agent.services import JobRunner
from tools.ratelimit import RateLimits
from tools.settings import Settings
from tools.storage import Database

#: How long a labeling tool waits for its job before leaving it running and answering (seconds).
DEFAULT_FOREGROUND_S = 30.0


def rate_limits_from_env(env: Mapping[str, str] | None = None) -> RateLimits:
    """The endpoint's limits from LABELPILOT_RPM / LABELPILOT_TPM / LABELPILOT_CONCURRENCY (the CLI's)."""
    env = os.environ if env is None else env
    tpm = env.get("LABELPILOT_TPM")
    return RateLimits(
        rpm=float(env.get("LABELPILOT_RPM") or 500),
        tpm=float(tpm) if tpm else None,
        max_concurrency=int(env.get("LABELPILOT_CONCURRENCY") or 16),
    )


@dataclass(kw_only=True)
class AgentContext:
    """Run dependencies of the agent: settings, the database, who is talking, and test hooks."""

    settings: Settings
    db: Database
    #: The project to act on when the conversation has not chosen one (CLI --project, $LABELPILOT_PROJECT).
    project: str | None = None
    #: Who is talking: recorded as the author of ground-truth labels and part of default thread ids.
    user: str = "chat"
    #: Where tables, pictures and other files for the UI are written (default: <data folder>/artifacts).
    artifacts_dir: Path | None = None
    #: The HTTP client of every model call (the agent's and the labelers'); tests point it at a fake.
    http_async_client: httpx.AsyncClient | None = None
    #: The labeling endpoint's limits (requests/tokens per minute, requests in flight).
    rate_limits: RateLimits = field(default_factory=rate_limits_from_env)
    #: Seconds a labeling tool waits for its job before answering; None waits until the job ends
    #: (one-shot CLI turns, whose process would end the job when it exits).
    foreground_s: float | None = DEFAULT_FOREGROUND_S
    #: The chat's settings panel: a labeling model that overrides the prompt version's, and the number of
    #: few-shot examples per item (None: as the version says).
    labeling_model: str | None = None
    few_shot_k: int | None = None
    #: Jobs this process runs in the background (watch and cancel them from the chat).
    jobs: JobRunner = field(default_factory=JobRunner)

    @property
    def artifacts_folder(self) -> Path:
        """The folder artifacts are written to (created on first use)."""
        folder = self.artifacts_dir or self.settings.home / "artifacts"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
