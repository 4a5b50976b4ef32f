"""Ground-truth and review cards of the web chat: one task per message, labeled with buttons.

A `Deck` is the batch of tasks the agent picked (`sample_tasks` → a "cards" artifact) or the review queue
(`show_review_queue`). It shows one card at a time; each button press records ground truth at once (the
same `tools.groundtruth.set_label` the CLI uses, source `chat` or `review`), Skip moves on, Undo takes the
last step back (restoring the label the task had before, if any). Multiple-choice cards toggle labels and
record them with Done; ratings get one button per value.

Everything here is plain Python (no Chainlit), so the rules are unit-tested directly; `ui/app.py` turns a
`CardView` into a message, a custom element and buttons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from tools.groundtruth import AnnotationSource, delete_label, find_task, set_label
from tools.labelspec import LabelSpec, TaskType
from tools.storage import Database

#: Characters of a field shown before "show more" in a card.
COLLAPSE_AT = 600
#: Buttons kinds a card can have (the `kind` in an action's payload).
ButtonKind = Literal["label", "toggle", "done", "accept", "skip", "undo"]


@dataclass(frozen=True)
class Button:
    """One button under a card."""

    kind: ButtonKind
    label: str
    value: str | None = None
    tooltip: str = ""


@dataclass(frozen=True)
class CardView:
    """What the UI shows for the current card."""

    title: str
    progress: str
    fields: list[dict[str, Any]]
    note: str
    buttons: list[Button]

    def props(self) -> dict[str, Any]:
        """The custom element's props (JSON-safe)."""
        return {
            "title": self.title,
            "progress": self.progress,
            "fields": self.fields,
            "note": self.note,
            "collapseAt": COLLAPSE_AT,
        }


@dataclass
class _Step:
    """One thing done in the deck (for Undo): which card, and what the task's label was before."""

    position: int
    labeled: bool
    previous: Any = None


@dataclass
class Deck:
    """A batch of cards to label (or review), worked through one at a time."""

    db: Database
    project: str
    spec: LabelSpec
    cards: list[dict[str, Any]]
    author: str
    review: bool = False
    position: int = 0
    labeled: int = 0
    skipped: int = 0
    #: Multi-choice labels toggled on the current card.
    selected: list[str] = field(default_factory=list)
    steps: list[_Step] = field(default_factory=list)

    def load_inputs(self) -> None:
        """Replace the cards' inputs (shortened for the model's context) with the tasks' full data."""
        from tools.projects import get_project

        with self.db.session() as session:
            project = get_project(session, self.project)
            for card in self.cards:
                card["data"] = dict(find_task(session, project.id, str(card["task"])).data)

    # ------------------------------------------------------------------ reading

    @property
    def finished(self) -> bool:
        """Whether every card has been labeled or skipped."""
        return self.position >= len(self.cards)

    @property
    def choices(self) -> list[str]:
        """What the buttons offer (empty when the type is typed, not picked)."""
        if self.spec.type in (TaskType.number, TaskType.text, TaskType.spans):
            return []
        return self.spec.choices()

    def progress(self) -> str:
        """E.g. "7 / 20" (cards done so far, of the batch)."""
        return f"{min(self.position + 1, len(self.cards))} / {len(self.cards)}"

    def current(self) -> dict[str, Any] | None:
        """The card shown now (None when finished)."""
        return None if self.finished else self.cards[self.position]

    def view(self) -> CardView | None:
        """The current card as the UI shows it."""
        card = self.current()
        if card is None:
            return None
        data = card.get("data") or {}
        inputs = [f for f in self.spec.input_fields if f in data] or list(data)
        fields = [{"name": name, "text": _text(data[name])} for name in inputs]
        task = str(card.get("task"))
        kind = "review" if self.review else "label"
        title = f"{self.project} · task {task}"
        return CardView(
            title=title,
            progress=f"{kind} {self.progress()}",
            fields=fields,
            note=self._note(card),
            buttons=self._buttons(),
        )

    def _note(self, card: dict[str, Any]) -> str:
        parts = []
        if self.review:
            confidence = card.get("confidence")
            sure = f" (confidence {confidence:.2f})" if isinstance(confidence, int | float) else ""
            parts.append(f"Predicted: {card.get('display')}{sure}")
        elif card.get("ground_truth") is not None:
            parts.append(f"Current label: {_text(card['ground_truth'])}")
        if self.spec.type is TaskType.multi_choice:
            chosen = ", ".join(self.selected) or "none yet"
            parts.append(f"Selected: {chosen} — toggle labels, then Done")
        if not self.choices:
            parts.append(
                f"{self.spec.type.value.replace('_', ' ')} labels are typed: answer in the chat, "
                f'e.g. "#{card.get("position", 1)} is …"'
            )
        return " · ".join(parts)

    def _buttons(self) -> list[Button]:
        descriptions = {label.name: label.description for label in self.spec.classes}
        buttons: list[Button] = []
        card = self.current() or {}
        if self.review:
            buttons.append(
                Button("accept", f"✓ Accept {card.get('display')}", tooltip="The prediction is right")
            )
        if self.spec.type is TaskType.multi_choice:
            for choice in self.choices:
                mark = "☑ " if choice in self.selected else "☐ "
                buttons.append(Button("toggle", mark + choice, choice, descriptions.get(choice, "")))
            buttons.append(Button("done", "Done", tooltip="Record the selected labels"))
        else:
            for choice in self.choices:
                buttons.append(Button("label", choice, choice, descriptions.get(choice, "")))
        buttons.append(Button("skip", "Skip", tooltip="Leave this one for later"))
        if self.steps:
            buttons.append(Button("undo", "Undo", tooltip="Take the last step back"))
        return buttons

    # ------------------------------------------------------------------ acting

    def _ref(self) -> str:
        card = self.current()
        if card is None:
            raise IndexError("the deck is finished")
        return str(card["task"])

    def _source(self) -> AnnotationSource:
        return AnnotationSource.review if self.review else AnnotationSource.chat

    def label(self, value: Any, *, parse: bool = True) -> str:
        """Record `value` for the current card and move on; returns how it was stored ("Sports")."""
        card = self.current()
        if card is None:
            raise IndexError("the deck is finished")
        record = set_label(
            self.db, self.project, self._ref(), value, author=self.author, source=self._source(), parse=parse
        )
        self.steps.append(_Step(self.position, labeled=True, previous=card.get("ground_truth")))
        self.labeled += 1
        self._advance()
        return record.display

    def accept(self) -> str:
        """Review: the prediction is right; it becomes ground truth."""
        card = self.current()
        if card is None or "prediction" not in card:
            raise IndexError("there is no prediction to accept")
        return self.label(card["prediction"], parse=False)

    def toggle(self, choice: str) -> None:
        """Multiple choice: select or unselect a label of the current card."""
        if choice in self.selected:
            self.selected.remove(choice)
        else:
            self.selected.append(choice)

    def done(self) -> str:
        """Multiple choice: record the selected labels (none selected: an empty label set)."""
        ordered = [c for c in self.choices if c in self.selected]
        return self.label(ordered, parse=False)

    def skip(self) -> None:
        """Leave the current card unlabeled and move on."""
        self._ref()  # a finished deck has no card to skip (IndexError, like `label`)
        self.steps.append(_Step(self.position, labeled=False))
        self.skipped += 1
        self._advance()

    def undo(self) -> str:
        """Take the last step back: a label is removed (or the earlier one restored); a skip is undone."""
        if not self.steps:
            raise IndexError("there is nothing to undo")
        step = self.steps.pop()
        self.position = step.position
        self.selected = []
        if not step.labeled:
            self.skipped -= 1
            return f"Back to task {self._ref()}."
        self.labeled -= 1
        if step.previous is None:
            delete_label(self.db, self.project, self._ref(), author=self.author)
            return f"Removed the label of task {self._ref()}."
        set_label(
            self.db,
            self.project,
            self._ref(),
            step.previous,
            author=self.author,
            source=self._source(),
            parse=False,
        )
        return f"Restored the earlier label of task {self._ref()}."

    def _advance(self) -> None:
        self.position += 1
        self.selected = []

    def summary(self) -> str:
        """What the batch achieved."""
        kind = "reviewed" if self.review else "labeled"
        return f"{self.labeled} {kind}, {self.skipped} skipped, of {len(self.cards)}."


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value)
    return "" if value is None else str(value)
