"""`ChatPage`: a page object for a Chainlit 2.12 chat, driven with Playwright's sync API.

What it relies on in Chainlit's DOM (measured on 2.12.0):

- composer: `#chat-input` (a textarea), `#chat-submit` (replaced by `#stop-button` while a task runs and
  disabled while an AskActionMessage waits), attachments listed in `#attachments`;
- messages: `[data-step-type="assistant_message"]` and `[data-step-type="user_message"]`;
- `cl.Action` buttons: `<button id="ACTION ID">LABEL</button>` inside the message (the message's copy
  button has no id); a click POSTs `/project/action`, whose response comes once the callback returned.
  AskActionMessage buttons look the same but answer over the socket (no HTTP request) and vanish;
- files: the hidden `#upload-button-input`; each file is POSTed to `/project/file` at once, and a message
  sent before every upload finished silently drops the unfinished ones. Choosing the same file again
  does nothing (the input's value does not change), so the input is cleared first;
- `cl.File` elements shown inline: `<a class="inline-file" download="NAME" href="/project/file/...">`;
- login: `#email`, `#password`, a submit button; POST `/login` answers 401 on a wrong password;
- with chat history (a data layer and a login), the first interaction moves the page to `/thread/ID` and
  re-mounts the composer: text typed meanwhile is lost, so sends wait for that move.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Locator, Page, Request, Response, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

ASSISTANT = '[data-step-type="assistant_message"]'
USER = '[data-step-type="user_message"]'
COMPOSER = "#chat-input"
SUBMIT = "#chat-submit"
UPLOAD_INPUT = "#upload-button-input"

DEFAULT_TIMEOUT = 15.0


def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _exact(label: str) -> re.Pattern[str]:
    return re.compile(rf"^\s*{re.escape(label)}\s*$")


class ChatPage:
    """A Chainlit chat in a Playwright page. Timeouts are in seconds."""

    def __init__(self, page: Page, *, artifacts_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT):
        self.page = page
        self.timeout = timeout
        self.artifacts_dir = artifacts_dir or Path(tempfile.mkdtemp(prefix="chat-page-"))
        #: Whether the app keeps a chat history per user (known once the page could ask it).
        self._history: bool | None = None

    # ------------------------------------------------------------------------------------------ state

    @property
    def has_history(self) -> bool:
        """Whether chats are persisted per user (a data layer and a login): the /thread/ URL move.

        Asked from the app (GET /auth/config and /project/settings, with the page's cookies) once the
        page is signed in, then remembered.
        """
        if self._history is None:
            parts = urlsplit(self.page.url)
            if parts.scheme not in {"http", "https"}:
                return False
            base = f"{parts.scheme}://{parts.netloc}"
            auth = self.page.request.get(f"{base}/auth/config")
            if not auth.ok:
                return False
            if not auth.json().get("requireLogin"):
                self._history = False
                return False
            settings = self.page.request.get(f"{base}/project/settings")
            if not settings.ok:  # not signed in yet
                return False
            self._history = bool(settings.json().get("dataPersistence"))
        return self._history

    def composer(self) -> Locator:
        """The message box."""
        return self.page.locator(COMPOSER)

    def assistant_messages(self) -> Locator:
        """Every assistant message."""
        return self.page.locator(ASSISTANT)

    def assistant_texts(self) -> list[str]:
        """The text of every assistant message, oldest first."""
        return self.page.locator(ASSISTANT).all_inner_texts()

    def user_texts(self) -> list[str]:
        """The text of every user message, oldest first."""
        return self.page.locator(USER).all_inner_texts()

    def buttons(self, label: str) -> Locator:
        """The visible buttons of assistant messages labeled exactly `label`, in page order."""
        return self.page.locator(f"{ASSISTANT} button").filter(has_text=_exact(label), visible=True)

    def button_labels(self) -> list[str]:
        """The labels of the visible action buttons, in page order."""
        buttons = self.page.locator(f"{ASSISTANT} button[id]").filter(visible=True)
        return [text.strip() for text in buttons.all_inner_texts()]

    # ------------------------------------------------------------------------------------------ navigation

    def open(
        self, url: str, *, user: str | None = None, password: str | None = None, timeout: float | None = None
    ) -> ChatPage:
        """Load the app and wait for the composer; log in first when the app asks and credentials are given."""
        timeout = timeout or max(self.timeout, 30.0)
        self.page.goto(url, timeout=_ms(timeout))
        self.page.locator(f"{COMPOSER}, #email").first.wait_for(state="visible", timeout=_ms(timeout))
        if self.page.locator("#email").is_visible():
            if user is None or password is None:
                raise AssertionError(f"{url} asks for a login: pass user= and password= to open()")
            self.login(user, password, timeout=timeout)
        expect(self.composer()).to_be_visible(timeout=_ms(timeout))
        return self

    def login(self, user: str, password: str, *, timeout: float | None = None) -> None:
        """Sign in on the login page and wait for the chat; AssertionError when the login is refused."""
        timeout = timeout or max(self.timeout, 30.0)
        self.page.locator("#email").fill(user, timeout=_ms(timeout))
        self.page.locator("#password").fill(password)

        def is_login(response: Response) -> bool:
            return response.request.method == "POST" and response.url.split("?", 1)[0].endswith("/login")

        with self.page.expect_response(is_login, timeout=_ms(timeout)) as answer:
            self.page.locator("button[type=submit]").click()
        if not answer.value.ok:
            raise AssertionError(
                f"login as {user!r} refused: HTTP {answer.value.status} {answer.value.text()}"
            )
        expect(self.composer()).to_be_visible(timeout=_ms(timeout))

    # ------------------------------------------------------------------------------------------ sending

    def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no task runs (the send button is back in place of the stop button)."""
        self.page.locator(SUBMIT).wait_for(state="visible", timeout=_ms(timeout or self.timeout))

    def send(self, text: str, *, timeout: float | None = None) -> None:
        """Type a message, press Enter, and wait until it shows as a user message.

        Waits first for the previous task to end. The composer can be reset under the cursor (right after
        the page connects, and when chat history moves the page to /thread/ID), so the text is typed
        until it sticks and the send button is enabled, and typed again if Enter sent nothing.
        """
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        self.wait_idle(timeout)
        sent = self.page.locator(USER)
        sent_before = sent.count()
        while True:
            self._type(text, deadline)
            self.composer().press("Enter")
            try:
                expect(sent).to_have_count(sent_before + 1, timeout=_ms(min(3.0, timeout)))
                break
            except AssertionError:
                # A sent message shows at once (before the server answers): nothing was sent.
                if sent.count() > sent_before:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"the message {text!r} was not sent within {timeout} s") from None
        self._settle_thread(timeout)

    def _type(self, text: str, deadline: float) -> None:
        """Fill the composer until it holds `text` and the send button is enabled."""
        box = self.composer()
        ready = self.page.locator(f"{SUBMIT}:enabled")
        while True:
            if box.input_value() != text:
                box.fill(text, timeout=_ms(max(0.1, deadline - time.monotonic())))
            if box.input_value() == text and ready.count() > 0:
                return
            if time.monotonic() > deadline:
                state = "enabled" if ready.count() else "disabled or absent"
                raise AssertionError(
                    f"cannot send {text!r}: the composer holds {box.input_value()!r}, the send button is {state}"
                )
            self.page.wait_for_timeout(100)

    def _settle_thread(self, timeout: float) -> None:
        """After a chat's first interaction with history on, wait for the move to /thread/ID."""
        if self.has_history and "/thread/" not in self.page.url:
            self.page.wait_for_url(re.compile(r"/thread/[^/?#]+"), timeout=_ms(timeout))
            expect(self.composer()).to_be_visible(timeout=_ms(timeout))

    def wait_for_text(
        self, text: str | re.Pattern[str], *, timeout: float | None = None, anywhere: bool = False
    ) -> Locator:
        """Wait until an assistant message (or with anywhere=True, anything on the page) shows `text`.

        A str matches a substring, case-insensitively and with whitespace normalised (Playwright's
        `has_text`); returns the newest matching message (or element).
        """
        if anywhere:
            found = self.page.get_by_text(text).last
        else:
            found = self.page.locator(ASSISTANT).filter(has_text=text).last
        try:
            found.wait_for(state="visible", timeout=_ms(timeout or self.timeout))
        except PlaywrightTimeoutError as exc:
            where = "on the page" if anywhere else "in an assistant message"
            said = "\n---\n".join(self.assistant_texts()[-5:])
            raise AssertionError(f"{text!r} not found {where}; the last assistant messages:\n{said}") from exc
        return found

    # ------------------------------------------------------------------------------------------ buttons

    def click_button(
        self, label: str, *, nth_last: bool = True, until_gone: bool = False, timeout: float | None = None
    ) -> None:
        """Click the last (or first) visible action button labeled exactly `label`; wait until handled.

        A `cl.Action` button is handled when its POST /project/action answered (the callback returned;
        an HTTP error raises AssertionError, but an exception in the callback still answers 200: see
        the server log). An AskActionMessage button is handled when it disappeared. With
        `until_gone=True`, also wait until the clicked button left the page (a callback that removes or
        replaces its message's buttons), so that the next click cannot hit it again.
        """
        timeout = timeout or self.timeout
        buttons = self.buttons(label)
        try:
            buttons.first.wait_for(state="visible", timeout=_ms(timeout))
        except PlaywrightTimeoutError as exc:
            raise AssertionError(f"no button {label!r}; visible buttons: {self.button_labels()}") from exc
        target = buttons.last if nth_last else buttons.first
        button_id = target.get_attribute("id")
        clicked = self.page.locator(f'button[id="{button_id}"]') if button_id else target
        actions: list[Request] = []

        def on_request(request: Request) -> None:
            if request.method == "POST" and request.url.split("?", 1)[0].endswith("/project/action"):
                actions.append(request)

        self.page.on("request", on_request)
        try:
            clicked.click(timeout=_ms(timeout))
            deadline = time.monotonic() + timeout
            gone_since: float | None = None
            while not actions:
                if clicked.count() == 0 or not clicked.first.is_visible():
                    gone_since = gone_since or time.monotonic()
                    if time.monotonic() - gone_since > 0.3:
                        break  # an AskActionMessage answer: sent over the socket
                if time.monotonic() > deadline:
                    raise AssertionError(f"clicking {label!r} had no visible effect within {timeout} s")
                self.page.wait_for_timeout(50)
            if actions:
                response = actions[0].response()
                if response is None or not response.ok:
                    detail = f"HTTP {response.status}: {response.text()}" if response else "no response"
                    raise AssertionError(f"the action of {label!r} failed on the server ({detail})")
        finally:
            self.page.remove_listener("request", on_request)
        if until_gone:
            try:
                expect(clicked).to_have_count(0, timeout=_ms(timeout))
            except AssertionError:
                raise AssertionError(
                    f"the button {label!r} is still there {timeout} s after the click"
                ) from None
        self._settle_thread(timeout)

    # ------------------------------------------------------------------------------------------ files

    def upload(
        self, files: str | Path | Sequence[str | Path], text: str = "", *, timeout: float | None = None
    ) -> None:
        """Attach files to the composer, wait until each one is uploaded, then send them with `text`.

        The files reach the server's `on_message` as `message.elements` (`cl.File` with `.name`, `.path`,
        `.mime`), with `text` as `message.content`.
        """
        timeout = timeout or self.timeout
        paths = [Path(files)] if isinstance(files, str | Path) else [Path(f) for f in files]
        self.wait_idle(timeout)
        uploads: list[Response] = []

        def on_response(response: Response) -> None:
            if response.request.method == "POST" and response.url.split("?", 1)[0].endswith("/project/file"):
                uploads.append(response)

        chooser = self.page.locator(UPLOAD_INPUT)
        self.page.on("response", on_response)
        try:
            chooser.set_input_files([], timeout=_ms(timeout))  # the same file twice would not upload
            chooser.set_input_files([str(p) for p in paths], timeout=_ms(timeout))
            deadline = time.monotonic() + timeout
            while len(uploads) < len(paths):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(uploads)} of {len(paths)} files uploaded within {timeout} s")
                self.page.wait_for_timeout(50)
        finally:
            self.page.remove_listener("response", on_response)
        failed = [f"HTTP {r.status}: {r.text()}" for r in uploads if not r.ok]
        if failed:
            raise AssertionError(f"upload refused: {failed}")
        attachments = self.page.locator("#attachments")
        for path in paths:
            expect(attachments).to_contain_text(path.name, timeout=_ms(timeout))
        self.send(text, timeout=timeout)
        last_sent = self.page.locator(USER).last
        for path in paths:
            expect(last_sent).to_contain_text(path.name, timeout=_ms(timeout))

    def download(self, link_text: str, *, timeout: float | None = None) -> Path:
        """Click the newest file link showing `link_text` and save the download; return its path."""
        timeout = timeout or self.timeout
        link = self.page.locator("a[download]").filter(has_text=link_text, visible=True).last
        try:
            link.wait_for(state="visible", timeout=_ms(timeout))
        except PlaywrightTimeoutError as exc:
            names = self.page.locator("a[download]").evaluate_all("links => links.map(a => a.download)")
            raise AssertionError(f"no file link {link_text!r}; links: {names}") from exc
        with self.page.expect_download(timeout=_ms(timeout)) as info:
            link.click()
        download = info.value
        failure = download.failure()
        if failure:
            raise AssertionError(f"download of {link_text!r} failed: {failure}")
        target = self.artifacts_dir / "downloads" / download.suggested_filename
        target.parent.mkdir(parents=True, exist_ok=True)
        download.save_as(target)
        return target

    # ------------------------------------------------------------------------------------------ evidence

    def screenshot(self, name: str) -> Path:
        """Save a full-page screenshot as ARTIFACTS/NAME.png and return its path."""
        path = self.artifacts_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path
