"""The command model: a LangChain chat model with no LLM behind it, so the same graph works offline.

It maps explicit commands (`/import`, `/schema`, `/gt 20`, `/eval`, `/improve`, `/label`, `/export csv`,
`/status`, `/help`, ...) and a few unambiguous phrases ("#3 is Sports", "send me everything labeled so far
as CSV", "I only care about ...") to the same tool calls a real model would make, and answers a turn's
tool results with their text. Free text it cannot map gets the list of what it understands and how to
configure a model. With a model configured, slash commands still go through here: they never cost a call.
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import BaseTool
from pydantic import Field

from agent.prompts import NO_MODEL_HELP


@dataclass(frozen=True)
class ToolIntent:
    """Call one tool with these arguments."""

    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class TextIntent:
    """Answer with this text, calling nothing."""

    text: str


Intent = ToolIntent | TextIntent
Parser = Callable[[str], Intent]


@dataclass(frozen=True)
class Command:
    """A slash command: how it is typed, what it does, and how its text becomes an intent."""

    usage: str
    summary: str
    parse: Parser


# ---------------------------------------------------------------------------------------------- parsing


class CommandSyntaxError(ValueError):
    """A command was typed in a way it cannot be read; the message says how to type it."""


def _split(text: str) -> tuple[list[str], dict[str, str]]:
    """Positional words and key=value options of a command's text (quotes group words)."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise CommandSyntaxError(f"unbalanced quotes ({exc})") from None
    positional: list[str] = []
    options: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if sep and re.fullmatch(r"[a-z_-]+", key):
            options[key.replace("-", "_")] = value
        else:
            positional.append(word)
    return positional, options


def _int(value: str, what: str) -> int:
    try:
        return int(value.lstrip("v"))
    except ValueError:
        raise CommandSyntaxError(f"{what} must be a whole number, not '{value}'") from None


def _float(value: str, what: str) -> float:
    try:
        return float(value.lstrip("$"))
    except ValueError:
        raise CommandSyntaxError(f"{what} must be a number, not '{value}'") from None


def _version_of(word: str) -> int | None:
    match = re.fullmatch(r"v?(\d+)", word.strip().lower())
    return int(match.group(1)) if match else None


def _expand_refs(text: str) -> list[str]:
    """ "#1 #3-#5 t12" -> ["#1", "#3", "#4", "#5", "t12"]."""
    refs: list[str] = []
    for word in re.split(r"[\s,;]+", text.strip()):
        if not word:
            continue
        span = re.fullmatch(r"#(\d+)-#?(\d+)", word)
        if span:
            first, last = int(span.group(1)), int(span.group(2))
            refs.extend(f"#{n}" for n in range(first, last + 1))
        else:
            refs.append(word)
    return refs


_MARKER = re.compile(r"#\d+")


def parse_assignments(text: str) -> list[dict[str, str]]:
    """Read labels given in words: "#1 is Sports, #2 World", "#3: joy, anger", "t12 Sports", "3=Sports 4=World"."""
    text = text.strip()
    markers = list(_MARKER.finditer(text))
    found: list[dict[str, str]] = []
    if markers and markers[0].start() == 0:
        for index, marker in enumerate(markers):
            end = markers[index + 1].start() if index + 1 < len(markers) else len(text)
            label = text[marker.end() : end].strip()
            label = re.sub(r"^(?:is|=|:|->|→)\s*", "", label, flags=re.IGNORECASE)
            label = re.sub(r"(?:[,;]|\band\b)\s*$", "", label, flags=re.IGNORECASE).strip()
            if not label:
                raise CommandSyntaxError(f"no label after {marker.group()}")
            found.append({"task": marker.group(), "label": label})
        return found
    pairs = re.findall(r"(\S+?)=(.+?)(?=\s+\S+?=|$)", text)
    if pairs:
        return [{"task": ref, "label": label.strip().rstrip(",;")} for ref, label in pairs]
    ref, _, label = text.partition(" ")
    if not label.strip():
        raise CommandSyntaxError("say which task and which label, e.g. #3 Sports")
    return [{"task": ref, "label": label.strip()}]


# ---------------------------------------------------------------------------------------------- commands


def _status(text: str) -> Intent:
    words, _ = _split(text)
    return ToolIntent("project_status", {"project": words[0]} if words else {})


def _use(text: str) -> Intent:
    if not text.strip():
        raise CommandSyntaxError("say which project, e.g. /use reviews")
    return ToolIntent("use_project", {"name": text.strip()})


def _new(text: str) -> Intent:
    name, _, classes = text.strip().partition(" ")
    if not name:
        raise CommandSyntaxError("give the project a name, e.g. /new reviews positive, negative")
    args: dict[str, Any] = {"name": name}
    if classes.strip():
        args["classes"] = classes.strip()
    return ToolIntent("create_project", args)


def _import(text: str) -> Intent:
    words, options = _split(text)
    if not words:
        raise CommandSyntaxError("give the file, e.g. /import reviews.csv fields=text label=sentiment")
    args: dict[str, Any] = {"path": words[0]}
    if "fields" in options:
        args["fields"] = [f.strip() for f in options["fields"].split(",") if f.strip()]
    for key, name in (("label", "label_column"), ("id", "id_column"), ("sep", "label_separator")):
        if key in options:
            args[name] = options[key]
    if "project" in options:
        args["project"] = options["project"]
    return ToolIntent("import_file", args)


def _schema(text: str) -> Intent:
    args: dict[str, Any] = {}
    body = text.strip()
    found = re.search(r"(?:^|\s)type=(\w+)", body)
    if found:
        args["schema_type"] = found.group(1)
        body = (body[: found.start()] + body[found.end() :]).strip()
    if re.search(r"(?:^|\s)--replace\b", body):
        args["replace_labels"] = True
        body = re.sub(r"(?:^|\s)--replace\b", "", body).strip()
    if not body:
        raise CommandSyntaxError("give the classes, e.g. /schema Sports, World, Business (or a label config)")
    if body.startswith("<") or body.lower().endswith(".xml"):
        args["label_config"] = body
    else:
        args["classes"] = body
    return ToolIntent("set_label_schema", args)


def _gt(text: str) -> Intent:
    body = text.strip()
    sample = re.fullmatch(r"(\d+)?\s*(random|stratified|diverse)?(?:\s+column=(\S+))?", body)
    if sample:
        args: dict[str, Any] = {"n": int(sample.group(1) or 10)}
        if sample.group(2):
            args["strategy"] = sample.group(2)
        if sample.group(3):
            args["column"] = sample.group(3)
        return ToolIntent("sample_tasks", args)
    return ToolIntent("record_labels", {"labels": parse_assignments(body)})


def _undo(text: str) -> Intent:
    if not text.strip():
        raise CommandSyntaxError("say which item, e.g. /undo #3")
    return ToolIntent("remove_label", {"task": text.strip()})


def _split_command(text: str) -> Intent:
    words, _ = _split(text)
    args: dict[str, Any] = {}
    if "reset" in words:
        args["reset"] = True
        words.remove("reset")
    if words:
        args["ratios"] = [_float(part, "a ratio") for part in re.split(r"[,/ ]+", " ".join(words)) if part]
    return ToolIntent("make_splits", args)


def _prefer(text: str) -> Intent:
    if not text.strip():
        raise CommandSyntaxError("say what you prefer, e.g. /prefer only summaries with concrete numbers")
    return ToolIntent("add_preference", {"text": text.strip()})


def _prompt(text: str) -> Intent:
    if not text.strip():
        raise CommandSyntaxError("give the instructions, e.g. /prompt Classify the review {text}.")
    return ToolIntent("create_prompt_version", {"instructions": text.strip()})


def _adopt(text: str) -> Intent:
    words, _ = _split(text)
    if len(words) != 1:
        raise CommandSyntaxError("give one version, e.g. /adopt 2")
    return ToolIntent("adopt_prompt_version", {"version": _int(words[0].lstrip("vV"), "a version")})


def _diff(text: str) -> Intent:
    words, _ = _split(text)
    if len(words) != 2:
        raise CommandSyntaxError("give two versions, e.g. /diff 1 2")
    return ToolIntent(
        "diff_prompt_versions", {"a": _int(words[0], "a version"), "b": _int(words[1], "a version")}
    )


def _eval(text: str) -> Intent:
    words, _ = _split(text)
    args: dict[str, Any] = {}
    for word in words:
        if word.lower() == "baseline":
            args["baseline"] = True
        elif word.lower() in ("train", "dev", "test"):
            args["split"] = word.lower()
        elif (number := _version_of(word)) is not None:
            args["version"] = number
        else:
            raise CommandSyntaxError(f"'{word}' is not a version, 'baseline' or a split")
    return ToolIntent("evaluate", args)


def _compare(text: str) -> Intent:
    words, _ = _split(text)
    if len(words) != 2:
        raise CommandSyntaxError("give two runs, e.g. /compare v1 v2 (run ids, vN, baseline or latest)")
    return ToolIntent("compare_runs", {"run_a": words[0], "run_b": words[1]})


def _errors(text: str) -> Intent:
    words, options = _split(text)
    args: dict[str, Any] = {}
    if words:
        args["run"] = words[0]
    for key in ("gold", "predicted"):
        if key in options:
            args[key] = options[key]
    if "limit" in options:
        args["limit"] = _int(options["limit"], "limit")
    return ToolIntent("show_errors", args)


def _improve(text: str) -> Intent:
    words, options = _split(text)
    args: dict[str, Any] = {}
    for word in words:
        number = _version_of(word)
        if number is None:
            raise CommandSyntaxError(f"'{word}' is not a version (say e.g. /improve v2 budget=0.50)")
        args["base_version"] = number
    if "budget" in options:
        args["budget_usd"] = _float(options["budget"], "the budget")
    if "calls" in options:
        args["max_calls"] = _int(options["calls"], "calls")
    if "candidates" in options:
        args["candidates"] = _int(options["candidates"], "candidates")
    return ToolIntent("improve_prompt", args)


def _job_args(text: str, *, allow_new: bool) -> dict[str, Any]:
    words, options = _split(text)
    args: dict[str, Any] = {}
    for word in words:
        lowered = word.lower()
        if lowered in ("gt", "ground-truth", "ground_truth"):
            args["ground_truth_only"] = True
        elif allow_new and lowered in ("new", "again"):
            args["new_run"] = True
        elif (number := _version_of(word)) is not None:
            args["version"] = number
        else:
            raise CommandSyntaxError(f"'{word}' is not understood here (versions: v2; options: limit=N, gt)")
    if "limit" in options:
        args["limit"] = _int(options["limit"], "limit")
    return args


def _estimate(text: str) -> Intent:
    return ToolIntent("estimate_cost", _job_args(text, allow_new=False))


def _label(text: str) -> Intent:
    return ToolIntent("start_labeling", _job_args(text, allow_new=True))


def _jobs(text: str) -> Intent:
    words, _ = _split(text)
    return ToolIntent("job_status", {"job_id": _int(words[0], "the job id")} if words else {})


def _cancel(text: str) -> Intent:
    words, _ = _split(text)
    return ToolIntent("cancel_job", {"job_id": _int(words[0], "the job id")} if words else {})


def _review(text: str) -> Intent:
    words, options = _split(text)
    args: dict[str, Any] = {}
    if words:
        args["limit"] = _int(words[0], "the number of items")
    if "max" in options:
        args["max_confidence"] = _float(options["max"], "the confidence")
    return ToolIntent("show_review_queue", args)


def _accept(text: str) -> Intent:
    refs = _expand_refs(text)
    if not refs:
        raise CommandSyntaxError("say which items, e.g. /accept #1 #2 (or #1-#5)")
    return ToolIntent("review_items", {"decisions": [{"task": ref} for ref in refs]})


def _correct(text: str) -> Intent:
    return ToolIntent("review_items", {"decisions": parse_assignments(text)})


_FORMATS = ("csv", "jsonl", "json", "parquet", "labelstudio", "labelstudio_min")


def _export(text: str) -> Intent:
    words, options = _split(text)
    args: dict[str, Any] = {}
    for word in words:
        lowered = word.lower().lstrip(".")
        if lowered in _FORMATS:
            args["format"] = lowered
        elif lowered in ("gt", "ground-truth", "ground_truth"):
            args["rows"] = "ground_truth"
        elif lowered == "labeled":
            args["rows"] = "labeled"
        elif lowered == "no-predictions":
            args["include_predictions"] = False
        elif (number := _version_of(word)) is not None:
            args["version"] = number
        else:
            raise CommandSyntaxError(f"'{word}' is not a format ({', '.join(_FORMATS)}) or an option")
    if "min" in options:
        args["min_confidence"] = _float(options["min"], "the minimum confidence")
    return ToolIntent("export_labels", args)


def _help(_text: str) -> Intent:
    return TextIntent(help_text())


COMMANDS: dict[str, Command] = {
    "help": Command("/help", "what I can do", _help),
    "status": Command("/status [PROJECT]", "where things stand", _status),
    "projects": Command("/projects", "the projects (same as /status)", _status),
    "use": Command("/use PROJECT", "switch to another project", _use),
    "new": Command("/new NAME [CLASSES]", "create a project, e.g. /new reviews positive, negative", _new),
    "import": Command(
        "/import FILE [fields=a,b] [label=COL] [id=COL] [sep=,] [project=NAME]", "import a data file", _import
    ),
    "schema": Command(
        "/schema CLASSES | FILE.xml [type=multi_choice] [--replace]",
        "set the labels, e.g. /schema Sports, World: politics, Business",
        _schema,
    ),
    "gt": Command(
        "/gt [N] [random|stratified|diverse]", "show N items to label (then: #1 Sports, #2 World)", _gt
    ),
    "undo": Command("/undo #N", "remove the label of an item", _undo),
    "split": Command(
        "/split [0.6,0.2,0.2] [reset]", "train/dev/test splits of the ground truth", _split_command
    ),
    "prefer": Command("/prefer TEXT", "a preference becomes a new prompt version", _prefer),
    "prompt": Command("/prompt INSTRUCTIONS", "a new prompt version with these instructions", _prompt),
    "versions": Command(
        "/versions", "the prompt versions", lambda _t: ToolIntent("list_prompt_versions", {})
    ),
    "adopt": Command("/adopt N", "make version N the current one (used by default)", _adopt),
    "diff": Command("/diff A B", "what changed between two versions", _diff),
    "eval": Command("/eval [vN|baseline] [train|dev|test]", "measure a version on the ground truth", _eval),
    "compare": Command(
        "/compare RUN_A RUN_B", "compare two evaluations (ids, vN, baseline, latest)", _compare
    ),
    "errors": Command("/errors [RUN] [gold=X] [predicted=Y]", "what an evaluation got wrong", _errors),
    "suspects": Command(
        "/suspects", "ground-truth labels worth re-checking", lambda _t: ToolIntent("suspect_labels", {})
    ),
    "improve": Command("/improve [vN] [budget=USD] [calls=N]", "propose and test a better prompt", _improve),
    "estimate": Command("/estimate [vN] [limit=N] [gt]", "what labeling would cost", _estimate),
    "label": Command("/label [vN] [limit=N] [gt] [new]", "label everything (asks to confirm first)", _label),
    "jobs": Command("/jobs [N]", "status of the labeling job", _jobs),
    "job": Command("/job [N]", "status of the labeling job", _jobs),
    "cancel": Command("/cancel [N]", "stop the labeling job", _cancel),
    "review": Command("/review [N] [max=0.7]", "the least confident predictions", _review),
    "accept": Command("/accept #1 #2 | #1-#5", "accept reviewed predictions", _accept),
    "correct": Command("/correct #2 LABEL", "correct a reviewed prediction", _correct),
    "export": Command(
        "/export [csv|jsonl|json|parquet|labelstudio] [gt|labeled] [vN] [min=0.8]",
        "export to a file",
        _export,
    ),
}


def help_text() -> str:
    """What the command model understands, and how to configure a model."""
    lines = ["Without a model I understand these commands:"]
    lines.extend(
        f"  {c.usage} — {c.summary}" for name, c in COMMANDS.items() if name not in ("projects", "job")
    )
    lines.append('…and a few phrases: "status", "#3 is Sports", "export everything as CSV", "I prefer …".')
    lines.append(NO_MODEL_HELP)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- phrases


def _export_phrase(text: str) -> Intent | None:
    lowered = text.lower()
    fmt = re.search(r"\b(csv|jsonl|json|parquet|label ?studio)\b", lowered)
    if fmt is None or not re.search(r"\b(export|send|download|give|get|save|want|need|as|to)\b", lowered):
        return None
    args: dict[str, Any] = {"format": fmt.group(1).replace(" ", "")}
    if re.search(
        r"\b(ground truth|gt only|(?:we|i) (?:have )?label+ed (?:by hand|ourselves|myself))\b", lowered
    ):
        args["rows"] = "ground_truth"
    elif re.search(
        r"label+ed so far|everything label+ed|all label+ed|what(?:'s| is| has been) label+ed", lowered
    ):
        args["rows"] = "labeled"
    return ToolIntent("export_labels", args)


_PHRASES: list[tuple[re.Pattern[str], Callable[[str], Intent]]] = [
    (re.compile(r"^(help|\?|commands|what can you do\b.*)$"), _help),
    (
        re.compile(
            r"^(status|progress|where are we\b.*|what'?s the status\b.*|how are (we|things) (doing|going)\b.*)$"
        ),
        lambda _t: ToolIntent("project_status", {}),
    ),
    (re.compile(r"^#\d+"), lambda t: ToolIntent("record_labels", {"labels": parse_assignments(t)})),
    (
        re.compile(
            r"^(i prefer|i'?d prefer|i would prefer|i only care about|i care about|i'?m only interested in)\b"
        ),
        lambda t: ToolIntent("add_preference", {"text": t}),
    ),
    (
        re.compile(r"^(preferences?):\s*\S"),
        lambda t: ToolIntent("add_preference", {"text": t.split(":", 1)[1].strip()}),
    ),
    (
        re.compile(
            r"^(label (everything|all|the rest|the whole dataset)|start label+ing|run the label+ing)\b"
        ),
        lambda _t: ToolIntent("start_labeling", {}),
    ),
    (
        re.compile(r"^(improve|improve the prompt|make (it|the prompt) better)\b"),
        lambda _t: ToolIntent("improve_prompt", {}),
    ),
    (
        re.compile(r"^(evaluate|how (good|accurate) is (it|the prompt))\b"),
        lambda _t: ToolIntent("evaluate", {}),
    ),
    (
        re.compile(r"^(show (me )?(the )?(errors|mistakes)|what did it get wrong)\b"),
        lambda _t: ToolIntent("show_errors", {}),
    ),
    (re.compile(r"^(cancel|stop) (the )?(label+ing|job)\b"), lambda _t: ToolIntent("cancel_job", {})),
    (
        re.compile(r"^(show (me )?(the )?review queue|review)$"),
        lambda _t: ToolIntent("show_review_queue", {}),
    ),
    (
        re.compile(r"^(how much (would|will|does) (it|labell?ing) cost|estimate)\b"),
        lambda _t: ToolIntent("estimate_cost", {}),
    ),
    (re.compile(r"^(list )?(the )?(prompt )?versions$"), lambda _t: ToolIntent("list_prompt_versions", {})),
    (re.compile(r"^(y|yes|no|n|ok|okay)$"), lambda _t: TextIntent("There is nothing to confirm right now.")),
]


def interpret(text: str) -> Intent:
    """Map one message to a tool call or a text answer (never raises: bad syntax gets its usage back)."""
    stripped = text.strip()
    if stripped.startswith("/"):
        name, _, rest = stripped[1:].partition(" ")
        command = COMMANDS.get(name.lower())
        if command is None:
            return TextIntent(f"There is no command /{name}.\n{help_text()}")
        try:
            return command.parse(rest)
        except CommandSyntaxError as exc:
            return TextIntent(f"{exc}. Usage: {command.usage}")
    lowered = stripped.lower().rstrip(".!?").strip()
    export = _export_phrase(stripped)
    if export is not None:
        return export
    for pattern, build in _PHRASES:
        if pattern.search(lowered):
            try:
                return build(stripped)
            except CommandSyntaxError as exc:
                return TextIntent(f"{exc}.")
    return TextIntent(f"I did not understand that.\n{help_text()}")


# ---------------------------------------------------------------------------------------------- the model


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(part if isinstance(part, str) else str(part.get("text", "")) for part in content)


#: The command that reaches each tool, for tool results that name a tool ("... (import_file)").
TOOL_COMMANDS = {
    "create_project": "/new",
    "import_file": "/import",
    "set_label_schema": "/schema",
    "sample_tasks": "/gt",
    "record_labels": "#1 LABEL",
    "make_splits": "/split",
    "review_items": "/accept, /correct",
}


def _as_commands(text: str) -> str:
    """Tool results name tools for a model; a person without one reads the commands instead."""
    return re.sub(
        r"\((?:see )?(\w+)\)",
        lambda m: f"({TOOL_COMMANDS[m.group(1)]})" if m.group(1) in TOOL_COMMANDS else m.group(0),
        text,
    )


class CommandModel(BaseChatModel):
    """A chat model that turns commands into tool calls and tool results into a short reply."""

    #: Names of the tools bound with `bind_tools` (intents for other tools are answered with text).
    tool_names: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "labelpilot-commands"

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any) -> CommandModel:
        """Return a copy that knows the tools' names (the graph binds the same tools as for an LLM)."""
        names = [
            tool.name if isinstance(tool, BaseTool) else str(getattr(tool, "__name__", tool))
            for tool in tools
        ]
        return self.model_copy(update={"tool_names": names})

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        """The next assistant message for a conversation."""
        results: list[ToolMessage] = []
        for message in reversed(messages):
            if isinstance(message, ToolMessage):
                results.append(message)
                continue
            break
        if results:
            return AIMessage(content=_as_commands("\n\n".join(_text(m) for m in reversed(results))))
        last = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        intent = interpret(_text(last)) if last is not None else TextIntent(help_text())
        if isinstance(intent, TextIntent):
            return AIMessage(content=intent.text)
        if self.tool_names and intent.name not in self.tool_names:
            return AIMessage(content=f"That needs the tool {intent.name}, which is not available here.")
        call_id = f"call_{uuid.uuid4().hex[:16]}"
        return AIMessage(content="", tool_calls=[{"name": intent.name, "args": intent.args, "id": call_id}])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply(messages))])
