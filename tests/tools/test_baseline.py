"""The offline baseline: strategies, leave-one-out, confidence, task types, identity, and the Labeler protocol.

Logic tests use `FakeEmbedder`, whose vectors are written down here (mostly angles in a plane), so every
expected answer can be checked by hand; one test runs the real MiniLM on a few obvious sentences.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evals.bench_baseline import main as bench_main
from tools.baseline import (
    AUTO_KNN_MIN_CLASSES,
    AUTO_KNN_MIN_EXAMPLES,
    BaselineClassifier,
    BaselineLabeler,
    BaselineStrategy,
    LabeledExample,
    resolve_strategy,
    supports,
    task_text,
)
from tools.embeddings import FloatMatrix, get_embedder
from tools.engine import JobScope, RunKind, ScopeKind, job_key, run_job
from tools.errors import ErrorKind, LabelValueError, NotFoundError
from tools.groundtruth import set_label
from tools.labelers import Labeler, LabelOutcome, TaskInput
from tools.labelspec import LabelSpec, TaskType
from tools.projects import create_project, set_label_spec
from tools.storage import Database, Task


def at(degrees: float) -> list[float]:
    """A unit vector in the x-y plane."""
    radians = math.radians(degrees)
    return [math.cos(radians), math.sin(radians), 0.0]


class FakeEmbedder:
    """Deterministic embedder: every text it may see has a vector written down; it records its calls."""

    name = "fake"
    dimension = 3

    def __init__(self, vectors: Mapping[str, Sequence[float]]) -> None:
        self.vectors = dict(vectors)
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> FloatMatrix:
        self.calls.append(list(texts))
        rows = np.array([self.vectors[text] for text in texts], dtype=np.float32).reshape(len(texts), 3)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return np.asarray(rows / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def embedded(self) -> list[str]:
        return [text for call in self.calls for text in call]


# Class A around 0-20 degrees; class B at 90 degrees plus one example (b2) at 40 degrees.
# A query at 33 degrees is nearest to b2 (1-NN says B) but nearer A's centroid (10) than B's (65).
PLANE = {
    "a1": at(0),
    "a2": at(10),
    "a3": at(20),
    "b1": at(90),
    "b2": at(40),
    "q5": at(5),
    "q33": at(33),
    "q37.5": at(37.5),
    "q80": at(80),
    # zero-shot texts: class names, orthogonal to the plane unless a test needs them
    "A": [0.0, 0.0, 1.0],
    "B": [0.0, 0.0, 1.0],
    "C": [0.1, 0.0, 1.0],
    "c1": [0.0, 0.0, 1.0],
}
AB = LabelSpec.from_classes(["A", "B"], input_fields=["text"])
ABC = LabelSpec.from_classes(["A", "B", "C"], input_fields=["text"])
PLANE_LABELS = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B"}


def add_tasks(db: Database, project: str, rows: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Add tasks {external id: data} to a project; return {external id: task id}."""
    from tools.projects import get_project

    with db.session() as session:
        project_id = get_project(session, project).id
        tasks = [
            Task(
                project_id=project_id,
                external_id=external_id,
                content_hash=hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest(),
                data=dict(data),
            )
            for external_id, data in rows.items()
        ]
        session.add_all(tasks)
        session.flush()
        return {task.external_id: task.id for task in tasks}


def make_project(
    db: Database,
    spec: LabelSpec,
    texts: Sequence[str],
    labels: Mapping[str, Any],
    *,
    name: str = "p",
) -> dict[str, int]:
    """A project whose tasks are {"text": t} with external id t, and ground truth `labels`."""
    create_project(db, name, spec=spec)
    ids = add_tasks(db, name, {text: {"text": text} for text in texts})
    for external_id, value in labels.items():
        set_label(db, name, external_id, value, parse=False)
    return ids


def inputs(ids: Mapping[str, int], db: Database, *names: str) -> list[TaskInput]:
    with db.session() as session:
        tasks = [session.get(Task, ids[name]) for name in names]
        return [
            TaskInput(task_id=t.id, external_id=t.external_id, data=t.data, content_hash=t.content_hash)
            for t in tasks
            if t is not None
        ]


async def label_all(labeler: Labeler, tasks: Sequence[TaskInput]) -> dict[str, LabelOutcome]:
    """Run the labeler through the protocol; return outcomes by external id (one per task, checked)."""
    by_id = {task.task_id: task.external_id for task in tasks}
    outcomes = [outcome async for outcome in labeler.label(tasks)]
    assert sorted(o.task_id for o in outcomes) == sorted(by_id)
    return {by_id[o.task_id]: o for o in outcomes}


def plane_labeler(db: Database, **options: Any) -> tuple[BaselineLabeler, FakeEmbedder, dict[str, int]]:
    """A labeler over PLANE_LABELS; class descriptions stay out of the centroids unless a test says otherwise
    (their prior would move the centroids away from the angles the expectations are computed from)."""
    ids = make_project(db, AB, [*PLANE_LABELS, "q5", "q33", "q37.5", "q80"], PLANE_LABELS)
    embedder = FakeEmbedder(PLANE)
    options.setdefault("description_weight", 0.0)
    return BaselineLabeler(db, "p", embedder=embedder, **options), embedder, ids


# ---------------------------------------------------------------------- strategies


async def test_centroid_picks_the_nearest_class_centroid(db: Database) -> None:
    labeler, _, ids = plane_labeler(db, strategy="centroid")
    out = await label_all(labeler, inputs(ids, db, "q5", "q33", "q80"))
    assert {name: o.value for name, o in out.items()} == {"q5": "A", "q33": "A", "q80": "B"}
    assert labeler.info.model == "baseline:fake-centroid"
    # The nearest examples of the chosen class are named, nearest first.
    assert out["q33"].examples == ["a3", "a2", "a1"]
    assert all(o.cost_usd == 0.0 and o.input_tokens is None and o.ok for o in out.values())


async def test_knn_follows_the_nearest_example(db: Database) -> None:
    labeler, _, ids = plane_labeler(db, strategy="knn")
    out = await label_all(labeler, inputs(ids, db, "q5", "q33", "q80"))
    assert {name: o.value for name, o in out.items()} == {"q5": "A", "q33": "B", "q80": "B"}
    assert out["q33"].examples == ["b2"]
    assert labeler.info.model == "baseline:fake-1nn"


def test_knn_votes_weighted_by_similarity() -> None:
    # Three A examples just beyond one B example: 1-NN says B, a 3-NN vote says A, and with a huge
    # temperature (equal weights) a 4-NN vote is 3 A against 1 B too.
    vectors = {"b": at(30), "a1": at(36), "a2": at(37), "a3": at(38), "q": at(32), "A": at(-90), "B": at(-90)}
    examples = [LabeledExample("b", {"text": "b"}, "B")] + [
        LabeledExample(n, {"text": n}, "A") for n in ("a1", "a2", "a3")
    ]

    def answer(k: int, temperature: float = 0.05) -> Any:
        classifier = BaselineClassifier(
            AB, examples, embedder=FakeEmbedder(vectors), strategy="knn", k=k, temperature=temperature
        )
        return classifier.predict([{"text": "q"}])[0]

    assert answer(1).value == "B"
    assert answer(3).value == "A"
    assert answer(3).neighbours == ["b", "a1", "a2"]
    assert answer(4, temperature=1000.0).value == "A"


async def test_zero_shot_embeds_class_names_with_descriptions(db: Database) -> None:
    spec = LabelSpec.from_classes(
        [("Sports", "news about sports"), ("card_arrival", "")], input_fields=["text"]
    )
    embedder = FakeEmbedder(
        {
            "Sports: news about sports": at(0),
            "card arrival": at(90),
            "goal!": at(10),
            "where is my card": at(80),
        }
    )
    ids = make_project(db, spec, ["goal!", "where is my card"], {})
    labeler = BaselineLabeler(db, "p", embedder=embedder)  # auto, no ground truth -> zero-shot
    assert labeler.info.model == "baseline:fake-zero_shot"
    out = await label_all(labeler, inputs(ids, db, "goal!", "where is my card"))
    assert (out["goal!"].value, out["where is my card"].value) == ("Sports", "card_arrival")
    assert out["goal!"].examples == []


async def test_explicit_zero_shot_ignores_examples_and_their_fingerprint(db: Database) -> None:
    labeler, _, _ = plane_labeler(db, strategy="zero_shot", description_weight=1.0)
    assert labeler.info.identity["example_count"] == 0
    set_label(db, "p", "a1", "B", parse=False)
    again = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE), strategy="zero_shot")
    assert again.info.identity == labeler.info.identity


def test_auto_resolves_by_examples_per_class() -> None:
    many, enough = AUTO_KNN_MIN_CLASSES, AUTO_KNN_MIN_EXAMPLES
    auto = BaselineStrategy.auto
    assert resolve_strategy(auto, [0, 0, 0]) is BaselineStrategy.zero_shot
    assert resolve_strategy(auto, [enough] * many) is BaselineStrategy.knn
    assert resolve_strategy(auto, [enough] * (many - 1)) is BaselineStrategy.centroid
    assert resolve_strategy(auto, [enough] * (many - 1) + [enough - 1]) is BaselineStrategy.centroid
    assert resolve_strategy(auto, [3, 4]) is BaselineStrategy.centroid
    assert resolve_strategy(BaselineStrategy.knn, [0, 0]) is BaselineStrategy.knn


def test_auto_uses_one_nearest_neighbour_with_many_well_covered_classes() -> None:
    classes = [f"c{i}" for i in range(AUTO_KNN_MIN_CLASSES)]
    spec = LabelSpec.from_classes(classes, input_fields=["text"])
    vectors: dict[str, list[float]] = {name: [0.0, 0.0, 1.0] for name in classes}
    examples = []
    for c, name in enumerate(classes):
        for j in range(AUTO_KNN_MIN_EXAMPLES):
            text = f"{name}-{j}"
            vectors[text] = at(c * 9 + j * 0.1)
            examples.append(LabeledExample(text, {"text": text}, name))
    classifier = BaselineClassifier(spec, examples, embedder=FakeEmbedder(vectors))
    assert classifier.strategy is BaselineStrategy.knn
    assert classifier.name == "fake-1nn"
    assert BaselineClassifier(spec, examples[:-1], embedder=FakeEmbedder(vectors)).name == "fake-centroid"


def test_a_class_description_counts_as_one_example_of_its_centroid() -> None:
    # One example each, A at 0 and B at 90 degrees; a query at 40 is nearer A. A's description (-30 degrees)
    # pulls its centroid to -15, B's (60) pulls B's to 75: now the query is nearer B.
    vectors = {"a": at(0), "b": at(90), "A": at(-30), "B": at(60), "q": at(40)}
    examples = [LabeledExample("a", {"text": "a"}, "A"), LabeledExample("b", {"text": "b"}, "B")]

    def answer(weight: float) -> Any:
        classifier = BaselineClassifier(
            AB, examples, embedder=FakeEmbedder(vectors), strategy="centroid", description_weight=weight
        )
        return classifier.predict([{"text": "q"}])[0].value

    assert (answer(0.0), answer(1.0)) == ("A", "B")


async def test_class_without_examples_is_represented_by_its_description(db: Database) -> None:
    vectors = {**PLANE, "C": at(-60), "q-55": at(-55)}
    ids = make_project(db, ABC, [*PLANE_LABELS, "q-55", "q5"], PLANE_LABELS)
    for strategy in ("centroid", "knn"):
        labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(vectors), strategy=strategy)
        out = await label_all(labeler, inputs(ids, db, "q-55", "q5"))
        assert (out["q-55"].value, out["q5"].value) == ("C", "A"), strategy


# ---------------------------------------------------------------------- leave-one-out


@pytest.mark.parametrize("strategy", ["centroid", "knn"])
async def test_a_task_is_never_its_own_example(db: Database, strategy: str) -> None:
    # b2 (40 degrees) is a B example. With itself it is B (1-NN: itself; centroid B at 65 is 25 degrees
    # away, A's at 10 is 30). Without itself B is only b1 at 90 degrees, and it is nearer A.
    labeler, _, ids = plane_labeler(db, strategy=strategy)
    out = await label_all(labeler, inputs(ids, db, "b2", "a2", "b1"))
    assert {name: o.value for name, o in out.items()} == {"b2": "A", "a2": "A", "b1": "B"}
    assert all(name not in (o.examples or []) for name, o in out.items())

    with_self = BaselineLabeler(
        db, "p", embedder=FakeEmbedder(PLANE), strategy=strategy, exclude_self=False, description_weight=0.0
    )
    assert (await label_all(with_self, inputs(ids, db, "b2")))["b2"].value == "B"


async def test_a_class_whose_only_example_is_the_task_falls_back_to_its_description(db: Database) -> None:
    vectors = {**PLANE, "c1": at(-50), "C": at(-70)}
    ids = make_project(db, ABC, [*PLANE_LABELS, "c1"], {**PLANE_LABELS, "c1": "C"})
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(vectors), strategy="centroid")
    out = await label_all(labeler, inputs(ids, db, "c1"))
    assert out["c1"].value == "C"
    assert out["c1"].examples == []


async def test_the_only_example_of_a_type_without_descriptions_leaves_nothing_to_compare(
    db: Database,
) -> None:
    spec = LabelSpec.from_classes([], type=TaskType.rating, max_rating=5, input_fields=["text"])
    ids = make_project(db, spec, ["a1", "q5"], {"a1": 4})
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE))
    out = await label_all(labeler, inputs(ids, db, "a1", "q5"))
    assert out["a1"].error_kind is ErrorKind.bad_request
    assert "itself" in (out["a1"].error_message or "")
    assert out["q5"].value == 4


# ---------------------------------------------------------------------- confidence


@pytest.mark.parametrize("strategy", ["centroid", "knn", "zero_shot"])
async def test_confidence_is_a_probability_that_grows_with_the_margin(db: Database, strategy: str) -> None:
    vectors = {**PLANE, "A": at(10), "B": at(65)}
    ids = make_project(db, AB, [*PLANE_LABELS, "q5", "q33", "q37.5", "q80"], PLANE_LABELS)
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(vectors), strategy=strategy)
    out = await label_all(labeler, inputs(ids, db, "q5", "q33", "q80", "q37.5"))
    confidences = {name: o.confidence for name, o in out.items()}
    assert all(c is not None and 0.0 <= c <= 1.0 for c in confidences.values())
    assert out["q5"].value == "A"
    assert confidences["q5"] > confidences["q33"]  # type: ignore[operator]


async def test_confidence_of_a_tie_is_one_over_the_classes(db: Database) -> None:
    # 37.5 degrees is halfway between the centroids of A (10) and B (65).
    labeler, _, ids = plane_labeler(db, strategy="centroid")
    out = await label_all(labeler, inputs(ids, db, "q37.5", "q5"))
    assert out["q37.5"].confidence == pytest.approx(0.5, abs=1e-3)
    assert out["q5"].confidence is not None and out["q5"].confidence > 0.9


# ---------------------------------------------------------------------- task types


MULTI = LabelSpec.from_classes(["X", "Y", "Z"], type=TaskType.multi_choice, input_fields=["text"])
AXES = {
    "e1": [1.0, 0.0, 0.0],
    "e2": [0.0, 1.0, 0.0],
    "e3": [1.0, 1.0, 0.0],
    "e4": [0.0, 0.0, 1.0],
    "both": [1.0, 0.9, 0.05],
    "x only": [1.0, 0.0, 0.0],
    "X": [1.0, 0.0, 0.0],
    "Y": [0.0, 1.0, 0.0],
    "Z": [0.0, 0.0, 1.0],
}
MULTI_LABELS = {"e1": ["X"], "e2": ["Y"], "e3": ["X", "Y"], "e4": ["Z"]}


@pytest.mark.parametrize("strategy", ["centroid", "knn"])
async def test_multi_choice_picks_every_class_nearer_its_centroid_than_its_complement(
    db: Database, strategy: str
) -> None:
    ids = make_project(db, MULTI, [*MULTI_LABELS, "both", "x only"], MULTI_LABELS)
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(AXES), strategy=strategy)
    out = await label_all(labeler, inputs(ids, db, "both", "x only", "e3"))
    assert out["both"].value == ["X", "Y"]
    assert out["x only"].value == ["X"]
    assert "e3" not in (out["e3"].examples or [])
    assert all(o.confidence is not None and 0.0 <= o.confidence <= 1.0 for o in out.values())


async def test_multi_choice_zero_shot_takes_the_nearest_and_the_close_ones(db: Database) -> None:
    vectors = {**AXES, "xy": [1.0, 0.98, 0.0]}
    ids = make_project(db, MULTI, ["xy", "x only"], {})
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(vectors))
    out = await label_all(labeler, inputs(ids, db, "xy", "x only"))
    assert (out["xy"].value, out["x only"].value) == (["X", "Y"], ["X"])


@pytest.mark.parametrize(
    ("task_type", "values", "expected"),
    [(TaskType.rating, {"a1": 2, "b1": 5}, (2, 5)), (TaskType.number, {"a1": 0.5, "b1": 12.0}, (0.5, 12.0))],
)
async def test_ratings_and_numbers_use_the_example_values_as_classes(
    db: Database, task_type: TaskType, values: dict[str, Any], expected: tuple[Any, Any]
) -> None:
    spec = LabelSpec.from_classes([], type=task_type, input_fields=["text"])
    ids = make_project(db, spec, ["a1", "b1", "q5", "q80"], values)
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE))
    out = await label_all(labeler, inputs(ids, db, "q5", "q80"))
    assert (out["q5"].value, out["q80"].value) == expected
    assert type(out["q5"].value) is type(expected[0])


async def test_pairwise_learns_which_side_wins_and_is_symmetric(db: Database) -> None:
    # Sides with a number (x component) win; the topic (y) does not matter.
    spec = LabelSpec.from_classes([], type=TaskType.pairwise, input_fields=["left", "right"])
    vectors = {f"num{i}": [1.0, 0.3 * i, 1.0] for i in range(4)} | {
        f"plain{i}": [0.0, 0.3 * i, 1.0] for i in range(4)
    }
    create_project(db, "p", spec=spec)
    ids = add_tasks(
        db,
        "p",
        {
            "ex1": {"left": "num1", "right": "plain0"},
            "ex2": {"left": "plain2", "right": "num3"},
            "t1": {"left": "num2", "right": "plain3"},
            "t2": {"left": "plain1", "right": "num0"},
        },
    )
    set_label(db, "p", "ex1", "left", parse=False)
    set_label(db, "p", "ex2", "right", parse=False)
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(vectors))
    out = await label_all(labeler, inputs(ids, db, "t1", "t2", "ex1"))
    assert (out["t1"].value, out["t2"].value) == ("left", "right")
    # Leave-one-out: ex1 is labeled by ex2 (mirrored), which says the same.
    assert out["ex1"].value == "left"
    assert out["ex1"].examples == ["ex2"]


async def test_types_without_label_names_need_examples(db: Database) -> None:
    spec = LabelSpec.from_classes([], type=TaskType.rating, max_rating=5, input_fields=["text"])
    ids = make_project(db, spec, ["q5"], {})
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE))
    out = await label_all(labeler, inputs(ids, db, "q5"))
    assert out["q5"].error_kind is ErrorKind.bad_request
    assert "needs labeled examples" in (out["q5"].error_message or "")


@pytest.mark.parametrize(
    "spec",
    [
        LabelSpec.from_classes([], type=TaskType.text, input_fields=["text"]),
        LabelSpec.from_classes(["PER", "ORG"], type=TaskType.spans, input_fields=["text"]),
    ],
    ids=["text", "spans"],
)
async def test_text_and_spans_are_refused_per_task(db: Database, spec: LabelSpec) -> None:
    assert not supports(spec) and not BaselineLabeler.supports(spec)
    ids = make_project(db, spec, ["q5", "q33"], {})
    embedder = FakeEmbedder(PLANE)
    labeler = BaselineLabeler(db, "p", embedder=embedder)
    out = await label_all(labeler, inputs(ids, db, "q5", "q33"))
    for outcome in out.values():
        assert outcome.error_kind is ErrorKind.bad_request
        assert f"cannot label {spec.type.value} tasks" in (outcome.error_message or "")
    assert embedder.calls == []


def test_supported_types() -> None:
    assert supports(AB) and supports(MULTI)
    assert supports(LabelSpec.from_classes([], type=TaskType.pairwise, input_fields=["l", "r"]))


# ---------------------------------------------------------------------- inputs, batching, caching


def test_task_text_is_the_value_or_field_lines() -> None:
    assert task_text(AB, {"text": "hello", "id": 3}) == "hello"
    two = LabelSpec.from_classes(["A", "B"], input_fields=["title", "body"])
    assert task_text(two, {"title": "Hi", "body": "there", "x": 1}) == "title: Hi\nbody: there"
    no_fields = LabelSpec.from_classes(["A", "B"])
    assert task_text(no_fields, {"n": 5}) == "5"


async def test_a_task_without_its_input_field_fails_alone(db: Database) -> None:
    create_project(db, "p", spec=AB)
    ids = add_tasks(
        db, "p", {"a1": {"text": "a1"}, "b1": {"text": "b1"}, "bad": {"body": "x"}, "q5": {"text": "q5"}}
    )
    set_label(db, "p", "a1", "A", parse=False)
    set_label(db, "p", "b1", "B", parse=False)
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE))
    out = await label_all(labeler, inputs(ids, db, "bad", "q5"))
    assert out["bad"].error_kind is ErrorKind.bad_request
    assert "'text'" in (out["bad"].error_message or "")
    assert out["q5"].value == "A"


async def test_embeds_in_batches_and_caches_example_vectors(db: Database) -> None:
    labeler, embedder, ids = plane_labeler(db, strategy="centroid", batch_size=2)
    tasks = inputs(ids, db, "q5", "q33", "q37.5", "q80", "a1")
    await label_all(labeler, tasks)
    await label_all(labeler, tasks)
    assert all(len(call) <= 2 for call in embedder.calls)
    embedded = embedder.embedded()
    # Every example text once (a1 is labeled twice from the cache); task texts each time they are labeled.
    assert all(embedded.count(name) == 1 for name in PLANE_LABELS)
    assert embedded.count("q33") == 2


# ---------------------------------------------------------------------- identity and examples


async def test_identity_follows_the_example_set(db: Database) -> None:
    labeler, _, ids = plane_labeler(db, description_weight=1.0)  # the default
    same = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE))
    assert same.info == labeler.info
    identity = labeler.info.identity
    assert (identity["strategy"], identity["embedder"], identity["example_count"]) == ("auto", "fake", 5)

    set_label(db, "p", "q80", "B", parse=False)
    changed = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE))
    assert changed.info.identity["examples"] != identity["examples"]
    scope = JobScope(kind=ScopeKind.ground_truth)
    project_id = 1
    assert job_key(project_id, changed.info, RunKind.eval, scope) != job_key(
        project_id, labeler.info, RunKind.eval, scope
    )

    explicit = {ids[name]: value for name, value in PLANE_LABELS.items()}
    assert BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE), examples=explicit).info == labeler.info
    knn = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE), strategy="knn", k=3)
    assert knn.info.model == "baseline:fake-3nn"
    assert knn.info.identity["k"] == 3


async def test_explicit_examples_are_checked(db: Database) -> None:
    _, _, ids = plane_labeler(db)
    with pytest.raises(NotFoundError, match="99999"):
        BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE), examples={99999: "A"})
    with pytest.raises(LabelValueError, match="example task 'a1'"):
        BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE), examples={ids["a1"]: "Nope"})
    only_b = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE), examples={ids["b1"]: "b"})
    assert only_b.info.identity["example_count"] == 1
    out = await label_all(only_b, inputs(ids, db, "q5"))
    assert out["q5"].value == "B"  # A has no example and its description is orthogonal


def test_classifier_canonicalises_example_values_and_skips_examples_without_text() -> None:
    examples = [
        LabeledExample("a1", {"text": "a1"}, "a"),  # canonical: "A"
        LabeledExample("b1", {"text": "b1"}, "B"),
        LabeledExample("empty", {"other": "x"}, "B"),
    ]
    classifier = BaselineClassifier(AB, examples, embedder=FakeEmbedder(PLANE), description_weight=0.0)
    assert [(e.key, e.value) for e in classifier.examples] == [("a1", "A"), ("b1", "B")]
    assert [a.value for a in classifier.predict([{"text": "q5"}, {"text": "q80"}])] == ["A", "B"]
    with pytest.raises(LabelValueError, match="example 'x'"):
        BaselineClassifier(AB, [LabeledExample("x", {"text": "a1"}, "Nope")], embedder=FakeEmbedder(PLANE))


async def test_ground_truth_that_no_longer_fits_the_schema_is_skipped(db: Database) -> None:
    ids = make_project(db, ABC, [*PLANE_LABELS, "c1", "q5"], {**PLANE_LABELS, "c1": "C"})
    set_label_spec(db, "p", AB, force=True)
    labeler = BaselineLabeler(db, "p", embedder=FakeEmbedder(PLANE))
    assert labeler.info.identity["example_count"] == len(PLANE_LABELS)
    assert (await label_all(labeler, inputs(ids, db, "q5")))["q5"].value == "A"


# ---------------------------------------------------------------------- with the engine and the real model


async def test_evaluates_ground_truth_through_the_engine(db: Database) -> None:
    labeler, _, _ = plane_labeler(db, strategy="centroid")
    report = await run_job(
        db, "p", labeler, scope=JobScope(kind=ScopeKind.ground_truth), kind=RunKind.eval, window_size=2
    )
    assert (report.total, report.labeled, report.failed) == (5, 5, 0)
    again = await run_job(db, "p", labeler, scope=JobScope(kind=ScopeKind.ground_truth), kind=RunKind.eval)
    assert again.run_id == report.run_id and again.labeled == 0


def test_minilm_separates_obvious_topics() -> None:
    spec = LabelSpec.from_classes(
        [("Sports", "sports news"), ("Finance", "money and markets"), ("Cooking", "recipes and food")],
        input_fields=["text"],
    )
    examples = [
        LabeledExample("s1", {"text": "The team won the championship final last night."}, "Sports"),
        LabeledExample("s2", {"text": "The striker scored twice in the second half."}, "Sports"),
        LabeledExample("f1", {"text": "Stocks fell as interest rates rose again."}, "Finance"),
        LabeledExample("f2", {"text": "The bank reported record quarterly profits."}, "Finance"),
        LabeledExample("c1", {"text": "Simmer the onions in butter until golden."}, "Cooking"),
        LabeledExample("c2", {"text": "Bake the bread at 220 degrees for thirty minutes."}, "Cooking"),
    ]
    tasks = [
        {"text": "Our team won the basketball game in overtime."},
        {"text": "Stock markets fell as investors sold shares."},
        {"text": "Whisk the eggs with sugar and fold in the flour."},
    ]
    embedder = get_embedder("minilm")
    for strategy in BaselineStrategy:
        classifier = BaselineClassifier(spec, examples, embedder=embedder, strategy=strategy)
        answers = classifier.predict(tasks)
        assert [a.value for a in answers] == ["Sports", "Finance", "Cooking"], strategy
        assert all(a.confidence is not None and 1 / 3 < a.confidence <= 1.0 for a in answers), strategy


# ---------------------------------------------------------------------- the benchmark script


def write_tiny_datasets(root: Path) -> None:
    """Two or three items per class in each dataset's own file format."""
    banking = root / "banking77"
    banking.mkdir(parents=True)
    (banking / "categories.json").write_text('["card_arrival", "exchange_rate"]', encoding="utf-8")
    rows = (
        "text,category\nWhere is my new card?,card_arrival\nWhat rate do you use for euros?,exchange_rate\n"
    )
    (banking / "train.csv").write_text(rows * 2, encoding="utf-8")
    (banking / "test.csv").write_text(rows, encoding="utf-8")
    ag = root / "ag_news"
    ag.mkdir()
    lines = ["Class Index,Title,Description"] + [
        f'{c},"Title {c}-{i}","Body {c}-{i}"' for c in range(1, 5) for i in range(4)
    ]
    (ag / "test.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    trec = root / "trec"
    trec.mkdir()
    questions = [
        "NUM:dist How far is it to Aspen ?",
        "HUM:ind Who wrote Hamlet ?",
        "LOC:city Where is Paris ?",
    ]
    (trec / "train.txt").write_text("\n".join(questions * 2), encoding="utf-8")
    (trec / "test.txt").write_text("\n".join(questions), encoding="utf-8")
    sst2 = root / "sst2"
    sst2.mkdir()
    reviews = "1 a stirring , funny film\n0 a dull , lifeless mess\n"
    (sst2 / "stsa.binary.train").write_text(reviews * 2, encoding="utf-8")
    (sst2 / "stsa.binary.test").write_text(reviews, encoding="utf-8")


def test_benchmark_reads_every_dataset_format_and_reports_each_method(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tiny_datasets(tmp_path)
    assert bench_main(["--datasets-dir", str(tmp_path), "--per-class", "1", "2", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    methods = {(r["dataset"], r["k"], r["method"]) for r in results}
    for dataset in ("banking77", "ag_news", "trec", "sst2"):
        assert (dataset, 0, "minilm-zero-shot") in methods
        for k in (1, 2):
            for method in ("hashing-centroid", "minilm-centroid", "minilm-1nn", "minilm-auto"):
                assert (dataset, k, method) in methods
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in results)
    assert bench_main(["--datasets-dir", str(tmp_path), "--datasets", "trec", "--per-class", "1"]) == 0
    assert "mean" in capsys.readouterr().out


def test_benchmark_skips_without_the_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--datasets-dir", str(tmp_path / "absent")]) == 0
    assert "skipped" in capsys.readouterr().out
