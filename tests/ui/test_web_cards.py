"""The label and review cards of the web chat (`ui.web_cards.Deck`) against a real SQLite database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.errors import LabelValueError
from tools.groundtruth import coverage, sample_tasks, set_label, task_history
from tools.importers import import_file
from tools.labelspec import LabelSpec, TaskType
from tools.projects import create_project, set_label_spec
from tools.storage import Database
from ui.web_cards import COLLAPSE_AT, Button, Deck

CLASSES = ["Sports", "World", "Business"]
NEWS = (
    "id,text,topic\n"
    "t1,Late goal wins the cup final,Sports\n"
    "t2,Election results are in,\n"
    "t3,Shares fell sharply,\n"
    "t4,Summit ends without a deal,\n"
)


def make_project(db: Database, tmp_path: Path, name: str, spec: LabelSpec, csv_text: str) -> None:
    """A project with `spec` and the rows of `csv_text` (a `topic` column becomes ground truth)."""
    create_project(db, name)
    set_label_spec(db, name, spec)
    path = tmp_path / f"{name}.csv"
    path.write_text(csv_text, encoding="utf-8")
    label_column = "topic" if csv_text.startswith("id,text,topic") else None
    import_file(db, name, path, label_column=label_column)


def cards_of(db: Database, project: str) -> list[dict[str, Any]]:
    """Every task as a card, the way the agent's `sample_tasks` tool builds them (ordered by id here)."""
    tasks = sorted(sample_tasks(db, project, 50, include_labeled=True), key=lambda t: t.external_id)
    return [
        {
            "position": position,
            "task": task.external_id,
            "data": dict(task.data),
            "ground_truth": task.ground_truth,
        }
        for position, task in enumerate(tasks, 1)
    ]


def deck_of(db: Database, project: str, spec: LabelSpec, **kwargs: Any) -> Deck:
    return Deck(db=db, project=project, spec=spec, cards=cards_of(db, project), author="alice", **kwargs)


def kinds(buttons: list[Button]) -> list[tuple[str, str, str | None]]:
    return [(b.kind, b.label, b.value) for b in buttons]


@pytest.fixture
def news(db: Database, tmp_path: Path) -> LabelSpec:
    spec = LabelSpec.from_classes(
        [("Sports", "games and athletes"), "World", "Business"], input_fields=["text"]
    )
    make_project(db, tmp_path, "news", spec, NEWS)
    return spec


def test_a_single_choice_card_shows_inputs_progress_and_a_button_per_label(
    db: Database, news: LabelSpec
) -> None:
    deck = deck_of(db, "news", news)
    view = deck.view()
    assert view is not None
    assert view.title == "news · task t1"
    assert view.progress == "label 1 / 4"
    assert view.fields == [{"name": "text", "text": "Late goal wins the cup final"}]
    assert view.note == "Current label: Sports"
    assert kinds(view.buttons) == [
        ("label", "Sports", "Sports"),
        ("label", "World", "World"),
        ("label", "Business", "Business"),
        ("skip", "Skip", None),
    ]
    assert view.buttons[0].tooltip == "games and athletes"
    assert view.props() == {
        "title": "news · task t1",
        "progress": "label 1 / 4",
        "fields": [{"name": "text", "text": "Late goal wins the cup final"}],
        "note": "Current label: Sports",
        "collapseAt": COLLAPSE_AT,
    }


def test_a_label_is_stored_with_source_chat_and_the_deck_moves_on(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    deck.skip()
    assert deck.label("world") == "World"  # typed values are parsed with the schema
    history = task_history(db, "news", "t2")
    assert [(h.value, h.source, h.author, h.deleted) for h in history] == [("World", "chat", "alice", False)]
    assert deck.position == 2 and deck.progress() == "3 / 4"
    view = deck.view()
    assert view is not None and view.title == "news · task t3" and view.note == ""
    assert kinds(view.buttons)[-1] == ("undo", "Undo", None)  # something to take back now
    assert coverage(db, "news").labeled_count == 2


def test_undo_of_a_new_label_deletes_it(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    deck.skip()
    deck.label("Business")
    assert deck.undo() == "Removed the label of task t2."
    assert deck.position == 1 and deck.labeled == 0 and deck.skipped == 1
    history = task_history(db, "news", "t2")
    assert [(h.value, h.display, h.deleted) for h in history] == [
        ("Business", "Business", False),
        (None, "(deleted)", True),
    ]
    assert coverage(db, "news").labeled_count == 1


def test_undo_restores_the_earlier_label(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    deck.label("World")  # t1 was Sports (imported)
    assert deck.undo() == "Restored the earlier label of task t1."
    history = task_history(db, "news", "t1")
    assert [(h.value, h.source) for h in history] == [
        ("Sports", "import"),
        ("World", "chat"),
        ("Sports", "chat"),
    ]
    assert deck.position == 0 and deck.labeled == 0
    view = deck.view()
    assert view is not None and view.title == "news · task t1"
    assert "undo" not in [b.kind for b in view.buttons]


def test_undo_of_a_skip_goes_back_without_touching_labels(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    deck.label("Sports")  # t1 keeps its label: nothing new is stored
    deck.skip()
    assert deck.undo() == "Back to task t2."
    assert deck.position == 1 and deck.skipped == 0 and deck.labeled == 1
    assert task_history(db, "news", "t2") == []


def test_undo_with_nothing_to_undo_raises(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    deck.skip()
    deck.undo()
    with pytest.raises(IndexError, match="there is nothing to undo"):
        deck.undo()


def test_a_wrong_value_raises_and_the_deck_stays_on_the_card(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    deck.skip()
    with pytest.raises(LabelValueError):
        deck.label("Weather")
    assert deck.position == 1 and deck.labeled == 0 and len(deck.steps) == 1
    assert task_history(db, "news", "t2") == []


def test_a_finished_deck_has_no_view_and_sums_up(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    deck.label("Sports")
    deck.label("World")
    deck.skip()
    deck.label("World")
    assert deck.finished and deck.current() is None and deck.view() is None
    assert deck.progress() == "4 / 4"
    assert deck.summary() == "3 labeled, 1 skipped, of 4."
    with pytest.raises(IndexError, match="finished"):
        deck.label("Sports")
    with pytest.raises(IndexError, match="finished"):
        deck.skip()
    assert deck.summary() == "3 labeled, 1 skipped, of 4."
    # Undo still works from the end: the last card comes back.
    assert deck.undo() == "Removed the label of task t4."
    assert not deck.finished and deck.progress() == "4 / 4"
    assert {c.label: c.count for c in coverage(db, "news").classes} == {
        "Sports": 1,
        "World": 1,
        "Business": 0,
    }


def test_load_inputs_replaces_shortened_data_with_the_full_task(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec.from_classes(CLASSES, input_fields=["text"])
    long_text = "word " * 2000
    make_project(db, tmp_path, "long", spec, f"id,text,source\nL1,{long_text.strip()},wire\n")
    cards = [{"position": 1, "task": "L1", "data": {"text": "word word…"}, "ground_truth": None}]
    deck = Deck(db=db, project="long", spec=spec, cards=cards, author="alice")
    deck.load_inputs()
    assert deck.cards[0]["data"] == {"text": long_text.strip(), "source": "wire"}
    view = deck.view()
    assert view is not None
    # Only the schema's input fields are shown (the metadata column is not).
    assert view.fields == [{"name": "text", "text": long_text.strip()}]


def test_fields_fall_back_to_every_data_key(db: Database, news: LabelSpec) -> None:
    cards = [{"position": 1, "task": "t1", "data": {"headline": "x", "body": 3}, "ground_truth": None}]
    view = Deck(db=db, project="news", spec=news, cards=cards, author="alice").view()
    assert view is not None
    assert view.fields == [{"name": "headline", "text": "x"}, {"name": "body", "text": "3"}]


def test_multi_choice_toggles_then_done_stores_labels_in_schema_order(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec.from_classes(CLASSES, type=TaskType.multi_choice, input_fields=["text"])
    make_project(db, tmp_path, "tags", spec, "id,text\nm1,Transfer fee breaks records\nm2,Quiet day\n")
    deck = deck_of(db, "tags", spec)
    view = deck.view()
    assert view is not None
    assert kinds(view.buttons) == [
        ("toggle", "☐ Sports", "Sports"),
        ("toggle", "☐ World", "World"),
        ("toggle", "☐ Business", "Business"),
        ("done", "Done", None),
        ("skip", "Skip", None),
    ]
    assert view.note == "Selected: none yet — toggle labels, then Done"
    deck.toggle("Business")
    deck.toggle("World")
    deck.toggle("Sports")
    deck.toggle("World")  # toggled off again
    view = deck.view()
    assert view is not None
    assert [b.label for b in view.buttons if b.kind == "toggle"] == ["☑ Sports", "☐ World", "☑ Business"]
    assert view.note == "Selected: Business, Sports — toggle labels, then Done"
    assert deck.done() == "Sports, Business"
    assert task_history(db, "tags", "m1")[-1].value == ["Sports", "Business"]
    assert deck.selected == [] and deck.position == 1
    # Done with nothing selected records an empty label set.
    assert deck.done() == "(none)"
    assert task_history(db, "tags", "m2")[-1].value == []
    assert deck.undo() == "Removed the label of task m2."
    assert deck.selected == []


def test_a_rating_button_stores_an_int(db: Database, tmp_path: Path) -> None:
    spec = LabelSpec.model_validate({"type": "rating", "input_fields": ["text"], "max_rating": 5})
    make_project(db, tmp_path, "stars", spec, "id,text\nr1,Great phone\nr2,Broke in a day\n")
    deck = deck_of(db, "stars", spec)
    view = deck.view()
    assert view is not None
    assert kinds(view.buttons) == [("label", str(n), str(n)) for n in range(1, 6)] + [("skip", "Skip", None)]
    assert view.note == ""
    button = view.buttons[3]
    assert deck.label(button.value) == "4 / 5"
    stored = task_history(db, "stars", "r1")[-1].value
    assert stored == 4 and isinstance(stored, int)
    with pytest.raises(LabelValueError, match="from 1 to 5"):
        deck.label("7")
    assert deck.position == 1


@pytest.mark.parametrize(
    ("spec_json", "kind", "answer", "stored"),
    [
        ({"type": "text", "input_fields": ["text"]}, "text", "A short summary", "A short summary"),
        ({"type": "number", "input_fields": ["text"], "min_value": 0}, "number", "42", 42.0),
        (
            {"type": "spans", "classes": [{"name": "PER"}, {"name": "ORG"}], "input_fields": ["text"]},
            "spans",
            '[{"start": 0, "end": 5, "label": "PER"}]',
            [{"start": 0, "end": 5, "text": "Alice", "label": "PER"}],
        ),
        (
            # Spans typed by their text only are placed in the task's text (set_label passes it along).
            {"type": "spans", "classes": [{"name": "PER"}, {"name": "ORG"}], "input_fields": ["text"]},
            "spans",
            '[{"text": "Acme", "label": "ORG"}]',
            [{"start": 15, "end": 19, "text": "Acme", "label": "ORG"}],
        ),
    ],
    ids=["text", "number", "spans-offsets", "spans-text"],
)
def test_typed_types_get_no_label_buttons_and_a_note(
    db: Database, tmp_path: Path, spec_json: dict[str, Any], kind: str, answer: str, stored: Any
) -> None:
    spec = LabelSpec.model_validate(spec_json)
    make_project(db, tmp_path, "typed", spec, "id,text\nx1,Alice works at Acme\n")
    deck = deck_of(db, "typed", spec)
    assert deck.choices == []
    view = deck.view()
    assert view is not None
    assert kinds(view.buttons) == [("skip", "Skip", None)]
    assert view.note == f'{kind} labels are typed: answer in the chat, e.g. "#1 is …"'
    deck.label(answer)
    assert task_history(db, "typed", "x1")[-1].value == stored
    assert deck.finished


async def test_review_deck_accepts_and_corrects_predictions_with_source_review(
    db: Database, news: LabelSpec
) -> None:
    from agent.services import review_queue
    from tools.baseline import BaselineLabeler
    from tools.embeddings import HashingEmbedder
    from tools.engine import run_job

    set_label(db, "news", "t2", "World")
    await run_job(db, "news", BaselineLabeler(db, "news", embedder=HashingEmbedder()))
    items, waiting = review_queue(db, "news")
    assert waiting == 2 and sorted(i.task for i in items) == ["t3", "t4"]
    cards = [{"position": position, **item.model_dump(mode="json")} for position, item in enumerate(items, 1)]
    deck = Deck(db=db, project="news", spec=news, cards=cards, author="bob", review=True)
    deck.load_inputs()
    first, second = cards[0], cards[1]

    view = deck.view()
    assert view is not None
    assert view.progress == "review 1 / 2" and view.title == f"news · task {first['task']}"
    assert view.note == f"Predicted: {first['display']} (confidence {first['confidence']:.2f})"
    assert kinds(view.buttons) == [
        ("accept", f"✓ Accept {first['display']}", None),
        ("label", "Sports", "Sports"),
        ("label", "World", "World"),
        ("label", "Business", "Business"),
        ("skip", "Skip", None),
    ]

    assert deck.accept() == first["display"]
    history = task_history(db, "news", first["task"])
    assert [(h.value, h.source, h.author) for h in history] == [(first["prediction"], "review", "bob")]
    correction = next(c for c in CLASSES if c != second["display"])
    assert deck.label(correction) == correction
    assert task_history(db, "news", second["task"])[-1].source == "review"
    assert deck.summary() == "2 reviewed, 0 skipped, of 2."
    # Undo of a review: the task had no ground truth, so the label goes away.
    assert deck.undo() == f"Removed the label of task {second['task']}."
    assert task_history(db, "news", second["task"])[-1].deleted


def test_accept_needs_a_prediction(db: Database, news: LabelSpec) -> None:
    deck = deck_of(db, "news", news)
    with pytest.raises(IndexError, match="no prediction"):
        deck.accept()
    review = Deck(
        db=db,
        project="news",
        spec=news,
        cards=[{"position": 1, "task": "t2", "data": {"text": "x"}, "display": "World", "confidence": None}],
        author="bob",
        review=True,
    )
    view = review.view()
    assert view is not None and view.note == "Predicted: World"
