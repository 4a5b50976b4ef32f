"""Tests of tools/labelspec.py: schemas, values, Label Studio configs and results, span placement."""

from __future__ import annotations

import time
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tools.errors import LabelSpecError, LabelValueError
from tools.labelspec import (
    LabelClass,
    LabelSpec,
    Span,
    TaskType,
    check_class_names,
    parse_class_list,
    place_spans,
)

NEWS = ["Sports", "World", "Business"]


def news(**kwargs: Any) -> LabelSpec:
    return LabelSpec.from_classes(
        [("Sports", ""), ("World", "international politics"), ("Business", "")], **kwargs
    )


def multi() -> LabelSpec:
    return LabelSpec.from_classes(NEWS, type=TaskType.multi_choice, input_fields=["text"])


def rating(top: int = 5) -> LabelSpec:
    return LabelSpec.from_classes([], type=TaskType.rating, max_rating=top, input_fields=["text"])


def number(**kwargs: Any) -> LabelSpec:
    return LabelSpec.from_classes([], type=TaskType.number, input_fields=["text"], **kwargs)


def text_spec() -> LabelSpec:
    return LabelSpec.from_classes([], type=TaskType.text, input_fields=["question"])


def pairwise() -> LabelSpec:
    return LabelSpec.from_classes([], type=TaskType.pairwise, input_fields=["summary_1", "summary_2"])


def spans() -> LabelSpec:
    return LabelSpec.from_classes(["PER", "LOC"], type=TaskType.spans, input_fields=["text"])


def all_specs() -> dict[str, LabelSpec]:
    return {
        "single_choice": news(input_fields=["text"]),
        "multi_choice": multi(),
        "rating": rating(),
        "number": number(min_value=0, max_value=10.5),
        "text": text_spec(),
        "pairwise": pairwise(),
        "spans": spans(),
    }


def assert_strict(schema: dict[str, Any]) -> None:
    """Every object in the schema closes additionalProperties and requires all its properties."""
    if schema.get("type") == "object":
        assert schema["additionalProperties"] is False
        assert schema["required"] == list(schema["properties"])
    for value in schema.values():
        if isinstance(value, dict):
            assert_strict(value)


# ---------------------------------------------------------------------- JSON schema


def test_single_choice_schema_is_exact() -> None:
    assert news().json_schema() == {
        "type": "object",
        "properties": {
            "label": {
                "type": "string",
                "enum": ["Sports", "World", "Business"],
                "description": "The one label that fits best. Label definitions: World: international politics.",
            }
        },
        "required": ["label"],
        "additionalProperties": False,
    }


def test_reasoning_comes_first_in_properties_and_required() -> None:
    schema = news().json_schema(reasoning=True)
    assert list(schema["properties"]) == ["reasoning", "label"]
    assert schema["required"] == ["reasoning", "label"]
    assert schema["properties"]["reasoning"]["type"] == "string"


@pytest.mark.parametrize(
    ("name", "label_schema"),
    [
        ("multi_choice", {"type": "array", "items": {"type": "string", "enum": NEWS}}),
        ("rating", {"type": "integer", "enum": [1, 2, 3, 4, 5]}),
        ("number", {"type": "number"}),
        ("text", {"type": "string"}),
        ("pairwise", {"type": "string", "enum": ["left", "right"]}),
        (
            "spans",
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "text": {"type": "string"},
                        "label": {"type": "string", "enum": ["PER", "LOC"]},
                    },
                    "required": ["text", "label"],
                    "additionalProperties": False,
                },
            },
        ),
    ],
)
def test_label_schema_per_type(name: str, label_schema: dict[str, Any]) -> None:
    def without_descriptions(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: without_descriptions(v) for k, v in node.items() if k != "description"}
        return node

    schema = all_specs()[name].json_schema()
    assert without_descriptions(schema["properties"]["label"]) == label_schema


@pytest.mark.parametrize("name", list(all_specs()))
@pytest.mark.parametrize("reasoning", [False, True])
def test_every_schema_is_strict(name: str, reasoning: bool) -> None:
    spec = all_specs()[name]
    schema = spec.json_schema(reasoning=reasoning)
    assert_strict(schema)
    assert spec.schema_name() == f"label_{name}"


def test_schema_descriptions_explain_pairwise_sides_and_number_range() -> None:
    assert pairwise().json_schema()["properties"]["label"]["description"] == (
        "Which item is better: 'left' means summary_1, 'right' means summary_2."
    )
    assert number(min_value=0, max_value=10.5).json_schema()["properties"]["label"]["description"] == (
        "A number from 0 to 10.5."
    )


# ---------------------------------------------------------------------- spec validation


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        (["Sports", "Sports"], "the class 'Sports' is listed twice"),
        (["Sports", "sports"], "the classes 'Sports' and 'sports' differ only by case or spaces"),
        (["Sports", " Sports "], "the class 'Sports' is listed twice"),
        (["Sports", "  "], "class 2 has an empty name"),
        (["Sports"], "a single_choice schema needs at least 2 classes, got 1"),
    ],
)
def test_bad_class_lists_are_refused(classes: list[str], message: str) -> None:
    with pytest.raises(LabelSpecError) as info:
        LabelSpec.from_classes(classes)
    assert message in info.value.message


def test_spans_need_one_label_and_rating_takes_none() -> None:
    with pytest.raises(LabelSpecError, match="needs at least 1 span labels, got 0"):
        LabelSpec.from_classes([], type=TaskType.spans)
    with pytest.raises(LabelSpecError, match="a rating schema takes no classes, got A, B"):
        LabelSpec.from_classes(["A", "B"], type=TaskType.rating)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "rating", "max_rating": 1}, "max_rating from 2 to 100, got 1"),
        ({"type": "number", "min_value": 5, "max_value": 1}, "min_value 5 is greater than max_value 1"),
        ({"type": "text", "max_rating": 5}, "max_rating only applies to rating"),
        ({"type": "pairwise", "input_fields": ["only_one"]}, "a pairwise schema compares two items"),
        ({"type": "text", "input_fields": ["review"], "to_name": "text"}, "not one of the input fields"),
        ({"type": "bogus"}, "unknown task type 'bogus'"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(LabelSpecError, match=message):
        LabelSpec.from_classes([], **kwargs)


def test_defaults_derive_to_name_and_span_field() -> None:
    assert rating().max_rating == 5
    assert LabelSpec.from_classes([], type=TaskType.rating).max_rating == 5
    assert news(input_fields=["review", "title"]).to_name == "review"
    assert pairwise().to_name == "summary_1,summary_2"
    assert pairwise().pair_fields() == ("summary_1", "summary_2")
    spec = LabelSpec.from_classes(
        ["PER"], type=TaskType.spans, input_fields=["title", "body"], span_field="body"
    )
    assert (spec.to_name, spec.span_field) == ("body", "body")
    with pytest.raises(LabelSpecError, match="span_field 'title' differs from the field of to_name"):
        LabelSpec.from_classes(
            ["PER"], type="spans", input_fields=["title", "body"], to_name="body", span_field="title"
        )


def test_spec_json_round_trip() -> None:
    for spec in all_specs().values():
        assert LabelSpec.model_validate(spec.to_json()) == spec
        assert LabelSpec.model_validate_json(spec.model_dump_json()) == spec


# ---------------------------------------------------------------------- parse_class_list


def test_parse_class_list_one_line() -> None:
    assert parse_class_list("Sports, World: international politics, Business") == [
        LabelClass(name="Sports"),
        LabelClass(name="World", description="international politics"),
        LabelClass(name="Business"),
    ]


def test_parse_class_list_semicolons_keep_commas_in_descriptions() -> None:
    assert parse_class_list("World: politics, diplomacy; Sci-Fi - space, robots") == [
        LabelClass(name="World", description="politics, diplomacy"),
        LabelClass(name="Sci-Fi", description="space, robots"),
    ]


def test_parse_class_list_lines_bullets_and_comments() -> None:
    text = "# news topics\n- Sports: games, matches\n\n* World - international politics\n3. Business\n"
    assert parse_class_list(text) == [
        LabelClass(name="Sports", description="games, matches"),
        LabelClass(name="World", description="international politics"),
        LabelClass(name="Business"),
    ]


@pytest.mark.parametrize(
    ("text", "message"), [("  \n# nothing\n", "no classes found"), ("A, a", "differ only by case")]
)
def test_parse_class_list_errors(text: str, message: str) -> None:
    with pytest.raises(LabelSpecError, match=message):
        parse_class_list(text)


def test_check_class_names_accepts_distinct_names() -> None:
    check_class_names(["A", "B", "A B"])


# ---------------------------------------------------------------------- validate_value


@pytest.mark.parametrize(
    ("name", "raw", "canonical"),
    [
        ("single_choice", " sports ", "Sports"),
        ("single_choice", ["WORLD"], "World"),
        ("multi_choice", "business", ["Business"]),
        ("multi_choice", ["Business", "sports", "Sports"], ["Sports", "Business"]),
        ("multi_choice", [], []),
        ("rating", "4", 4),
        ("rating", 3.0, 3),
        ("number", "3.5", 3.5),
        ("number", 2, 2.0),
        ("text", "  an answer \n", "an answer"),
        ("pairwise", "Right", "right"),
        ("pairwise", "summary_1", "left"),
    ],
)
def test_validate_value_canonicalises(name: str, raw: object, canonical: object) -> None:
    value = all_specs()[name].validate_value(raw)
    assert value == canonical
    assert type(value) is type(canonical)


def test_unknown_label_suggests_the_closest_one() -> None:
    with pytest.raises(LabelValueError) as info:
        news().validate_value("Sprots")
    assert (
        info.value.message
        == "'Sprots' is not one of the labels: Sports, World, Business — did you mean 'Sports'?"
    )
    with pytest.raises(LabelValueError) as info:
        news().validate_value("Weather")
    assert info.value.message == "'Weather' is not one of the labels: Sports, World, Business"


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("single_choice", None, "no label value was given"),
        ("single_choice", 2, "expected one label name, got int 2"),
        ("multi_choice", ["Sports", "Tech"], "'Tech' is not one of the labels"),
        ("multi_choice", {"a": 1}, "expected a list of label names"),
        ("rating", 6, "a rating must be a whole number from 1 to 5, got 6"),
        ("rating", 2.5, "a rating must be a whole number from 1 to 5, got 2.5"),
        ("rating", True, "a rating must be a whole number"),
        ("number", 11, "11 is outside the allowed range from 0 to 10.5"),
        ("number", "nan", "expected a number, got 'nan'"),
        ("number", "three", "expected a number, got 'three'"),
        ("text", "   ", "expected a non-empty text"),
        ("pairwise", "middle", "expected 'left' or 'right', got 'middle'"),
        ("spans", "Alice", "expected a list of spans, got str"),
    ],
)
def test_validate_value_failures(name: str, raw: object, message: str) -> None:
    with pytest.raises(LabelValueError, match=message):
        all_specs()[name].validate_value(raw)


SOURCE = "Alice met Bob in Paris."


def test_spans_validation_fills_text_from_source_and_sorts() -> None:
    value = spans().validate_value(
        [{"start": 17, "end": 22, "label": "loc"}, {"start": 0, "end": 5, "labels": ["PER"]}],
        source_text=SOURCE,
    )
    assert value == [
        {"start": 0, "end": 5, "text": "Alice", "label": "PER"},
        {"start": 17, "end": 22, "text": "Paris", "label": "LOC"},
    ]


@pytest.mark.parametrize(
    ("item", "source", "message"),
    [
        ({"start": 5, "end": 5, "label": "PER"}, SOURCE, "needs 0 <= start < end, got start=5, end=5"),
        ({"start": "a", "end": 5, "label": "PER"}, SOURCE, "whole-number start and end"),
        ({"start": 0, "end": 5, "label": "ORG"}, SOURCE, "'ORG' is not one of the labels: PER, LOC"),
        ({"start": 0, "end": 5}, SOURCE, r"span 1 \(0-5\) needs a label"),
        (
            {"start": 0, "end": 5, "text": "Alicia", "label": "PER"},
            SOURCE,
            "says 'Alicia' but the text there is 'Alice'",
        ),
        ({"start": 0, "end": 99, "label": "PER"}, SOURCE, "past the end of the text"),
        ({"start": 0, "end": 5, "label": "PER"}, None, "has no text and no source text"),
        (
            {"start": 0, "end": 5, "text": "Al", "label": "PER"},
            None,
            "is 5 characters long but its text 'Al' is not",
        ),
    ],
)
def test_spans_validation_failures(item: dict[str, Any], source: str | None, message: str) -> None:
    with pytest.raises(LabelValueError, match=message):
        spans().validate_value([item], source_text=source)


# ---------------------------------------------------------------------- parse_text, display, choices


@pytest.mark.parametrize(
    ("name", "typed", "value"),
    [
        ("single_choice", "Sports", "Sports"),
        ("single_choice", "2", "World"),
        ("single_choice", '"business"', "Business"),
        ("multi_choice", "Sports, World", ["Sports", "World"]),
        ("multi_choice", "3;1", ["Sports", "Business"]),
        ("multi_choice", "world | 3", ["World", "Business"]),
        ("multi_choice", '["World"]', ["World"]),
        ("rating", "4", 4),
        ("rating", "4 / 5", 4),
        ("number", "3.5", 3.5),
        ("text", "free text, with commas", "free text, with commas"),
        ("pairwise", "left", "left"),
        ("pairwise", "2", "right"),
        ("pairwise", "summary_2", "right"),
        ("pairwise", "left (summary_1)", "left"),
    ],
)
def test_parse_text(name: str, typed: str, value: object) -> None:
    assert all_specs()[name].parse_text(typed) == value


def test_parse_text_prefers_a_class_named_like_a_number() -> None:
    spec = LabelSpec.from_classes(["2", "1"])
    assert spec.parse_text("1") == "1"


def test_parse_text_failures() -> None:
    with pytest.raises(LabelValueError, match="'4' is not one of the labels"):
        news().parse_text("4")
    with pytest.raises(LabelValueError, match="the label is empty"):
        news().parse_text("   ")
    with pytest.raises(LabelValueError, match="spans must be given as JSON"):
        spans().parse_text("Alice [PER]")


def test_parse_text_spans_json_with_and_without_offsets() -> None:
    assert spans().parse_text('[{"start": 10, "end": 13, "label": "PER"}]', source_text=SOURCE) == [
        {"start": 10, "end": 13, "text": "Bob", "label": "PER"}
    ]
    assert spans().parse_text('[{"text": "paris", "label": "LOC"}]', source_text=SOURCE) == [
        {"start": 17, "end": 22, "text": "Paris", "label": "LOC"}
    ]


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("single_choice", "Sports", "Sports"),
        ("multi_choice", ["Sports", "World"], "Sports, World"),
        ("multi_choice", [], "(none)"),
        ("rating", 4, "4 / 5"),
        ("number", 3.0, "3"),
        ("number", 3.25, "3.25"),
        ("text", "yes", "yes"),
        ("pairwise", "left", "left (summary_1)"),
        (
            "spans",
            [
                {"start": 0, "end": 5, "text": "Alice", "label": "PER"},
                {"start": 17, "end": 22, "text": "Paris", "label": "LOC"},
            ],
            "Alice [PER] 0-5; Paris [LOC] 17-22",
        ),
        ("single_choice", None, "(no label)"),
    ],
)
def test_display(name: str, value: object, shown: str) -> None:
    assert all_specs()[name].display(value) == shown


@pytest.mark.parametrize("name", ["single_choice", "multi_choice", "rating", "number", "pairwise"])
def test_display_parses_back(name: str) -> None:
    spec = all_specs()[name]
    value = {"single_choice": "World", "multi_choice": ["World", "Business"], "rating": 2, "number": 7.5}.get(
        name, "right"
    )
    assert spec.parse_text(spec.display(value)) == value


def test_choices() -> None:
    specs = all_specs()
    assert specs["single_choice"].choices() == NEWS
    assert specs["multi_choice"].choices() == NEWS
    assert specs["rating"].choices() == ["1", "2", "3", "4", "5"]
    assert specs["pairwise"].choices() == ["left", "right"]
    assert specs["spans"].choices() == ["PER", "LOC"]
    assert specs["number"].choices() == []
    assert specs["text"].choices() == []


# ---------------------------------------------------------------------- Label Studio configs

CHOICES_CONFIG = """
<View>
  <Header value="Pick the topic"/>
  <Style>.x { color: red; }</Style>
  <Text name="txt" value="$review"/>
  <Choices name="topic" toName="txt" choice="single-radio" showInline="true">
    <Choice value="Sports" hint="games and matches"/>
    <Choice value="World politics" alias="World"/>
    <Choice value="Business"/>
  </Choices>
</View>
"""


def test_config_choices_single() -> None:
    spec = LabelSpec.from_label_config(CHOICES_CONFIG)
    assert spec.type is TaskType.single_choice
    assert spec.classes == [
        LabelClass(name="Sports", description="games and matches"),
        LabelClass(name="World", description="World politics"),
        LabelClass(name="Business"),
    ]
    assert (spec.from_name, spec.to_name, spec.input_fields, spec.object_names) == (
        "topic",
        "txt",
        ["review"],
        ["txt"],
    )
    assert spec.ls_config == CHOICES_CONFIG
    assert spec.to_label_config() == CHOICES_CONFIG


def test_config_choices_multiple_lowercase_tags_and_hypertext() -> None:
    spec = LabelSpec.from_label_config(
        '<view><hypertext name="html" value="$page"/>'
        '<choices name="tags" toname="html" choice="multiple"><choice value="A"/><choice value="B"/></choices></view>'
    )
    assert (spec.type, spec.class_names(), spec.to_name, spec.input_fields) == (
        TaskType.multi_choice,
        ["A", "B"],
        "html",
        ["page"],
    )


def test_config_labels() -> None:
    spec = LabelSpec.from_label_config(
        '<View><Labels name="ner" toName="text"><Label value="PER" background="red" hint="a person"/>'
        '<Label value="LOC" background="#00f"/></Labels><Text name="text" value="$body"/></View>'
    )
    assert spec.type is TaskType.spans
    assert spec.classes == [LabelClass(name="PER", description="a person"), LabelClass(name="LOC")]
    assert (spec.from_name, spec.to_name, spec.span_field, spec.input_fields) == (
        "ner",
        "text",
        "body",
        ["body"],
    )


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        ('<Rating name="stars" toName="t"/>', {"type": TaskType.rating, "max_rating": 5}),
        (
            '<Rating name="stars" toName="t" maxRating="10" icon="heart"/>',
            {"type": TaskType.rating, "max_rating": 10},
        ),
        (
            '<Number name="n" toName="t" min="0" max="100"/>',
            {"type": TaskType.number, "min_value": 0, "max_value": 100},
        ),
        ('<Number name="n" toName="t"/>', {"type": TaskType.number, "min_value": None, "max_value": None}),
        ('<TextArea name="answer" toName="t" rows="4"/>', {"type": TaskType.text}),
    ],
)
def test_config_rating_number_textarea(control: str, expected: dict[str, Any]) -> None:
    spec = LabelSpec.from_label_config(f'<View><Text name="t" value="$text"/>{control}</View>')
    for key, value in expected.items():
        assert getattr(spec, key) == value
    assert spec.to_name == "t"
    assert spec.input_fields == ["text"]


def test_config_pairwise() -> None:
    spec = LabelSpec.from_label_config(
        '<View><Text name="article" value="$article"/><Pairwise name="pw" toName="txt-1,txt-2"/>'
        '<View style="display: flex"><Text name="txt-1" value="$summary_1"/><Text name="txt-2" value="$summary_2"/>'
        "</View></View>"
    )
    assert spec.type is TaskType.pairwise
    assert (spec.from_name, spec.to_name) == ("pw", "txt-1,txt-2")
    assert spec.input_fields == ["article", "summary_1", "summary_2"]
    assert spec.pair_fields() == ("summary_1", "summary_2")
    assert spec.display("right") == "right (summary_2)"
    assert spec.parse_text("summary_1") == "left"


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (
            '<View><Image name="img" value="$image"/><RectangleLabels name="x" toName="img"/></View>',
            "unsupported tag <Image name='img'>: labelpilot supports Choices, Labels, Rating, Number, TextArea, "
            "Pairwise over Text",
        ),
        (
            '<View><Text name="t" value="$t"/><RectangleLabels name="x" toName="t"/></View>',
            "unsupported tag <RectangleLabels name='x'>: labelpilot supports Choices, Labels",
        ),
        (
            '<View><Text name="t" value="$t"/><Taxonomy name="tax" toName="t"/></View>',
            "unsupported tag <Taxonomy name='tax'>",
        ),
        ('<View><Text name="t" value="$t"/><Relations/></View>', "unsupported tag <Relations>"),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="A"/><Choice value="B"/>'
            '</Choices><Rating name="r" toName="t"/></View>',
            "several control tags: <Choices name='c'>, <Rating name='r'>; labelpilot supports exactly one",
        ),
        ('<View><Text name="t" value="$t"/></View>', "has no control tag"),
        ('<View><Text name="t" value="$t"/><Rating name="r" toName="x"/></View>', "no object tag named 'x'"),
        ('<View><Text name="t" value="$t"/><Rating name="r"/></View>', "needs both a name and a toName"),
        (
            '<View><HyperText name="h" value="$h"/><Labels name="l" toName="h"><Label value="A"/></Labels></View>',
            "labels a <HyperText> tag; span offsets are supported over <Text> only",
        ),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t" value="$opts"/></View>',
            "loads its options from the task data",
        ),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="A"/></Choices></View>',
            "at least 2 classes",
        ),
        (
            '<View><Text name="t" value="$t"/><Rating name="r" toName="t" maxRating="many"/></View>',
            "maxRating='many'",
        ),
        ("<Form/>", "must start with <View>, not <Form>"),
        ("   ", "the label config is empty"),
    ],
)
def test_config_errors(xml: str, message: str) -> None:
    with pytest.raises(LabelSpecError) as info:
        LabelSpec.from_label_config(xml)
    assert message in info.value.message


def test_malformed_xml_reports_line_and_column() -> None:
    with pytest.raises(LabelSpecError) as info:
        LabelSpec.from_label_config('<View>\n  <Text name="t" value="$t">\n</View>')
    assert info.value.message == "the label config is not well-formed XML: mismatched tag at line 3, column 3"


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    + "".join(
        f' <!ENTITY lol{i} "{("&lol" + str(i - 1 if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10)
    )
    + ']>\n<View><Header value="&lol9;"/><Text name="t" value="$t"/><TextArea name="a" toName="t"/></View>'
)
EXTERNAL_ENTITY = (
    '<?xml version="1.0"?>\n<!DOCTYPE View [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
    '<View><Header value="&xxe;"/><Text name="t" value="$t"/><TextArea name="a" toName="t"/></View>'
)


@pytest.mark.parametrize("xml", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion_laughs", "external_entity"])
def test_hostile_xml_is_refused_quickly(xml: str) -> None:
    started = time.perf_counter()
    with pytest.raises(LabelSpecError) as info:
        LabelSpec.from_label_config(xml)
    assert time.perf_counter() - started < 1.0
    assert "declares a DTD" in info.value.message
    assert "passwd" not in info.value.user_message()
    assert info.value.hint == "Label Studio configs never need a DOCTYPE: remove it"


@pytest.mark.parametrize("name", list(all_specs()))
def test_generated_config_round_trips(name: str) -> None:
    spec = all_specs()[name]
    assert spec.ls_config is None
    config = spec.to_label_config()
    back = LabelSpec.from_label_config(config)
    assert back.ls_config == config
    assert back.model_copy(update={"ls_config": None}) == spec


def test_generated_config_escapes_values_and_keeps_names() -> None:
    spec = LabelSpec.from_classes(
        [("A & B", 'say "yes" <b>'), ("C'\"", "line one\nline two\ttab")],
        type=TaskType.multi_choice,
        input_fields=["my field"],
        from_name='x"y',
    )
    config = spec.to_label_config()
    assert "A &amp; B" in config
    assert "&lt;b&gt;" in config
    assert LabelSpec.from_label_config(config).model_copy(update={"ls_config": None}) == spec


def test_generated_config_exact_text() -> None:
    assert news(input_fields=["text"]).to_label_config() == (
        "<View>\n"
        '  <Text name="text" value="$text"/>\n'
        '  <Choices name="label" toName="text" choice="single">\n'
        '    <Choice value="Sports"/>\n'
        '    <Choice value="World" hint="international politics"/>\n'
        '    <Choice value="Business"/>\n'
        "  </Choices>\n"
        "</View>\n"
    )


def test_config_with_object_names_round_trips_through_generation() -> None:
    spec = LabelSpec.from_label_config(CHOICES_CONFIG).model_copy(update={"ls_config": None})
    assert LabelSpec.from_label_config(spec.to_label_config()).model_copy(update={"ls_config": None}) == spec


# ---------------------------------------------------------------------- Label Studio results

LS_SHAPES: list[tuple[str, object, str, list[dict[str, Any]]]] = [
    ("single_choice", "World", "choices", [{"choices": ["World"]}]),
    ("multi_choice", ["Sports", "Business"], "choices", [{"choices": ["Sports", "Business"]}]),
    ("rating", 4, "rating", [{"rating": 4}]),
    ("number", 2.5, "number", [{"number": 2.5}]),
    ("text", "an answer", "textarea", [{"text": ["an answer"]}]),
    ("pairwise", "left", "pairwise", [{"selected": "left"}]),
    (
        "spans",
        [
            {"start": 0, "end": 5, "text": "Alice", "label": "PER"},
            {"start": 17, "end": 22, "text": "Paris", "label": "LOC"},
        ],
        "labels",
        [
            {"start": 0, "end": 5, "text": "Alice", "labels": ["PER"]},
            {"start": 17, "end": 22, "text": "Paris", "labels": ["LOC"]},
        ],
    ),
]


@pytest.mark.parametrize(("name", "value", "kind", "ls_values"), LS_SHAPES, ids=[s[0] for s in LS_SHAPES])
def test_ls_result_shapes_and_round_trip(
    name: str, value: object, kind: str, ls_values: list[dict[str, Any]]
) -> None:
    spec = all_specs()[name]
    results = spec.to_ls_result(value)
    assert [r["value"] for r in results] == ls_values
    assert {(r["from_name"], r["to_name"], r["type"]) for r in results} == {
        (spec.from_name, spec.to_name, kind)
    }
    assert all(isinstance(r["id"], str) and r["id"] for r in results)
    assert spec.to_ls_result(value) == results  # ids are stable
    assert spec.from_ls_result(results) == value


def test_span_result_ids_differ_per_span() -> None:
    results = spans().to_ls_result(LS_SHAPES[-1][1])
    assert len({r["id"] for r in results}) == 2


def test_from_ls_result_ignores_other_controls() -> None:
    assert spans().from_ls_result([]) == []  # an annotation without regions: no spans
    assert spans().from_ls_min_value([]) == []
    spec = news(input_fields=["text"])
    other = {
        "from_name": "sentiment",
        "to_name": "text",
        "type": "choices",
        "value": {"choices": ["Positive"]},
    }
    assert spec.from_ls_result([other]) is None
    assert spec.from_ls_result([]) is None
    ours = {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["business"]}}
    assert spec.from_ls_result([other, ours]) == "Business"


def test_from_ls_result_spans_with_multiple_labels_and_source() -> None:
    result = {
        "from_name": "label",
        "type": "labels",
        "value": {"start": 10, "end": 13, "labels": ["PER", "LOC"]},
    }
    assert spans().from_ls_result([result], source_text=SOURCE) == [
        {"start": 10, "end": 13, "text": "Bob", "label": "PER"},
        {"start": 10, "end": 13, "text": "Bob", "label": "LOC"},
    ]


@pytest.mark.parametrize(
    ("name", "results", "message"),
    [
        (
            "single_choice",
            [{"from_name": "label", "type": "rating", "value": {"rating": 3}}],
            "has type 'rating', expected 'choices'",
        ),
        (
            "single_choice",
            [{"from_name": "label", "type": "choices", "value": {"choices": ["Sports", "World"]}}],
            "must hold one choice",
        ),
        (
            "single_choice",
            [{"from_name": "label", "type": "choices", "value": {"choices": ["Tech"]}}],
            "'Tech' is not one of the labels",
        ),
        ("rating", [{"from_name": "label", "type": "rating", "value": {"rating": 9}}], "from 1 to 5, got 9"),
        ("rating", [{"from_name": "label", "type": "rating", "value": {"stars": 3}}], "has no 'rating'"),
        (
            "rating",
            [{"from_name": "label", "type": "rating", "value": {"rating": 3}}] * 2,
            "expected one result for 'label', got 2",
        ),
        ("text", [{"from_name": "label", "type": "textarea"}], "has no 'value' object"),
        ("text", {"from_name": "label"}, "must be a list of items"),
    ],
)
def test_from_ls_result_errors(name: str, results: object, message: str) -> None:
    with pytest.raises(LabelValueError, match=message):
        all_specs()[name].from_ls_result(results)


@given(st.lists(st.sampled_from(NEWS)))
def test_multi_choice_ls_round_trip_property(labels: list[str]) -> None:
    spec = multi()
    value = spec.validate_value(labels)
    assert spec.from_ls_result(spec.to_ls_result(value)) == value
    assert spec.from_ls_min_value(spec.to_ls_min_value(value)) == value


@given(st.integers(min_value=1, max_value=10))
def test_rating_ls_round_trip_property(stars: int) -> None:
    spec = rating(10)
    assert spec.from_ls_result(spec.to_ls_result(stars)) == stars
    assert spec.from_ls_min_value(spec.to_ls_min_value(stars)) == stars


@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
def test_number_ls_round_trip_property(x: float) -> None:
    spec = number()
    assert spec.from_ls_result(spec.to_ls_result(x)) == x
    assert spec.from_ls_min_value(spec.to_ls_min_value(x)) == x
    assert spec.parse_text(spec.display(x)) == x


@given(st.text(min_size=1).filter(lambda s: s.strip()))
def test_text_ls_round_trip_property(raw: str) -> None:
    spec = text_spec()
    value = spec.validate_value(raw)
    assert spec.from_ls_result(spec.to_ls_result(value)) == value
    assert spec.from_ls_min_value(spec.to_ls_min_value(value)) == value


@st.composite
def text_with_spans(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]]]:
    source = draw(st.text(min_size=1, max_size=40))
    items = []
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        start = draw(st.integers(min_value=0, max_value=len(source) - 1))
        end = draw(st.integers(min_value=start + 1, max_value=len(source)))
        items.append({"start": start, "end": end, "label": draw(st.sampled_from(["PER", "LOC"]))})
    return source, items


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(text_with_spans())
def test_spans_ls_round_trip_property(case: tuple[str, list[dict[str, Any]]]) -> None:
    source, items = case
    spec = spans()
    value = spec.validate_value(items, source_text=source)
    assert spec.from_ls_result(spec.to_ls_result(value)) == value
    assert spec.from_ls_result(spec.to_ls_result(value), source_text=source) == value
    assert spec.from_ls_min_value(spec.to_ls_min_value(value)) == value
    order = {"PER": 0, "LOC": 1}
    keys = [(s["start"], s["end"], order[s["label"]]) for s in cast(list[Span], value)]
    assert keys == sorted(set(keys))


# ---------------------------------------------------------------------- JSON-MIN


@pytest.mark.parametrize(
    ("name", "value", "minimal"),
    [
        ("single_choice", "World", "World"),
        ("multi_choice", ["World"], "World"),
        ("multi_choice", ["Sports", "World"], {"choices": ["Sports", "World"]}),
        ("rating", 3, [{"rating": 3}]),
        ("number", 1.5, [{"number": 1.5}]),
        ("text", "an answer", "an answer"),
        ("pairwise", "right", [{"selected": "right"}]),
        (
            "spans",
            [{"start": 0, "end": 5, "text": "Alice", "label": "PER"}],
            [{"start": 0, "end": 5, "text": "Alice", "labels": ["PER"]}],
        ),
    ],
)
def test_ls_min_shapes_and_round_trip(name: str, value: object, minimal: object) -> None:
    spec = all_specs()[name]
    assert spec.to_ls_min_value(value) == minimal
    assert spec.from_ls_min_value(minimal) == value


@pytest.mark.parametrize(
    ("name", "minimal", "value"),
    [
        ("single_choice", {"choices": ["sports"]}, "Sports"),
        ("multi_choice", ["World", "Sports"], ["Sports", "World"]),
        ("rating", 4, 4),
        ("rating", {"rating": 2}, 2),
        ("number", "7", 7.0),
        ("pairwise", "left", "left"),
        ("text", {"text": ["a", "b"]}, "a\nb"),
        ("single_choice", None, None),
        ("text", "", None),
    ],
)
def test_from_ls_min_value_is_tolerant(name: str, minimal: object, value: object) -> None:
    assert all_specs()[name].from_ls_min_value(minimal) == value


# ---------------------------------------------------------------------- span placement


def test_place_spans_exact_and_in_order() -> None:
    source = "Bob met Alice. Then Alice met Bob."
    placed, missing = place_spans(
        source,
        [
            {"text": "Bob", "label": "PER"},
            {"text": "Alice", "label": "PER"},
            {"text": "Alice", "label": "PER"},
            {"text": "Bob", "label": "PER"},
        ],
    )
    assert missing == []
    assert [(s["start"], s["end"], s["text"]) for s in placed] == [
        (0, 3, "Bob"),
        (8, 13, "Alice"),
        (20, 25, "Alice"),
        (30, 33, "Bob"),
    ]


def test_place_spans_prefers_the_occurrence_after_the_previous_span() -> None:
    source = "Paris is big. Anna lives in Paris."
    placed, missing = place_spans(
        source, [{"text": "Anna", "label": "PER"}, {"text": "Paris", "label": "LOC"}]
    )
    assert missing == []
    assert [(s["start"], s["label"]) for s in placed] == [(14, "PER"), (28, "LOC")]


def test_place_spans_case_insensitive_and_whitespace() -> None:
    source = "the New\nYork Times and APPLE"
    placed, missing = place_spans(
        source, [{"text": "new york times", "label": "ORG"}, {"text": "Apple", "label": "ORG"}]
    )
    assert missing == []
    assert placed == [
        {"start": 4, "end": 18, "text": "New\nYork Times", "label": "ORG"},
        {"start": 23, "end": 28, "text": "APPLE", "label": "ORG"},
    ]


def test_place_spans_overlapping_and_nested() -> None:
    placed, missing = place_spans(
        "aaa University of Oslo",
        [
            {"text": "aa", "label": "X"},
            {"text": "aa", "label": "X"},
            {"text": "University of Oslo", "label": "ORG"},
            {"text": "Oslo", "label": "LOC"},
        ],
    )
    assert missing == []
    assert [(s["start"], s["end"], s["label"]) for s in placed] == [
        (0, 2, "X"),
        (1, 3, "X"),
        (4, 22, "ORG"),
        (18, 22, "LOC"),
    ]


def test_place_spans_reports_what_it_cannot_place() -> None:
    placed, missing = place_spans(
        "Alice met Bob.",
        [
            {"text": "Alice", "label": "PER"},
            {"text": "Alice", "label": "PER"},
            {"text": "Carol", "label": "PER"},
            {"text": "  ", "label": "PER"},
            {"text": "Bob"},
        ],
    )
    assert placed == [{"start": 0, "end": 5, "text": "Alice", "label": "PER"}]
    assert missing == [
        {"text": "Alice", "label": "PER", "reason": "every occurrence already has this label"},
        {"text": "Carol", "label": "PER", "reason": "the text was not found"},
        {"text": "  ", "label": "PER", "reason": "the item has no text"},
        {"text": "Bob", "reason": "the item has no label"},
    ]


def test_placed_spans_validate_against_the_spec() -> None:
    placed, _ = place_spans(SOURCE, [{"text": "Paris", "label": "loc"}, {"text": "Alice", "label": "per"}])
    assert spans().validate_value(placed, source_text=SOURCE) == [
        {"start": 0, "end": 5, "text": "Alice", "label": "PER"},
        {"start": 17, "end": 22, "text": "Paris", "label": "LOC"},
    ]
