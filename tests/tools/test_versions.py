"""Prompt versions: validating, deriving, comparing, creating and previewing them."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tools.errors import ConfigError, LabelSpecError, NotFoundError
from tools.importers import import_file
from tools.labelspec import LabelSpec, TaskType
from tools.projects import create_project
from tools.storage import Database
from tools.versions import (
    FewShotKind,
    FewShotPolicy,
    PromptConfig,
    VersionInfo,
    adopt_version,
    create_version,
    current_version_number,
    derive_config,
    derive_few_shot,
    diff_versions,
    few_shot_summary,
    get_version,
    list_versions,
    normalize_config,
    preview_messages,
    validate_and_create,
    validate_config,
)

TOPICS = LabelSpec.from_classes(["Sports", "World", "Business"])
FIELDS = ["article", "title"]


def config(
    instructions: str = "Pick the topic of {article}: Sports, World or Business.", **kw: Any
) -> PromptConfig:
    return PromptConfig(instructions=instructions, **kw)


def version(number: int, **settings: Any) -> VersionInfo:
    return VersionInfo(id=number, number=number, created_at=datetime(2026, 1, 1, tzinfo=UTC), **settings)


# ---------------------------------------------------------------------- validate_config


def test_a_sound_config_passes_without_warnings() -> None:
    assert validate_config(TOPICS, config(), fields=FIELDS) == []


@pytest.mark.parametrize("instructions", ["", "  \n\t "])
def test_empty_instructions_are_refused(instructions: str) -> None:
    with pytest.raises(ConfigError, match="instructions are empty") as caught:
        validate_config(TOPICS, config(instructions), fields=FIELDS)
    assert caught.value.hint


def test_a_placeholder_naming_no_field_is_refused_with_the_fields_listed() -> None:
    with pytest.raises(LabelSpecError) as caught:
        validate_config(TOPICS, config("Topic of {body} ({title})?"), fields=FIELDS)
    assert "{body}" in caught.value.message and "{title}" not in caught.value.message
    assert "'article', 'title'" in caught.value.message


def test_placeholders_are_read_the_way_prompting_renders_them() -> None:
    # {{...}} is a literal brace and a JSON example is not a placeholder: neither needs a field.
    text = 'Read {article}. Answer like {"label": "Sports"}; write {{title}} literally.'
    assert validate_config(TOPICS, config(text), fields=FIELDS) == []


def test_placeholders_unchecked_without_known_fields_give_a_warning() -> None:
    warnings = validate_config(TOPICS, config("Topic of {body}: Sports, World or Business?"))
    assert len(warnings) == 1 and "{body}" in warnings[0] and "not checked" in warnings[0]


@pytest.mark.parametrize(
    ("instructions", "where"),
    [
        ("Topic of {article Sports?", "'{' at line 1, column 10"),
        ("Sports?\nno } here", "'}' at line 2, column 4"),
    ],
)
def test_an_unmatched_brace_is_a_warning_naming_where_it_is(instructions: str, where: str) -> None:
    warnings = validate_config(TOPICS, config(instructions), fields=FIELDS)
    assert len(warnings) == 1 and where in warnings[0]


def test_describing_a_label_the_schema_lacks_is_refused_with_a_suggestion() -> None:
    with pytest.raises(LabelSpecError, match="did you mean 'Sports'"):
        validate_config(TOPICS, config(label_descriptions={"Sprots": "games"}), fields=FIELDS)


def test_label_names_match_ignoring_case() -> None:
    assert validate_config(TOPICS, config(label_descriptions={"sports": "games"}), fields=FIELDS) == []


def test_a_schema_without_labels_takes_no_descriptions() -> None:
    rating = LabelSpec(type=TaskType.rating, max_rating=5)
    with pytest.raises(LabelSpecError, match="rating schema has no labels"):
        validate_config(rating, config(label_descriptions={"5": "great"}), fields=FIELDS)


def test_without_a_schema_descriptions_are_not_checked_but_said_so() -> None:
    warnings = validate_config(None, config(label_descriptions={"Anything": "x"}), fields=FIELDS)
    assert warnings == ["the project has no label schema yet: the label descriptions were not checked"]


def test_fixed_few_shot_needs_examples() -> None:
    with pytest.raises(ConfigError, match="'fixed' lists no examples"):
        validate_config(TOPICS, config(few_shot=FewShotPolicy(kind=FewShotKind.fixed)), fields=FIELDS)
    fixed = FewShotPolicy(kind=FewShotKind.fixed, example_ids=["t1", "t2"])
    assert validate_config(TOPICS, config(few_shot=fixed), fields=FIELDS) == []


@pytest.mark.parametrize("kind", [FewShotKind.nearest, FewShotKind.mmr, FewShotKind.label_diverse])
def test_selected_few_shot_needs_k(kind: FewShotKind) -> None:
    with pytest.raises(ConfigError, match="k=0"):
        validate_config(TOPICS, config(few_shot=FewShotPolicy(kind=kind)), fields=FIELDS)
    assert validate_config(TOPICS, config(few_shot=FewShotPolicy(kind=kind, k=4)), fields=FIELDS) == []


def test_few_shot_settings_the_kind_ignores_give_a_warning() -> None:
    policy = FewShotPolicy(kind=FewShotKind.nearest, k=3, example_ids=["t1"])
    assert validate_config(TOPICS, config(few_shot=policy), fields=FIELDS) == [
        "the few-shot policy 'nearest' ignores its setting(s): example_ids"
    ]


def test_instructions_that_name_no_label_and_no_descriptions_give_a_warning() -> None:
    bare = config("Classify {article}.")
    assert "bare label names" in validate_config(TOPICS, bare, fields=FIELDS)[0]
    described = bare.model_copy(update={"label_descriptions": {"World": "international news"}})
    assert validate_config(TOPICS, described, fields=FIELDS) == []
    spec_described = LabelSpec.from_classes([("Sports", "games"), ("World", ""), ("Business", "")])
    assert validate_config(spec_described, bare, fields=FIELDS) == []


def test_normalize_uses_the_schemas_names_and_drops_empty_descriptions() -> None:
    raw = config(
        "Topic?  \n",
        label_descriptions={"Sports": "old", "SPORTS": " games ", "world": "", "Ghost": "kept for the check"},
    )
    normalized = normalize_config(TOPICS, raw)
    assert normalized.instructions == "Topic?"
    assert normalized.label_descriptions == {"Sports": "games", "Ghost": "kept for the check"}


# ---------------------------------------------------------------------- deriving


def test_derive_config_changes_only_what_is_given_and_leaves_the_parent_alone() -> None:
    parent = version(
        3,
        instructions="old",
        label_descriptions={"Sports": "games"},
        few_shot=FewShotPolicy(kind=FewShotKind.nearest, k=8),
        model="gpt-4o-mini",
        params={"temperature": 0.2},
        reasoning=True,
        note="the parent's note",
    )
    child = derive_config(parent, instructions="new", params={"temperature": 0.0, "seed": 7})
    assert type(child) is PromptConfig
    assert child.instructions == "new" and child.params == {"temperature": 0.0, "seed": 7}
    assert child.label_descriptions == {"Sports": "games"} and child.few_shot.k == 8
    assert child.model == "gpt-4o-mini" and child.reasoning is True
    assert parent.instructions == "old" and parent.params == {"temperature": 0.2}
    child.label_descriptions["World"] = "news"
    assert parent.label_descriptions == {"Sports": "games"}
    assert derive_config(parent).model_dump() == parent.model_dump(include=set(PromptConfig.model_fields))


def test_derive_config_rejects_unknown_settings() -> None:
    with pytest.raises(TypeError, match="note"):
        derive_config(PromptConfig(), note="not a setting")


def test_derive_few_shot_drops_what_a_new_kind_does_not_read() -> None:
    fixed = FewShotPolicy(kind=FewShotKind.fixed, example_ids=["t1"], max_tokens=300)
    nearest = derive_few_shot(fixed, kind=FewShotKind.nearest, k=5)
    assert nearest == FewShotPolicy(kind=FewShotKind.nearest, k=5, max_tokens=300)
    assert derive_few_shot(nearest, kind=FewShotKind.mmr).k == 5
    assert derive_few_shot(nearest, kind=FewShotKind.none) == FewShotPolicy()
    assert derive_few_shot(nearest, k=2) == FewShotPolicy(kind=FewShotKind.nearest, k=2, max_tokens=300)
    assert few_shot_summary(nearest) == "nearest k=5, ≤300 tokens"
    assert few_shot_summary(fixed) == "fixed: 1 example, ≤300 tokens"


# ---------------------------------------------------------------------- diff_versions


def test_diff_of_instructions_is_a_unified_diff() -> None:
    a = version(1, instructions="Pick the topic.\nBe brief.\nThanks.")
    b = version(2, instructions="Pick the topic.\nBe careful.\nThanks.")
    diff = diff_versions(a, b)
    assert diff.instructions_diff == [
        "--- v1",
        "+++ v2",
        "@@ -1,3 +1,3 @@",
        " Pick the topic.",
        "-Be brief.",
        "+Be careful.",
        " Thanks.",
    ]
    assert diff.changes == [] and diff.identical is False and (diff.a, diff.b) == (1, 2)


def test_diff_lists_each_changed_label_description() -> None:
    a = version(1, label_descriptions={"Sports": "games", "World": "news"})
    b = version(2, label_descriptions={"Sports": "games and athletes", "Business": "money"})
    changes = [(c.field, c.before, c.after) for c in diff_versions(a, b).changes]
    assert changes == [
        ("label_descriptions.Sports", "games", "games and athletes"),
        ("label_descriptions.World", "news", None),
        ("label_descriptions.Business", None, "money"),
    ]


def test_diff_lists_few_shot_model_params_and_reasoning_changes() -> None:
    a = version(
        4, few_shot=FewShotPolicy(kind=FewShotKind.fixed, example_ids=["t1"]), params={"temperature": 0.2}
    )
    b = version(
        7,
        few_shot=FewShotPolicy(kind=FewShotKind.nearest, k=8),
        model="gpt-4o",
        params={"temperature": 0.0, "seed": 7},
        reasoning=True,
    )
    changes = [(c.field, c.before, c.after) for c in diff_versions(a, b).changes]
    assert changes == [
        ("few_shot.kind", "fixed", "nearest"),
        ("few_shot.k", 0, 8),
        ("few_shot.example_ids", ["t1"], []),
        ("model", "", "gpt-4o"),
        ("params.temperature", 0.2, 0.0),
        ("params.seed", None, 7),
        ("reasoning", False, True),
    ]


def test_diff_tells_true_from_1() -> None:
    changes = diff_versions(version(1, params={"logprobs": True}), version(2, params={"logprobs": 1})).changes
    assert [(c.field, c.before, c.after) for c in changes] == [("params.logprobs", True, 1)]


def test_versions_differing_only_in_their_note_are_identical() -> None:
    settings: dict[str, Any] = {
        "instructions": "x",
        "label_descriptions": {"Sports": "games"},
        "params": {"seed": 1},
    }
    diff = diff_versions(version(2, note="first", **settings), version(3, note="again", **settings))
    assert diff.identical is True and diff.instructions_diff == [] and diff.changes == []


# ---------------------------------------------------------------------- with a database


@pytest.fixture
def news(db: Database, tmp_path: Path) -> str:
    path = tmp_path / "news.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "article"])
        writer.writerow(["n1", "Cup final", "The home side won 2-1."])
        writer.writerow(["n2", "Rates", "The central bank held rates."])
    create_project(db, "news", spec=TOPICS)
    import_file(db, "news", path)
    return "news"


def test_validate_and_create_checks_fields_and_stores_nothing_on_error(db: Database, news: str) -> None:
    with pytest.raises(LabelSpecError, match=r"\{body\}.*'title', 'article'"):
        validate_and_create(db, news, config("Topic of {body}?"))
    assert list_versions(db, news) == []
    first = validate_and_create(db, news, config("Topic of {title}: Sports, World or Business?"))
    assert first.version.number == 1 and first.warnings == []


def test_validate_and_create_stores_canonical_names_and_warns_about_a_copy(db: Database, news: str) -> None:
    parent = create_version(db, news, config(), note="v1")
    created = validate_and_create(
        db, news, derive_config(parent, label_descriptions={"sports": "games"}), parent=1, note="v2"
    )
    assert created.version.parent_number == 1 and created.version.label_descriptions == {"Sports": "games"}
    assert created.warnings == []
    copy = validate_and_create(db, news, derive_config(created.version), parent=2)
    assert copy.version.number == 3
    assert copy.warnings == ["the settings are the same as v2's (only the note tells them apart)"]
    with pytest.raises(NotFoundError, match="no prompt version v9"):
        validate_and_create(db, news, config(), parent=9)
    assert [v.number for v in list_versions(db, news)] == [1, 2, 3]


def test_preview_renders_the_first_task(db: Database, news: str) -> None:
    info = create_version(
        db, news, config("Topic of {title}?", label_descriptions={"World": "international"})
    )
    preview = preview_messages(db, news, info)
    assert preview.task_id == "n1" and preview.note is None and preview.messages is not None
    assert [m.role for m in preview.messages] == ["system", "user"]
    assert "Topic of the `title` field?" in preview.messages[0].content
    assert "- World: international" in preview.messages[0].content
    assert (
        "Cup final" in preview.messages[1].content and "The home side won 2-1." in preview.messages[1].content
    )


def test_preview_explains_why_there_is_none(db: Database) -> None:
    create_project(db, "empty")
    assert preview_messages(db, "empty", config()).note == "no preview: the project has no label schema yet"
    create_project(db, "schema-only", spec=TOPICS)
    assert preview_messages(db, "schema-only", config()).note == "no preview: the project has no tasks yet"


def test_proposals_are_never_adopted_without_the_user(db: Database) -> None:
    create_project(db, "adopt", spec=LabelSpec.from_classes(["A", "B"]))
    first = create_version(db, "adopt", PromptConfig(instructions="one"))
    assert current_version_number(db, "adopt") == first.number == 1 and first.current
    mine = create_version(db, "adopt", PromptConfig(instructions="two"), parent=1, adopt=True)
    proposal = create_version(db, "adopt", PromptConfig(instructions="three"), parent=2, note="optimizer")
    assert proposal.number == 3 and mine.number == 2 and mine.current and not proposal.current
    # Commands without a version number keep using v2 until the user adopts v3.
    assert get_version(db, "adopt").number == 2 and get_version(db, "adopt").current
    assert [v.current for v in list_versions(db, "adopt")] == [False, True, False]
    adopted = adopt_version(db, "adopt", 3)
    assert adopted.current and get_version(db, "adopt").number == 3
    with pytest.raises(NotFoundError, match="no prompt version v9"):
        adopt_version(db, "adopt", 9)
