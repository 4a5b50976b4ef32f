"""The label schema of a project: one `LabelSpec` drives the LLM's JSON schema, validation and LS exchange.

A `LabelSpec` says what kind of answer a task takes (`TaskType`) and which labels exist. From it come:
the strict JSON schema sent to a model for structured output (`json_schema`), the canonical value of a
label (`validate_value`, `parse_text`), its short display (`display`), and the Label Studio side: labeling
configs (`from_label_config`, `to_label_config`), annotation results (`to_ls_result`, `from_ls_result`) and
JSON-MIN values (`to_ls_min_value`, `from_ls_min_value`).

Canonical values (what the database stores as JSON), per type:

- single_choice: `str`, a class name;  multi_choice: `list[str]`, distinct, in class order;
- rating: `int` in 1..max_rating;  number: `float` within the optional min/max;  text: `str`, non-empty;
- pairwise: `"left"` or `"right"`;
- spans: `list[Span]` sorted by (start, end, label); offsets are character offsets into `span_field`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, ClassVar, TypeAlias, TypedDict, cast
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeElementTree
from pydantic import BaseModel, field_validator, model_validator

from tools.errors import LabelSpecError, LabelValueError


class TaskType(str, Enum):
    """What kind of answer a task takes."""

    single_choice = "single_choice"
    multi_choice = "multi_choice"
    rating = "rating"
    number = "number"
    text = "text"
    pairwise = "pairwise"
    spans = "spans"


class Span(TypedDict):
    """One labeled piece of the span source text; `text == source[start:end]`."""

    start: int
    end: int
    text: str
    label: str


LabelValue: TypeAlias = str | int | float | list[str] | list[Span]
LSResult: TypeAlias = dict[str, Any]

PAIRWISE_SIDES = ("left", "right")
MAX_RATING_LIMIT = 100
MAX_CONFIG_CHARS = 1_000_000
_SUPPORTED_TAGS_TEXT = "labelpilot supports Choices, Labels, Rating, Number, TextArea, Pairwise over Text"


class LabelClass(BaseModel):
    """One label (a choice or a span label) with an optional description for people and models."""

    name: str
    description: str = ""

    @field_validator("name", "description")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()


class LabelSpec(BaseModel):
    """The label schema of a project (stored as JSON; see the module docstring for canonical values)."""

    type: TaskType
    #: Choices, or span labels; empty for rating, number, text and pairwise.
    classes: list[LabelClass] = []
    #: rating only: the scale is 1..max_rating (2..100).
    max_rating: int | None = None
    #: number only, both optional.
    min_value: float | None = None
    max_value: float | None = None
    #: Label Studio control tag name (the `from_name` of results).
    from_name: str = "label"
    #: Label Studio object tag the control labels; for pairwise "left_object,right_object".
    #: Defaults to the object of the first input field (of `span_field` for spans).
    to_name: str = "text"
    #: Data keys shown to the labeler and the model (the `$variables` of the LS object tags), in order.
    input_fields: list[str] = []
    #: LS object tag names, parallel to `input_fields`; empty when every name equals its field.
    object_names: list[str] = []
    #: spans only: the input field the offsets refer to (derived from `to_name` when input fields are known).
    span_field: str | None = None
    #: The original Label Studio config when the spec was built from one (returned by `to_label_config`).
    ls_config: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_to_name(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("to_name") is not None:
            return data
        fields = list(data.get("input_fields") or [])
        names = list(data.get("object_names") or []) or fields
        derived: str | None = None
        if data.get("type") == TaskType.pairwise:
            derived = ",".join(names[:2]) if len(names) >= 2 else None
        elif data.get("span_field") in fields and len(names) == len(fields):
            derived = names[fields.index(data["span_field"])]
        elif names:
            derived = names[0]
        return {**data, "to_name": derived} if derived else {k: v for k, v in data.items() if k != "to_name"}

    @model_validator(mode="after")
    def _check(self) -> LabelSpec:
        self.from_name = _require_name(self.from_name, "from_name")
        self.to_name = ",".join(part.strip() for part in _require_name(self.to_name, "to_name").split(","))
        self._check_fields()
        self._check_classes()
        self._check_parameters()
        return self

    def _check_fields(self) -> None:
        for what, names in (("input_fields", self.input_fields), ("object_names", self.object_names)):
            if any(not isinstance(n, str) or not n.strip() for n in names):
                raise LabelSpecError(f"{what} must be non-empty names, got {names!r}")
            if len(set(names)) != len(names):
                raise LabelSpecError(f"{what} must not repeat a name, got {names!r}")
        if self.object_names == self.input_fields:
            self.object_names = []
        if self.object_names and len(self.object_names) != len(self.input_fields):
            raise LabelSpecError(
                f"object_names {self.object_names!r} must name one object per input field "
                f"{self.input_fields!r}",
                hint="leave object_names empty when the LS object tags are named like the fields",
            )
        targets = self.target_names()
        if self.type is TaskType.pairwise and (len(targets) != 2 or targets[0] == targets[1]):
            raise LabelSpecError(
                f"a pairwise schema compares two items, but to_name is '{self.to_name}'",
                hint="give two different fields, e.g. input_fields=['summary_1', 'summary_2'] "
                "or to_name='summary_1,summary_2'",
            )
        if self.type is not TaskType.pairwise and len(targets) != 1:
            raise LabelSpecError(f"to_name '{self.to_name}' must name one object tag for {self.type.value}")
        known = self._objects()
        missing = [t for t in targets if t not in known]
        if self.input_fields and missing:
            raise LabelSpecError(
                f"to_name names {', '.join(repr(m) for m in missing)}, which is not one of the input fields "
                f"({', '.join(known)})",
                hint="set to_name to the field (LS object tag) the label refers to, or leave it out",
            )
        if self.type is TaskType.spans:
            if self.input_fields:
                field = known[targets[0]]
                if self.span_field not in (None, field):
                    raise LabelSpecError(
                        f"span_field '{self.span_field}' differs from the field of to_name '{self.to_name}' "
                        f"('{field}'); span offsets refer to the text the Labels tag points at",
                        hint="leave span_field out, it is derived from to_name",
                    )
                self.span_field = field
        elif self.span_field is not None:
            raise LabelSpecError(f"span_field only applies to spans, not to {self.type.value}")

    def _check_classes(self) -> None:
        minimum = {TaskType.single_choice: 2, TaskType.multi_choice: 2, TaskType.spans: 1}.get(self.type, 0)
        if minimum == 0 and self.classes:
            raise LabelSpecError(
                f"a {self.type.value} schema takes no classes, got {', '.join(self.class_names())}",
                hint="classes are for single_choice, multi_choice and spans",
            )
        if len(self.classes) < minimum:
            kind = "span labels" if self.type is TaskType.spans else "classes"
            raise LabelSpecError(
                f"a {self.type.value} schema needs at least {minimum} {kind}, got {len(self.classes)}",
                hint="list the labels, e.g. 'Sports, World, Business'",
            )
        check_class_names(self.class_names())

    def _check_parameters(self) -> None:
        if self.type is TaskType.rating:
            if self.max_rating is None or not 2 <= self.max_rating <= MAX_RATING_LIMIT:
                raise LabelSpecError(
                    f"a rating schema needs max_rating from 2 to {MAX_RATING_LIMIT}, got {self.max_rating}",
                    hint="e.g. max_rating=5 for a 1-5 scale",
                )
        elif self.max_rating is not None:
            raise LabelSpecError(f"max_rating only applies to rating, not to {self.type.value}")
        bounds = [b for b in (self.min_value, self.max_value) if b is not None]
        if self.type is not TaskType.number and bounds:
            raise LabelSpecError(f"min_value/max_value only apply to number, not to {self.type.value}")
        if any(not math.isfinite(b) for b in bounds):
            raise LabelSpecError(f"min_value and max_value must be finite numbers, got {bounds}")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise LabelSpecError(
                f"min_value {_format_number(self.min_value)} is greater than max_value "
                f"{_format_number(self.max_value)}"
            )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_classes(
        cls,
        classes: Sequence[str | tuple[str, str] | LabelClass],
        *,
        type: TaskType | str = TaskType.single_choice,
        max_rating: int | None = None,
        min_value: float | None = None,
        max_value: float | None = None,
        input_fields: Sequence[str] = (),
        from_name: str = "label",
        to_name: str | None = None,
        span_field: str | None = None,
    ) -> LabelSpec:
        """Build a spec from class names, (name, description) pairs or LabelClass objects."""
        task_type = _task_type(type)
        if task_type is TaskType.rating and max_rating is None:
            max_rating = 5
        return cls(
            type=task_type,
            classes=[_label_class(c) for c in classes],
            max_rating=max_rating,
            min_value=min_value,
            max_value=max_value,
            from_name=from_name,
            to_name=to_name,
            input_fields=list(input_fields),
            span_field=span_field,
        )

    @classmethod
    def from_label_config(cls, xml: str) -> LabelSpec:
        """Build a spec from a Label Studio labeling config (parsed safely; one control tag)."""
        root = _parse_config_xml(xml)
        found = _ConfigTags()
        found.collect(root)
        if not found.controls:
            raise LabelSpecError(
                "the label config has no control tag to label with",
                hint=f'add one, e.g. <Choices name="label" toName="text">; {_SUPPORTED_TAGS_TEXT}',
            )
        if len(found.controls) > 1:
            raise LabelSpecError(
                "the label config has several control tags: "
                + ", ".join(_describe_tag(c) for c in found.controls)
                + "; labelpilot supports exactly one per project",
                hint="keep the one control tag you want the model to fill in",
            )
        control = found.controls[0]
        tag = control.tag.lower()
        attrs = _attributes(control)
        from_name = attrs.get("name", "").strip()
        to_name = attrs.get("toname", "").strip()
        if not from_name or not to_name:
            raise LabelSpecError(f"{_describe_tag(control)} needs both a name and a toName attribute")
        targets = [t.strip() for t in to_name.split(",")]
        for target in targets:
            if target not in found.object_tags:
                known = ", ".join(found.object_tags) or "none"
                raise LabelSpecError(
                    f"{_describe_tag(control)} has toName='{to_name}', but there is no object tag named "
                    f"'{target}' (object tags: {known})"
                )
        if tag == "labels" and found.object_tags[targets[0]].lower() != "text":
            raise LabelSpecError(
                f"{_describe_tag(control)} labels a <{found.object_tags[targets[0]]}> tag; span offsets are "
                "supported over <Text> only",
                hint=_SUPPORTED_TAGS_TEXT,
            )
        fields = [field for _, field in found.objects]
        names = [name for name, _ in found.objects]
        spec_fields = _CONTROL_PARSERS[tag](control, attrs)
        return cls(
            **spec_fields,
            from_name=from_name,
            to_name=",".join(targets),
            input_fields=fields,
            object_names=names,
            ls_config=xml,
        )

    # ------------------------------------------------------------------ basic views

    def class_names(self) -> list[str]:
        """Return the class names in declaration order."""
        return [c.name for c in self.classes]

    def choices(self) -> list[str]:
        """Return the options a person picks from (buttons, numbered menus); empty for number/text."""
        return _CODECS[self.type].choices(self)

    def target_names(self) -> list[str]:
        """Return the LS object tag name(s) in to_name (two for pairwise)."""
        return self.to_name.split(",")

    def pair_fields(self) -> tuple[str, str]:
        """Return the (left, right) data fields a pairwise schema compares."""
        if self.type is not TaskType.pairwise:
            raise LabelSpecError(f"pair_fields() is for pairwise schemas, this one is {self.type.value}")
        objects = self._objects()
        left, right = (objects.get(name, name) for name in self.target_names())
        return left, right

    def _objects(self) -> dict[str, str]:
        """Map LS object tag name -> data field."""
        return dict(zip(self.object_names or self.input_fields, self.input_fields, strict=True))

    def to_json(self) -> dict[str, Any]:
        """Return the JSON-safe dict stored in the database (`LabelSpec.model_validate` reads it back)."""
        return self.model_dump(mode="json")

    # ------------------------------------------------------------------ LLM schema

    def schema_name(self) -> str:
        """Return a safe identifier for the structured-output schema, e.g. 'label_single_choice'."""
        return f"label_{self.type.value}"

    def json_schema(self, *, reasoning: bool = False) -> dict[str, Any]:
        """Return the strict structured-output JSON schema; `reasoning` adds a reasoning field first."""
        properties: dict[str, Any] = {}
        if reasoning:
            properties["reasoning"] = {
                "type": "string",
                "description": "Brief step-by-step reasoning about the input, written before the label.",
            }
        properties["label"] = _CODECS[self.type].label_schema(self)
        return {
            "type": "object",
            "properties": properties,
            "required": list(properties),
            "additionalProperties": False,
        }

    # ------------------------------------------------------------------ values

    def validate_value(self, value: object, *, source_text: str | None = None) -> LabelValue:
        """Return the canonical form of a label value or raise LabelValueError saying how to fix it."""
        if value is None:
            raise LabelValueError("no label value was given", hint=self._value_hint())
        return _CODECS[self.type].validate(self, value, source_text=source_text)

    def parse_text(self, text: str, *, source_text: str | None = None) -> LabelValue:
        """Parse what a person types (CLI, chat, a CSV label column) into a canonical value."""
        stripped = text.strip()
        if not stripped:
            raise LabelValueError("the label is empty", hint=self._value_hint())
        return _CODECS[self.type].parse_text(self, stripped, source_text=source_text)

    def display(self, value: object) -> str:
        """Return a short human text for a value, e.g. 'Sports, World' or '4 / 5'."""
        if value is None:
            return "(no label)"
        return _CODECS[self.type].display(self, value)

    def match_class(self, name: str) -> str:
        """Return the canonical class name for a case/space-insensitive match or raise LabelValueError."""
        key = _class_key(name)
        for candidate in self.class_names():
            if _class_key(candidate) == key:
                return candidate
        raise self._unknown_label(name)

    def _unknown_label(self, name: str) -> LabelValueError:
        names = self.class_names()
        listed = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
        message = f"'{name}' is not one of the labels: {listed}"
        by_key = {_class_key(n): n for n in names}
        close = difflib.get_close_matches(_class_key(name), list(by_key), n=1, cutoff=0.6)
        if close:
            message += f" — did you mean '{by_key[close[0]]}'?"
        return LabelValueError(message, hint=self._value_hint())

    def _value_hint(self) -> str:
        return _CODECS[self.type].hint(self)

    # ------------------------------------------------------------------ Label Studio

    def to_label_config(self) -> str:
        """Return the LS labeling config: the original one if kept, else a generated one.

        A generated config shows every input field in a <Text> tag; a spec without input fields gets a
        <Text> per to_name object showing `$<to_name>`, so reading it back records that field.
        """
        if self.ls_config is not None:
            return self.ls_config
        objects = self._objects()
        for target in self.target_names():
            objects.setdefault(target, target)
        lines = ["<View>"]
        lines += [
            f'  <Text name="{_xml_attr(name)}" value="${_xml_attr(field)}"/>'
            for name, field in objects.items()
        ]
        lines += ["  " + line for line in _CODECS[self.type].control_xml(self)]
        lines.append("</View>")
        return "\n".join(lines) + "\n"

    def to_ls_result(self, value: object, *, source_text: str | None = None) -> list[LSResult]:
        """Return Label Studio `result` items for a value (one item, or one per span)."""
        codec = _CODECS[self.type]
        canonical = self.validate_value(value, source_text=source_text)
        return [
            {
                "id": _stable_id(self.from_name, codec.result_type, json.dumps(ls_value, sort_keys=True)),
                "from_name": self.from_name,
                "to_name": self.to_name,
                "type": codec.result_type,
                "value": ls_value,
            }
            for ls_value in codec.to_ls_values(self, canonical)
        ]

    def from_ls_result(self, results: object, *, source_text: str | None = None) -> LabelValue | None:
        """Return the value in LS `result` items; other from_names are ignored.

        None when no item is ours, except for spans: an annotation without regions means "no spans" ([]).
        """
        if not isinstance(results, list):
            raise LabelValueError(f"a Label Studio result must be a list of items, got {_kind(results)}")
        codec = _CODECS[self.type]
        values: list[Mapping[str, Any]] = []
        for item in results:
            if not isinstance(item, Mapping) or item.get("from_name") != self.from_name:
                continue
            kind = str(item.get("type", codec.result_type)).lower()
            if kind != codec.result_type:
                raise LabelValueError(
                    f"the result for '{self.from_name}' has type '{kind}', expected '{codec.result_type}'",
                    hint="the Label Studio project's config does not match this schema",
                )
            value = item.get("value")
            if not isinstance(value, Mapping):
                raise LabelValueError(f"the result for '{self.from_name}' has no 'value' object: {item!r}")
            values.append(value)
        if not values:
            return codec.empty_value()
        return codec.from_ls_values(self, values, source_text=source_text)

    def to_ls_min_value(self, value: object, *, source_text: str | None = None) -> Any:
        """Return the JSON-MIN export form of a value (what LS writes under the from_name key)."""
        canonical = self.validate_value(value, source_text=source_text)
        return _CODECS[self.type].to_min(self, canonical)

    def from_ls_min_value(self, obj: object, *, source_text: str | None = None) -> LabelValue | None:
        """Return the canonical value of a JSON-MIN export entry (None for a missing or empty entry)."""
        if obj is None or obj == "":
            return None
        if obj == []:
            return _CODECS[self.type].empty_value()
        return _CODECS[self.type].from_min(self, obj, source_text=source_text)


# ---------------------------------------------------------------------- class lists


def parse_class_list(text: str) -> list[LabelClass]:
    """Parse a class list typed by a person (CLI `--classes`, a text file).

    Syntax:
    - One class per line when the text has several lines; empty lines and lines starting with '#' are
      skipped, and list bullets ('- ', '* ', '• ', '1. ', '1) ') are removed.
    - Otherwise one line separated by ';' when it contains one (so descriptions may hold commas), else by ','.
    - Each class is `Name`, `Name: description` or `Name - description` (a dash with spaces around it,
      so names like 'Sci-Fi' stay whole).

    Example: "Sports, World: international politics, Business".
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if len(lines) > 1:
        items = [_BULLET.sub("", line, count=1) for line in lines]
    elif lines:
        separator = ";" if ";" in lines[0] else ","
        items = lines[0].split(separator)
    else:
        items = []
    classes: list[LabelClass] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        name, description = _split_description(item)
        if not name:
            raise LabelSpecError(
                f"'{item}' has a description but no class name", hint="write 'Name: description'"
            )
        classes.append(LabelClass(name=name, description=description))
    if not classes:
        raise LabelSpecError(
            "no classes found", hint="list them like 'Sports, World: international politics'"
        )
    check_class_names([c.name for c in classes])
    return classes


def check_class_names(names: Sequence[str]) -> None:
    """Raise LabelSpecError unless names are non-empty and unique ignoring case and surrounding spaces."""
    seen: dict[str, str] = {}
    for position, name in enumerate(names, start=1):
        if not name.strip():
            raise LabelSpecError(f"class {position} has an empty name", hint="every class needs a name")
        key = _class_key(name)
        if key in seen:
            if seen[key] == name:
                raise LabelSpecError(f"the class '{name}' is listed twice", hint="remove the duplicate")
            raise LabelSpecError(
                f"the classes '{seen[key]}' and '{name}' differ only by case or spaces; a model and a person "
                "could not tell them apart",
                hint="merge them or rename one",
            )
        seen[key] = name


_BULLET = re.compile(r"^(?:[-*•]\s+|\d+[.)]\s+)")
_DESCRIPTION_SEPARATOR = re.compile(r":|\s+[-–—]\s+")


def _split_description(item: str) -> tuple[str, str]:
    parts = _DESCRIPTION_SEPARATOR.split(item, maxsplit=1)
    if len(parts) == 1:
        return item.strip(), ""
    return parts[0].strip(), parts[1].strip()


def _label_class(value: str | tuple[str, str] | LabelClass) -> LabelClass:
    if isinstance(value, LabelClass):
        return value
    if isinstance(value, tuple):
        name, description = value
        return LabelClass(name=name, description=description)
    return LabelClass(name=value)


def _class_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def _task_type(value: TaskType | str) -> TaskType:
    try:
        return TaskType(value)
    except ValueError:
        known = ", ".join(t.value for t in TaskType)
        raise LabelSpecError(f"unknown task type '{value}'", hint=f"use one of: {known}") from None


def _require_name(value: str, what: str) -> str:
    if not value.strip():
        raise LabelSpecError(f"{what} must not be empty")
    return value.strip()


# ---------------------------------------------------------------------- span placement


def place_spans(
    source_text: str, items: Sequence[Mapping[str, Any]]
) -> tuple[list[Span], list[dict[str, Any]]]:
    """Map model-returned {"text", "label"} items to character offsets in source_text.

    Each item goes to the first unused occurrence at or after the previous placed span's start (else the
    first unused one anywhere), trying an exact match, then case-insensitive, then case-insensitive with
    any whitespace. Returns (placed spans sorted by offset, items that could not be placed, each with a
    "reason"); nothing is dropped silently.
    """
    placed: list[Span] = []
    unplaceable: list[dict[str, Any]] = []
    used: set[tuple[int, int, str]] = set()
    cursor = 0
    for item in items:
        text = item.get("text") if isinstance(item, Mapping) else None
        label = item.get("label") if isinstance(item, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            unplaceable.append({**_as_dict(item), "reason": "the item has no text"})
            continue
        if not isinstance(label, str) or not label.strip():
            unplaceable.append({**_as_dict(item), "reason": "the item has no label"})
            continue
        label = label.strip()
        found_any = False
        choice: tuple[int, int] | None = None
        for finder in _SPAN_FINDERS:
            occurrences = finder(source_text, text.strip())
            found_any = found_any or bool(occurrences)
            free = [o for o in occurrences if (o[0], o[1], label) not in used]
            if free:
                after = [o for o in free if o[0] >= cursor]
                choice = (after or free)[0]
                break
        if choice is None:
            reason = "every occurrence already has this label" if found_any else "the text was not found"
            unplaceable.append({**_as_dict(item), "reason": reason})
            continue
        start, end = choice
        used.add((start, end, label))
        cursor = start
        placed.append(Span(start=start, end=end, text=source_text[start:end], label=label))
    placed.sort(key=_span_key)
    return placed, unplaceable


def _find_exact(source: str, text: str) -> list[tuple[int, int]]:
    found = []
    position = source.find(text)
    while position != -1:
        found.append((position, position + len(text)))
        position = source.find(text, position + 1)
    return found


def _find_regex(source: str, pattern: str) -> list[tuple[int, int]]:
    # The lookahead finds overlapping occurrences too ("aa" in "aaa" at 0 and 1).
    return [(m.start(1), m.end(1)) for m in re.finditer(f"(?=({pattern}))", source, re.IGNORECASE)]


_SPAN_FINDERS: list[Callable[[str, str], list[tuple[int, int]]]] = [
    _find_exact,
    lambda source, text: _find_regex(source, re.escape(text)),
    lambda source, text: _find_regex(source, r"\s+".join(re.escape(w) for w in text.split())),
]


def _as_dict(item: object) -> dict[str, Any]:
    return dict(item) if isinstance(item, Mapping) else {"item": item}


def _span_key(span: Span) -> tuple[int, int, str]:
    return span["start"], span["end"], span["label"]


# ---------------------------------------------------------------------- per-type behaviour


class _Codec:
    """How one task type validates, parses, displays and exchanges values; registered in _CODECS."""

    control_tag: ClassVar[str]
    result_type: ClassVar[str]

    def empty_value(self) -> LabelValue | None:
        """The value of an annotation with no result for this control."""
        return None

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        raise NotImplementedError

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        raise NotImplementedError

    def parse_text(self, spec: LabelSpec, text: str, *, source_text: str | None) -> LabelValue:
        return self.validate(spec, text, source_text=source_text)

    def display(self, spec: LabelSpec, value: object) -> str:
        return str(value)

    def choices(self, spec: LabelSpec) -> list[str]:
        return []

    def hint(self, spec: LabelSpec) -> str:
        raise NotImplementedError

    def to_ls_values(self, spec: LabelSpec, value: LabelValue) -> list[dict[str, Any]]:
        raise NotImplementedError

    def from_ls_values(
        self, spec: LabelSpec, values: list[Mapping[str, Any]], *, source_text: str | None
    ) -> LabelValue:
        raise NotImplementedError

    def to_min(self, spec: LabelSpec, value: LabelValue) -> Any:
        return self.to_ls_values(spec, value)

    def from_min(self, spec: LabelSpec, obj: object, *, source_text: str | None) -> LabelValue:
        values = obj if isinstance(obj, list) else [obj]
        if all(isinstance(v, Mapping) for v in values):
            return self.from_ls_values(spec, cast(list[Mapping[str, Any]], values), source_text=source_text)
        if len(values) == 1:
            return spec.validate_value(values[0], source_text=source_text)
        raise LabelValueError(f"cannot read {obj!r} as a {spec.type.value} label")

    def control_xml(self, spec: LabelSpec) -> list[str]:
        return [f"<{self.control_tag} {_name_attrs(spec)}/>"]


class _ScalarCodec(_Codec):
    """A type whose LS result holds one value under `value_key` (rating, number, pairwise)."""

    value_key: ClassVar[str]

    def to_ls_values(self, spec: LabelSpec, value: LabelValue) -> list[dict[str, Any]]:
        return [{self.value_key: value}]

    def from_ls_values(
        self, spec: LabelSpec, values: list[Mapping[str, Any]], *, source_text: str | None
    ) -> LabelValue:
        single = _only_one(spec, values)
        if self.value_key not in single:
            raise LabelValueError(
                f"the {self.result_type} result has no '{self.value_key}': {dict(single)!r}"
            )
        return spec.validate_value(single[self.value_key])


class _ChoiceCodec(_Codec):
    control_tag = "Choices"
    result_type = "choices"
    choice_attr: ClassVar[str]

    def choices(self, spec: LabelSpec) -> list[str]:
        return spec.class_names()

    def hint(self, spec: LabelSpec) -> str:
        return f"use a label name (case does not matter) or its number 1-{len(spec.classes)}"

    def _parse_one(self, spec: LabelSpec, text: str) -> str:
        text = _unquote(text.strip())
        try:
            return spec.match_class(text)
        except LabelValueError:
            if text.isdigit() and 1 <= int(text) <= len(spec.classes):
                return spec.classes[int(text) - 1].name
            raise

    def _enum_schema(self, spec: LabelSpec) -> dict[str, Any]:
        return {"type": "string", "enum": spec.class_names()}

    def control_xml(self, spec: LabelSpec) -> list[str]:
        choices = [f"  <Choice {_class_attrs(c)}/>" for c in spec.classes]
        return [f'<Choices {_name_attrs(spec)} choice="{self.choice_attr}">', *choices, "</Choices>"]


class _SingleChoiceCodec(_ChoiceCodec):
    choice_attr = "single"

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        return {**self._enum_schema(spec), "description": "The one label that fits best." + _glossary(spec)}

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        if isinstance(value, list | tuple) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise LabelValueError(
                f"expected one label name, got {_kind(value)} {value!r}", hint=self.hint(spec)
            )
        return spec.match_class(value)

    def parse_text(self, spec: LabelSpec, text: str, *, source_text: str | None) -> LabelValue:
        return self._parse_one(spec, text)

    def to_ls_values(self, spec: LabelSpec, value: LabelValue) -> list[dict[str, Any]]:
        return [{"choices": [value]}]

    def from_ls_values(
        self, spec: LabelSpec, values: list[Mapping[str, Any]], *, source_text: str | None
    ) -> LabelValue:
        chosen = _ls_choices(_only_one(spec, values))
        if len(chosen) != 1:
            raise LabelValueError(
                f"a single-choice result must hold one choice, got {chosen!r}",
                hint="the Label Studio project allows several choices; use a multi_choice schema",
            )
        return spec.validate_value(chosen[0])

    def to_min(self, spec: LabelSpec, value: LabelValue) -> Any:
        return value

    def from_min(self, spec: LabelSpec, obj: object, *, source_text: str | None) -> LabelValue:
        if isinstance(obj, Mapping):
            return self.from_ls_values(spec, [obj], source_text=source_text)
        return spec.validate_value(obj)


class _MultiChoiceCodec(_ChoiceCodec):
    choice_attr = "multiple"

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        return {
            "type": "array",
            "items": self._enum_schema(spec),
            "description": "Every label that applies (an empty list when none does)." + _glossary(spec),
        }

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple | set | frozenset):
            raise LabelValueError(f"expected a list of label names, got {_kind(value)} {value!r}")
        chosen = set()
        for item in value:
            if not isinstance(item, str):
                raise LabelValueError(
                    f"expected label names, got {_kind(item)} {item!r}", hint=self.hint(spec)
                )
            chosen.add(spec.match_class(item))
        return [name for name in spec.class_names() if name in chosen]

    def parse_text(self, spec: LabelSpec, text: str, *, source_text: str | None) -> LabelValue:
        if text.startswith("["):
            try:
                return self.validate(spec, json.loads(text), source_text=source_text)
            except json.JSONDecodeError:
                pass
        try:
            return [spec.match_class(_unquote(text))]
        except LabelValueError:
            parts = [p for p in re.split(r"[,;|]", text) if p.strip()]
            return self.validate(spec, [self._parse_one(spec, p) for p in parts], source_text=source_text)

    def display(self, spec: LabelSpec, value: object) -> str:
        if isinstance(value, list):
            return ", ".join(str(v) for v in value) if value else "(none)"
        return str(value)

    def to_ls_values(self, spec: LabelSpec, value: LabelValue) -> list[dict[str, Any]]:
        return [{"choices": list(cast(list[str], value))}]

    def from_ls_values(
        self, spec: LabelSpec, values: list[Mapping[str, Any]], *, source_text: str | None
    ) -> LabelValue:
        return spec.validate_value([c for v in values for c in _ls_choices(v)])

    def to_min(self, spec: LabelSpec, value: LabelValue) -> Any:
        chosen = cast(list[str], value)
        return chosen[0] if len(chosen) == 1 else {"choices": chosen}

    def from_min(self, spec: LabelSpec, obj: object, *, source_text: str | None) -> LabelValue:
        if isinstance(obj, Mapping):
            return self.from_ls_values(spec, [obj], source_text=source_text)
        if isinstance(obj, list) and all(isinstance(v, Mapping) for v in obj):
            return self.from_ls_values(spec, obj, source_text=source_text)
        return spec.validate_value(obj)


class _RatingCodec(_ScalarCodec):
    control_tag = "Rating"
    result_type = "rating"
    value_key = "rating"

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        top = _max_rating(spec)
        return {
            "type": "integer",
            "enum": list(range(1, top + 1)),
            "description": f"A rating from 1 (lowest) to {top} (highest).",
        }

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        top = _max_rating(spec)
        number = _as_number(value)
        if number is None or not number.is_integer() or not 1 <= number <= top:
            raise LabelValueError(
                f"a rating must be a whole number from 1 to {top}, got {value!r}", hint=self.hint(spec)
            )
        return int(number)

    def parse_text(self, spec: LabelSpec, text: str, *, source_text: str | None) -> LabelValue:
        # Accept the display form "4 / 5" too.
        match = re.fullmatch(r"(.+?)\s*/\s*(\d+)", text)
        if match and int(match.group(2)) == _max_rating(spec):
            text = match.group(1)
        return self.validate(spec, text, source_text=source_text)

    def display(self, spec: LabelSpec, value: object) -> str:
        return f"{value} / {_max_rating(spec)}"

    def choices(self, spec: LabelSpec) -> list[str]:
        return [str(n) for n in range(1, _max_rating(spec) + 1)]

    def hint(self, spec: LabelSpec) -> str:
        return f"give a whole number from 1 to {_max_rating(spec)}"

    def control_xml(self, spec: LabelSpec) -> list[str]:
        return [f'<Rating {_name_attrs(spec)} maxRating="{_max_rating(spec)}"/>']


class _NumberCodec(_ScalarCodec):
    control_tag = "Number"
    result_type = "number"
    value_key = "number"

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        # Bounds go in the description: strict structured output does not accept minimum/maximum everywhere.
        return {"type": "number", "description": "A number" + self._range_text(spec) + "."}

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        number = _as_number(value)
        if number is None or not math.isfinite(number):
            raise LabelValueError(f"expected a number, got {value!r}", hint=self.hint(spec))
        too_low = spec.min_value is not None and number < spec.min_value
        too_high = spec.max_value is not None and number > spec.max_value
        if too_low or too_high:
            raise LabelValueError(
                f"{_format_number(number)} is outside the allowed range{self._range_text(spec)}",
                hint=self.hint(spec),
            )
        return number

    def display(self, spec: LabelSpec, value: object) -> str:
        return _format_number(value) if isinstance(value, int | float) else str(value)

    def hint(self, spec: LabelSpec) -> str:
        return "give a number such as 3 or 3.5" + self._range_text(spec)

    @staticmethod
    def _range_text(spec: LabelSpec) -> str:
        low, high = spec.min_value, spec.max_value
        if low is not None and high is not None:
            return f" from {_format_number(low)} to {_format_number(high)}"
        if low is not None:
            return f" of at least {_format_number(low)}"
        if high is not None:
            return f" of at most {_format_number(high)}"
        return ""

    def control_xml(self, spec: LabelSpec) -> list[str]:
        bounds = "".join(
            f' {attr}="{_format_number(bound)}"'
            for attr, bound in (("min", spec.min_value), ("max", spec.max_value))
            if bound is not None
        )
        return [f"<Number {_name_attrs(spec)}{bounds}/>"]


class _TextCodec(_Codec):
    control_tag = "TextArea"
    result_type = "textarea"

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        return {"type": "string", "description": "The answer as free text."}

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        if not isinstance(value, str) or not value.strip():
            raise LabelValueError(f"expected a non-empty text, got {value!r}", hint=self.hint(spec))
        return value.strip()

    def hint(self, spec: LabelSpec) -> str:
        return "write the answer as text"

    def to_ls_values(self, spec: LabelSpec, value: LabelValue) -> list[dict[str, Any]]:
        return [{"text": [value]}]

    def from_ls_values(
        self, spec: LabelSpec, values: list[Mapping[str, Any]], *, source_text: str | None
    ) -> LabelValue:
        texts: list[object] = []
        for value in values:
            raw = value.get("text")
            texts.extend(raw if isinstance(raw, list) else [raw])
        if not all(isinstance(t, str) for t in texts):
            raise LabelValueError(f"a textarea result must hold texts, got {texts!r}")
        return spec.validate_value("\n".join(cast(list[str], texts)))

    def to_min(self, spec: LabelSpec, value: LabelValue) -> Any:
        return value


class _PairwiseCodec(_ScalarCodec):
    control_tag = "Pairwise"
    result_type = "pairwise"
    value_key = "selected"

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        left, right = spec.pair_fields()
        return {
            "type": "string",
            "enum": list(PAIRWISE_SIDES),
            "description": f"Which item is better: 'left' means {left}, 'right' means {right}.",
        }

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        if isinstance(value, str):
            key = value.strip().casefold()
            for side, names in zip(PAIRWISE_SIDES, self._side_names(spec), strict=True):
                if key in names:
                    return side
        raise LabelValueError(f"expected 'left' or 'right', got {value!r}", hint=self.hint(spec))

    def parse_text(self, spec: LabelSpec, text: str, *, source_text: str | None) -> LabelValue:
        # Accept "1"/"2" and the display form "left (summary_1)".
        text = {"1": "left", "2": "right"}.get(text, text)
        text = re.sub(r"\s*\([^()]*\)$", "", text) or text
        return self.validate(spec, text, source_text=source_text)

    def display(self, spec: LabelSpec, value: object) -> str:
        if value not in PAIRWISE_SIDES:
            return str(value)
        return f"{value} ({spec.pair_fields()[PAIRWISE_SIDES.index(str(value))]})"

    def choices(self, spec: LabelSpec) -> list[str]:
        return list(PAIRWISE_SIDES)

    def hint(self, spec: LabelSpec) -> str:
        left, right = spec.pair_fields()
        return f"answer 'left' (or 1, {left}) or 'right' (or 2, {right})"

    @staticmethod
    def _side_names(spec: LabelSpec) -> list[set[str]]:
        fields = spec.pair_fields()
        objects = spec.target_names()
        return [{side, fields[i].casefold(), objects[i].casefold()} for i, side in enumerate(PAIRWISE_SIDES)]


class _SpansCodec(_Codec):
    control_tag = "Labels"
    result_type = "labels"

    def label_schema(self, spec: LabelSpec) -> dict[str, Any]:
        field = spec.span_field or "the input"
        return {
            "type": "array",
            "description": f"Every labeled piece of {field}, in the order they appear." + _glossary(spec),
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string", "description": f"The exact text, copied from {field}."},
                    "label": {"type": "string", "enum": spec.class_names()},
                },
                "required": ["text", "label"],
                "additionalProperties": False,
            },
        }

    def validate(self, spec: LabelSpec, value: object, *, source_text: str | None) -> LabelValue:
        if not isinstance(value, list | tuple):
            raise LabelValueError(f"expected a list of spans, got {_kind(value)}", hint=self.hint(spec))
        spans: dict[tuple[int, int, str], Span] = {}
        for position, item in enumerate(value, start=1):
            for span in self._validate_one(spec, item, position, source_text):
                spans[_span_key(span)] = span
        # Spans on the same characters are ordered like the classes, as multi_choice labels are.
        order = {name: index for index, name in enumerate(spec.class_names())}
        return sorted(spans.values(), key=lambda s: (s["start"], s["end"], order[s["label"]]))

    def empty_value(self) -> LabelValue | None:
        return []

    def _validate_one(
        self, spec: LabelSpec, item: object, position: int, source_text: str | None
    ) -> list[Span]:
        where = f"span {position}"
        if not isinstance(item, Mapping):
            raise LabelValueError(f"{where} must be an object with start, end and label, got {item!r}")
        start, end = _as_offset(item.get("start"), where), _as_offset(item.get("end"), where)
        if not 0 <= start < end:
            raise LabelValueError(f"{where} needs 0 <= start < end, got start={start}, end={end}")
        raw_labels = item.get("labels", [item.get("label")]) if "label" not in item else [item["label"]]
        if (
            not isinstance(raw_labels, list)
            or not raw_labels
            or not all(isinstance(x, str) for x in raw_labels)
        ):
            raise LabelValueError(f"{where} ({start}-{end}) needs a label", hint=self.hint(spec))
        text = item.get("text")
        if source_text is not None:
            if end > len(source_text):
                raise LabelValueError(
                    f"{where} ends at {end}, past the end of the text ({len(source_text)} chars)"
                )
            actual = source_text[start:end]
            if text is not None and text != actual:
                raise LabelValueError(
                    f"{where} ({start}-{end}) says {text!r} but the text there is {actual!r}",
                    hint="offsets are character offsets into the source field",
                )
            text = actual
        elif not isinstance(text, str):
            raise LabelValueError(
                f"{where} ({start}-{end}) has no text and no source text was given to take it from"
            )
        elif len(text) != end - start:
            raise LabelValueError(
                f"{where} ({start}-{end}) is {end - start} characters long but its text {text!r} is not"
            )
        return [Span(start=start, end=end, text=text, label=spec.match_class(label)) for label in raw_labels]

    def parse_text(self, spec: LabelSpec, text: str, *, source_text: str | None) -> LabelValue:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LabelValueError(f"spans must be given as JSON: {exc}", hint=self.hint(spec)) from None
        if isinstance(data, list) and source_text is not None:
            needs_place = [d for d in data if isinstance(d, Mapping) and ("start" not in d or "end" not in d)]
            if needs_place:
                placed, missing = place_spans(source_text, needs_place)
                if missing:
                    raise LabelValueError(
                        "cannot find " + ", ".join(repr(m.get("text")) for m in missing) + " in the text"
                    )
                data = [d for d in data if d not in needs_place] + list(placed)
        return self.validate(spec, data, source_text=source_text)

    def display(self, spec: LabelSpec, value: object) -> str:
        if not isinstance(value, list):
            return str(value)
        if not value:
            return "(no spans)"
        return "; ".join(
            f"{s.get('text')} [{s.get('label')}] {s.get('start')}-{s.get('end')}"
            if isinstance(s, Mapping)
            else str(s)
            for s in value
        )

    def choices(self, spec: LabelSpec) -> list[str]:
        return spec.class_names()

    def hint(self, spec: LabelSpec) -> str:
        return (
            'give spans as JSON, e.g. [{"start": 0, "end": 5, "label": "'
            + spec.class_names()[0]
            + '"}]; labels: '
            + ", ".join(spec.class_names())
        )

    def to_ls_values(self, spec: LabelSpec, value: LabelValue) -> list[dict[str, Any]]:
        return [
            {"start": s["start"], "end": s["end"], "text": s["text"], "labels": [s["label"]]}
            for s in cast(list[Span], value)
        ]

    def from_ls_values(
        self, spec: LabelSpec, values: list[Mapping[str, Any]], *, source_text: str | None
    ) -> LabelValue:
        return spec.validate_value(list(values), source_text=source_text)

    def control_xml(self, spec: LabelSpec) -> list[str]:
        labels = [f"  <Label {_class_attrs(c)}/>" for c in spec.classes]
        return [f"<Labels {_name_attrs(spec)}>", *labels, "</Labels>"]


_CODECS: dict[TaskType, _Codec] = {
    TaskType.single_choice: _SingleChoiceCodec(),
    TaskType.multi_choice: _MultiChoiceCodec(),
    TaskType.rating: _RatingCodec(),
    TaskType.number: _NumberCodec(),
    TaskType.text: _TextCodec(),
    TaskType.pairwise: _PairwiseCodec(),
    TaskType.spans: _SpansCodec(),
}


def _only_one(spec: LabelSpec, values: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    if len(values) != 1:
        raise LabelValueError(f"expected one result for '{spec.from_name}', got {len(values)}")
    return values[0]


def _ls_choices(value: Mapping[str, Any]) -> list[object]:
    chosen = value.get("choices")
    if not isinstance(chosen, list):
        raise LabelValueError(f"a choices result needs a 'choices' list, got {dict(value)!r}")
    return chosen


def _max_rating(spec: LabelSpec) -> int:
    return spec.max_rating or 5


def _glossary(spec: LabelSpec) -> str:
    described = [c for c in spec.classes if c.description]
    if not described:
        return ""
    return " Label definitions: " + "; ".join(f"{c.name}: {c.description}" for c in described) + "."


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _as_offset(value: object, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise LabelValueError(f"{where} needs whole-number start and end offsets, got {value!r}")


def _format_number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1].strip()
    return text


def _kind(value: object) -> str:
    return type(value).__name__


def _stable_id(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode(), usedforsecurity=False).hexdigest()[:10]


# ---------------------------------------------------------------------- Label Studio configs

_LAYOUT_TAGS = frozenset({"view", "header", "style", "collapse", "panel", "filter", "markdown"})
_OBJECT_TAGS = frozenset({"text", "hypertext"})
_ATTR_ESCAPES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}


def _xml_attr(value: str) -> str:
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char, entity in _ATTR_ESCAPES.items():
        value = value.replace(char, entity)
    return value


def _name_attrs(spec: LabelSpec) -> str:
    return f'name="{_xml_attr(spec.from_name)}" toName="{_xml_attr(spec.to_name)}"'


def _class_attrs(label_class: LabelClass) -> str:
    hint = f' hint="{_xml_attr(label_class.description)}"' if label_class.description else ""
    return f'value="{_xml_attr(label_class.name)}"{hint}'


def _attributes(elem: Element) -> dict[str, str]:
    # LS reads tag and attribute names case-insensitively (toName == toname).
    return {key.lower(): value for key, value in elem.attrib.items()}


def _describe_tag(elem: Element) -> str:
    name = _attributes(elem).get("name")
    return f"<{elem.tag} name='{name}'>" if name else f"<{elem.tag}>"


def _parse_config_xml(xml: str) -> Element:
    if not isinstance(xml, str) or not xml.strip():
        raise LabelSpecError("the label config is empty", hint="it should look like <View>...</View>")
    if len(xml) > MAX_CONFIG_CHARS:
        raise LabelSpecError(
            f"the label config is {len(xml)} characters long; the limit is {MAX_CONFIG_CHARS}"
        )
    try:
        root: Element = SafeElementTree.fromstring(xml, forbid_dtd=True)
    except defusedxml.DTDForbidden:
        raise LabelSpecError(
            "the label config declares a DTD (<!DOCTYPE ...>), which can define entities that expand "
            "without bound or read local files; it was refused",
            hint="Label Studio configs never need a DOCTYPE: remove it",
        ) from None
    except defusedxml.DefusedXmlException as exc:
        raise LabelSpecError(
            f"the label config uses a forbidden XML feature ({type(exc).__name__}); it was refused",
            hint="remove entity declarations and external references",
        ) from None
    except ParseError as exc:
        line, column = exc.position
        problem = str(exc).split(":")[0]
        raise LabelSpecError(
            f"the label config is not well-formed XML: {problem} at line {line}, column {column + 1}",
            hint="check that every tag is closed and attribute values are quoted",
        ) from None
    if root.tag.lower() != "view":
        raise LabelSpecError(f"the label config must start with <View>, not <{root.tag}>")
    return root


class _ConfigTags:
    """The object and control tags of a labeling config, in document order."""

    def __init__(self) -> None:
        self.controls: list[Element] = []
        self.object_tags: dict[str, str] = {}  # object name -> tag
        self.objects: list[tuple[str, str]] = []  # (object name, data field) for $-valued objects

    def collect(self, elem: Element) -> None:
        tag = elem.tag.lower()
        if tag in _CONTROL_PARSERS:
            self.controls.append(elem)
            return
        if tag in _OBJECT_TAGS:
            self._add_object(elem)
        elif tag not in _LAYOUT_TAGS:
            raise LabelSpecError(f"unsupported tag {_describe_tag(elem)}: {_SUPPORTED_TAGS_TEXT}")
        for child in elem:
            self.collect(child)

    def _add_object(self, elem: Element) -> None:
        attrs = _attributes(elem)
        name = attrs.get("name", "").strip()
        if not name:
            raise LabelSpecError(f"{_describe_tag(elem)} needs a name attribute")
        if name in self.object_tags:
            raise LabelSpecError(f"two object tags are named '{name}'; names must be unique")
        self.object_tags[name] = elem.tag
        value = attrs.get("value", "").strip()
        if value.startswith("$") and len(value) > 1:
            field = value[1:]
            if field in (f for _, f in self.objects):
                raise LabelSpecError(f"two object tags show the field '${field}'; show each field once")
            self.objects.append((name, field))


def _child_classes(control: Element, child_tag: str, *, alias_is_name: bool) -> list[LabelClass]:
    """Read <Choice>/<Label> children (layout tags in between are allowed)."""
    classes: list[LabelClass] = []
    for elem in control.iter():
        tag = elem.tag.lower()
        if elem is control or tag in _LAYOUT_TAGS:
            continue
        if tag != child_tag:
            raise LabelSpecError(f"unsupported tag {_describe_tag(elem)} inside {_describe_tag(control)}")
        attrs = _attributes(elem)
        value, alias, hint = attrs.get("value", ""), attrs.get("alias", ""), attrs.get("hint", "")
        if alias_is_name and alias:
            # LS writes the alias, not the value, into results: the alias is what labels are called.
            name, description = alias, hint or (value if value != alias else "")
        else:
            name, description = value, hint or alias
        if not name.strip():
            raise LabelSpecError(f"a <{elem.tag}> in {_describe_tag(control)} has no value")
        classes.append(LabelClass(name=name, description=description))
    return classes


def _refuse_dynamic(control: Element, attrs: Mapping[str, str]) -> None:
    if attrs.get("value", "").startswith("$"):
        raise LabelSpecError(
            f"{_describe_tag(control)} loads its options from the task data (value='{attrs['value']}'); "
            "labelpilot needs the labels listed in the config"
        )


def _parse_choices(control: Element, attrs: Mapping[str, str]) -> dict[str, Any]:
    _refuse_dynamic(control, attrs)
    mode = attrs.get("choice", "single").strip().lower()
    types = {"single": TaskType.single_choice, "single-radio": TaskType.single_choice}
    types["multiple"] = TaskType.multi_choice
    if mode not in types:
        raise LabelSpecError(
            f"{_describe_tag(control)} has choice='{mode}'; use single, single-radio or multiple"
        )
    return {"type": types[mode], "classes": _child_classes(control, "choice", alias_is_name=True)}


def _parse_labels(control: Element, attrs: Mapping[str, str]) -> dict[str, Any]:
    _refuse_dynamic(control, attrs)
    return {"type": TaskType.spans, "classes": _child_classes(control, "label", alias_is_name=False)}


def _parse_rating(control: Element, attrs: Mapping[str, str]) -> dict[str, Any]:
    raw = attrs.get("maxrating", "5").strip()
    if not raw.isdigit():
        raise LabelSpecError(f"{_describe_tag(control)} has maxRating='{raw}'; it must be a whole number")
    return {"type": TaskType.rating, "max_rating": int(raw)}


def _parse_number(control: Element, attrs: Mapping[str, str]) -> dict[str, Any]:
    bounds: dict[str, float] = {}
    for attr, key in (("min", "min_value"), ("max", "max_value")):
        if attr in attrs:
            try:
                bounds[key] = float(attrs[attr])
            except ValueError:
                raise LabelSpecError(
                    f"{_describe_tag(control)} has {attr}='{attrs[attr]}', not a number"
                ) from None
    return {"type": TaskType.number, **bounds}


def _no_children(task_type: TaskType) -> Callable[[Element, Mapping[str, str]], dict[str, Any]]:
    def parse(control: Element, attrs: Mapping[str, str]) -> dict[str, Any]:
        for child in control:
            raise LabelSpecError(f"unsupported tag {_describe_tag(child)} inside {_describe_tag(control)}")
        return {"type": task_type}

    return parse


#: Control tag (lower case) -> reader of its attributes and children into LabelSpec fields.
_CONTROL_PARSERS: dict[str, Callable[[Element, Mapping[str, str]], dict[str, Any]]] = {
    "choices": _parse_choices,
    "labels": _parse_labels,
    "rating": _parse_rating,
    "number": _parse_number,
    "textarea": _no_children(TaskType.text),
    "pairwise": _no_children(TaskType.pairwise),
}
