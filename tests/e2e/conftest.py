"""Browser end-to-end fixtures: the real Chainlit server in a subprocess, driven by headless Chromium.

- `labelpilot_home`: a data folder with the demo projects (`labelpilot demo setup`), one per test module.
- `chainlit_server`: a factory that starts `chainlit run APP --headless` on a free loopback port and
  returns a `ChainlitServer` once `GET /` answers 200; every server it started stops after the module.
- `labelpilot_server`: `ui/app.py` of this repository on `labelpilot_home` (one per module).
- `browser` / `page` / `chat`: Chromium (`/usr/bin/chromium`), a fresh context per test that aborts every
  request not to 127.0.0.1/localhost, and the `ChatPage` page object.

On a failed test, a screenshot and the page's HTML are saved, and their paths, the page's console errors,
the blocked external requests and the tail of every running server's log are added to the report. A test
during which a server logged a Python traceback fails (`no_server_tracebacks`), unless it requests the
`expect_server_errors` fixture.

Without `/usr/bin/chromium` the tests skip, unless LABELPILOT_REQUIRE_BROWSER=1 (CI) makes that a failure.

Playwright's sync API is used throughout, so every test here is a plain (sync) function. The Playwright
instance is module-scoped on purpose: between calls it marks its own event loop as the thread's running
loop, which breaks pytest-asyncio tests that run later in the same session while it is alive.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, ViewportSize, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.e2e.chat import ChatPage

REPO = Path(__file__).resolve().parents[2]
UI_DIR = REPO / "ui"
BIN_DIR = Path(sys.executable).parent
CHAINLIT = BIN_DIR / "chainlit"
LABELPILOT = BIN_DIR / "labelpilot"
CHROMIUM = Path("/usr/bin/chromium")
#: Flags measured to work here (see ../shared/STACK.md, "Browser end-to-end tests").
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
SERVER_START_TIMEOUT = 60.0
#: How long a test's page waits at the end for a running turn to finish before it closes.
IDLE_AT_TEARDOWN_MS = 15_000
LOG_TAIL_LINES = 60

# The server never sees the caller's model keys, data folders, logins or Chainlit/Literal settings.
# CI=true would switch Chainlit to its CI mode, which replaces OPENAI_API_KEY with a fake key.
_SCRUBBED_PREFIXES = (
    "OPENAI_",
    "LABELPILOT_",
    "CHAINLIT_",
    "LITERAL_",
    "OAUTH_",
    "APP_AWS_",
    "APP_GCS_",
    "APP_AZURE_",
)
_SCRUBBED_NAMES = frozenset({"CI", "DATABASE_URL", "BUCKET_NAME", "DEV_AWS_ENDPOINT"})
#: The demo reads ../shared/datasets, or the folder this names: kept as the caller set it.
_KEPT_NAMES = frozenset({"LABELPILOT_SHARED_DIR"})


def child_env(home: Path | None = None, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a server or CLI child: scrubbed, LABELPILOT_HOME=home, then the overrides.

    An override of None removes the variable.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key in _KEPT_NAMES or not (key.startswith(_SCRUBBED_PREFIXES) or key in _SCRUBBED_NAMES)
    }
    no_proxy = ",".join(filter(None, [env.get("NO_PROXY", ""), "127.0.0.1,localhost"]))
    env.update(NO_PROXY=no_proxy, no_proxy=no_proxy, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if home is not None:
        env["LABELPILOT_HOME"] = str(home)
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def setup_demo_home(home: Path) -> Path:
    """Create the demo projects in `home` with the real CLI (`labelpilot demo setup`)."""
    result = subprocess.run(
        [str(LABELPILOT), "demo", "setup"],
        env=child_env(home),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        f"labelpilot demo setup failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return home


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------------------------- servers


@dataclass(eq=False)
class ChainlitServer:
    """A running `chainlit run` subprocess."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: CHAINLIT_APP_ROOT of the server: its `.chainlit/`, `.files/` and `public/` live here.
    root: Path
    env: dict[str, str] = field(repr=False)

    def log_text(self) -> str:
        """Everything the server wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of the server's output."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_size(self) -> int:
        """How many bytes the server has logged (a mark for `tracebacks(since=...)`)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def tracebacks(self, since: int = 0) -> list[str]:
        """The Python tracebacks (with the log line before each) logged after byte `since`."""
        with self.log_path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        blocks = re.split(r"(?m)^(?=\S.*\n?Traceback \(most recent call last\):)", text)
        return [block.strip() for block in blocks if "Traceback (most recent call last):" in block]

    def wait_for_log(self, text: str, timeout: float = 10.0) -> None:
        """Wait until the server's output contains `text`."""
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the server log within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.1)

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout` seconds; return the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        _LIVE_SERVERS.discard(self)
        return int(self.process.returncode)


#: Servers started and not stopped yet: their logs go into the report of a failing test.
_LIVE_SERVERS: set[ChainlitServer] = set()


class StartServer(Protocol):
    """The `chainlit_server` factory."""

    def __call__(
        self,
        app: str | Path = "app.py",
        *,
        app_dir: Path | None = None,
        home: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = SERVER_START_TIMEOUT,
    ) -> ChainlitServer: ...


def _prepare_root(root: Path, app_dir: Path) -> None:
    """A Chainlit app root for one server: the app folder's config, `public/` and `chainlit.md`.

    Chainlit writes `.chainlit/`, `.files/` and `chainlit.md` into its app root; a private root keeps them
    out of the repository and makes concurrent servers independent. Without a `.chainlit/config.toml` in
    the app folder, Chainlit writes its default one (as it does on a fresh clone).
    """
    root.mkdir(parents=True, exist_ok=True)
    config = app_dir / ".chainlit" / "config.toml"
    if config.is_file():
        (root / ".chainlit").mkdir(exist_ok=True)
        shutil.copy2(config, root / ".chainlit" / "config.toml")
    if (app_dir / "public").is_dir() and not (root / "public").exists():
        (root / "public").symlink_to(app_dir / "public", target_is_directory=True)
    if (app_dir / "chainlit.md").is_file():
        shutil.copy2(app_dir / "chainlit.md", root / "chainlit.md")


def _wait_until_serving(server: ChainlitServer, timeout: float) -> str | None:
    """Poll `GET /` until it answers 200; return None, or why the server is not serving."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if not server.alive:
                return f"the server exited with code {server.process.returncode}"
            try:
                status = client.get(f"{server.url}/").status_code
            except httpx.TransportError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200 and server.alive:
                    return None
                last_error = f"HTTP {status}"
            time.sleep(0.2)
    return f"no HTTP 200 from {server.url}/ within {timeout:.0f} s (last: {last_error})"


def start_chainlit(
    workdir: Path,
    app: str | Path = "app.py",
    *,
    app_dir: Path | None = None,
    home: Path | None = None,
    env: Mapping[str, str | None] | None = None,
    timeout: float = SERVER_START_TIMEOUT,
) -> ChainlitServer:
    """Start `chainlit run APP --headless` in `app_dir` (default: ui/) and wait until it serves."""
    app_path = Path(app)
    folder = (app_dir or (app_path.parent if app_path.is_absolute() else UI_DIR)).resolve()
    root = workdir / "chainlit-root"
    _prepare_root(root, folder)
    overrides: dict[str, str | None] = {
        "CHAINLIT_APP_ROOT": str(root),
        # Chainlit loads CWD/.env into the server's environment: a developer's ui/.env must not leak in.
        "CHAINLIT_ENV_FILE": str(root / ".env"),
        **(env or {}),
    }
    server_env = child_env(home, overrides)
    problem = "not started"
    for attempt in range(2):  # a second port if another process took the first one meanwhile
        port = free_port()
        log_path = workdir / f"server-{port}.log"
        command = [str(CHAINLIT), "run", str(app_path), "--headless", "--host", "127.0.0.1"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=folder,
                env=server_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = ChainlitServer(
            url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, root=root, env=server_env
        )
        _LIVE_SERVERS.add(server)
        problem = _wait_until_serving(server, timeout) or ""
        if not problem:
            return server
        server.stop()
        if attempt == 0 and "address already in use" in server.log_text().lower():
            continue
        break
    pytest.fail(
        f"Chainlit did not start ({problem}): {' '.join(command)} in {folder}\n"
        f"--- server log {log_path}:\n{server.log_tail(120)}",
        pytrace=False,
    )


@pytest.fixture(scope="module")
def chainlit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartServer]:
    """Factory: `chainlit_server(app="app.py", *, app_dir=None, home=None, env=None) -> ChainlitServer`.

    Starts the real server as `cd APP_DIR && chainlit run APP --headless --host 127.0.0.1 --port FREE`
    (APP_DIR defaults to ui/ of this repository, or the folder of an absolute APP), with the scrubbed
    environment of `child_env` plus LABELPILOT_HOME=home and `env` (None removes a variable), and
    returns once `GET /` answers 200. The servers stop (SIGTERM, then SIGKILL) at the end of the module.
    """
    started: list[ChainlitServer] = []

    def start(
        app: str | Path = "app.py",
        *,
        app_dir: Path | None = None,
        home: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = SERVER_START_TIMEOUT,
    ) -> ChainlitServer:
        workdir = tmp_path_factory.mktemp("chainlit-server")
        server = start_chainlit(workdir, app, app_dir=app_dir, home=home, env=env, timeout=timeout)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def expect_server_errors() -> None:
    """Request this in a test that makes a server log a traceback on purpose (see `no_server_tracebacks`)."""


@pytest.fixture(autouse=True)
def no_server_tracebacks(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test during which a running server logged a Python traceback.

    Chainlit catches exceptions of handlers and action callbacks: it logs them, and for an action it
    still answers HTTP 200 and shows nothing in the page, so the log is the only trace of the error.
    """
    marks = {server: server.log_size() for server in _LIVE_SERVERS}
    yield
    if "expect_server_errors" in request.fixturenames:
        return
    found = [
        f"{server.url}:\n{block}"
        for server in list(_LIVE_SERVERS)
        for block in server.tracebacks(since=marks.get(server, 0))
    ]
    if found:
        pytest.fail("a server logged a traceback during the test:\n" + "\n\n".join(found), pytrace=False)


@pytest.fixture(scope="module")
def labelpilot_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A labelpilot data folder with the demo projects `reader-preference` and `support-intents`."""
    return setup_demo_home(tmp_path_factory.mktemp("labelpilot-home"))


@pytest.fixture(scope="module")
def labelpilot_server(chainlit_server: StartServer, labelpilot_home: Path) -> ChainlitServer:
    """This repository's `ui/app.py` on `labelpilot_home`, offline (no model configured)."""
    return chainlit_server(home=labelpilot_home)


# ---------------------------------------------------------------------------------------------- browser


def _require_browser(reason: str) -> NoReturn:
    """Skip, or fail when the browser tests must run (LABELPILOT_REQUIRE_BROWSER=1)."""
    if os.environ.get("LABELPILOT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (LABELPILOT_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def require_chromium() -> None:
    """Skip (or fail) a module before any server starts when there is no browser to drive it."""
    if not CHROMIUM.exists():
        _require_browser(f"{CHROMIUM} not found (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser(require_chromium: None) -> Iterator[Browser]:
    """Headless Chromium from /usr/bin/chromium (module scope: see the module docstring)."""
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        playwright.stop()


@dataclass
class PageLog:
    """What a page did that helps to explain a failure."""

    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


_PAGE_KEY = pytest.StashKey[Page]()
_PAGE_LOG_KEY = pytest.StashKey[PageLog]()
_ARTIFACTS_KEY = pytest.StashKey[Path]()


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"data", "blob", "about"} or (parts.hostname or "") in LOCAL_HOSTS


@pytest.fixture
def e2e_artifacts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test's folder for screenshots, page HTML and downloads."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)[:80]
    folder = tmp_path_factory.getbasetemp() / "e2e-artifacts" / name
    folder.mkdir(parents=True, exist_ok=True)
    request.node.stash[_ARTIFACTS_KEY] = folder
    return folder


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest, e2e_artifacts: Path) -> Iterator[Page]:
    """A page in a fresh context: 1280x900, downloads accepted, every non-loopback request aborted."""
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True, locale="en-US")
    log = PageLog()

    def only_local(route: Route) -> None:
        if _is_local(route.request.url):
            route.continue_()
        else:
            log.blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    new_page = context.new_page()
    new_page.on("console", lambda msg: log.console_errors.append(msg.text) if msg.type == "error" else None)
    new_page.on("pageerror", lambda exc: log.page_errors.append(str(exc)))
    request.node.stash[_PAGE_KEY] = new_page
    request.node.stash[_PAGE_LOG_KEY] = log
    try:
        yield new_page
        # Let a turn still running finish: closing the page under it makes the server log
        # "no active connection" tracebacks, which would land in the next test's window.
        with contextlib.suppress(PlaywrightError):
            new_page.locator("#stop-button").wait_for(state="detached", timeout=IDLE_AT_TEARDOWN_MS)
    finally:
        context.close()


@pytest.fixture
def chat(page: Page, e2e_artifacts: Path) -> ChatPage:
    """The chat page object on `page` (screenshots and downloads go to the test's artifacts folder)."""
    return ChatPage(page, artifacts_dir=e2e_artifacts)


# ---------------------------------------------------------------------------------------------- hooks


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/e2e is a browser test (tryfirst: before `-m` deselects by marker)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)


def _save_page(item: pytest.Item) -> list[str]:
    """Screenshot and HTML of the test's page; return report lines."""
    page = item.stash.get(_PAGE_KEY, None)
    folder = item.stash.get(_ARTIFACTS_KEY, None)
    if page is None or folder is None:
        return []
    lines = [f"url: {page.url}"]
    savers: list[tuple[str, Callable[[Path], object]]] = [
        ("screenshot", lambda path: page.screenshot(path=str(path), full_page=True)),
        ("html", lambda path: path.write_text(page.content())),
    ]
    for kind, save in savers:
        path = folder / ("failure.png" if kind == "screenshot" else "failure.html")
        try:
            save(path)
        except Exception as exc:  # noqa: BLE001 - the report must not hide the test's own failure
            lines.append(f"{kind}: could not be saved ({type(exc).__name__}: {exc})")
        else:
            lines.append(f"{kind}: {path}")
    log = item.stash.get(_PAGE_LOG_KEY, None)
    if log is not None:
        noise = re.compile(r"Failed to load resource: net::ERR_FAILED")
        errors = [text for text in log.console_errors if not noise.search(text)]
        lines += [f"console error: {text}" for text in errors[-20:]]
        lines += [f"page error: {text}" for text in log.page_errors[-20:]]
        lines += [f"blocked (not loopback): {url}" for url in sorted(set(log.blocked))]
    return lines


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On failure: save the page, and attach the artifacts' paths and the servers' log tails."""
    report: pytest.TestReport = yield
    if report.failed and report.when in {"setup", "call"}:
        lines = _save_page(item) if report.when == "call" else []
        if lines:
            report.sections.append((f"e2e artifacts in {item.stash[_ARTIFACTS_KEY]}", "\n".join(lines)))
        for server in list(_LIVE_SERVERS):
            state = "running" if server.alive else f"exited with {server.process.returncode}"
            report.sections.append(
                (f"chainlit server {server.url} ({state}), log {server.log_path}", server.log_tail())
            )
    return report
