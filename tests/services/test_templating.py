"""Message templates: fields and fallbacks only; every attempt at more is refused or inert, quickly."""

import time

import pytest

from webapp.services.templating import (
    MAX_PLACEHOLDERS,
    MAX_TEMPLATE_CHARS,
    TemplateError,
    check,
    compile_template,
)

DEADLINE = 1.0  # seconds: generous; each case takes well under a millisecond


def refused(source: str) -> TemplateError:
    """Compile, expecting a refusal, and prove it came back within the deadline."""
    started = time.perf_counter()
    with pytest.raises(TemplateError) as caught:
        compile_template(source)
    assert time.perf_counter() - started < DEADLINE
    return caught.value


def test_fields_and_fallbacks_render():
    """A field takes the contact's value; a fallback covers a missing, empty or blank value."""
    template = compile_template('Hi {{ first_name | default("there") }}, your code is {{code}}.')
    assert template.render({"first_name": "Ana", "code": "X1"}) == "Hi Ana, your code is X1."
    assert template.render({"code": "X1"}) == "Hi there, your code is X1."
    assert template.render({"first_name": "", "code": "X1"}) == "Hi there, your code is X1."
    assert template.render({"first_name": "  \t", "code": ""}) == "Hi there, your code is ."
    assert template.fields == ["first_name", "code"]


def test_single_quotes_and_the_phone_builtin():
    """default('…') works with single quotes; {{ phone }} is the contact's number, not an attribute."""
    template = compile_template("{{ city | default('your city') }} / {{ phone }}")
    assert template.render({"phone": "attribute"}, phone="+14155550100") == "your city / +14155550100"


def test_render_detail_reports_missing_fields_and_used_values():
    """The summary needs to know which fields were missing without a fallback and which values were used."""
    template = compile_template('{{ a }}-{{ b | default("B") }}-{{ c }}')
    detail = template.render_detail({"a": "x", "c": " "})
    assert detail.text == "x-B-"
    assert detail.values == ("x",)
    assert detail.missing == ("c",)


def test_text_without_placeholders_is_kept_exactly():
    """Braces that are not placeholders are ordinary GSM characters and stay as typed."""
    source = "Use code {SAVE} or [this] ~ } {"
    assert compile_template(source).render({}) == source


def test_config_is_just_an_unknown_field(app):
    """{{ config }} names a field no contact has: flagged, rendered as nothing, never the app's config."""
    with app.app_context():
        template, errors, warnings = check("Secret: {{ config }}", known_fields=["first_name"])
        assert errors == []
        assert warnings == ["Line 1, column 9: “config” is not a field of your contacts."]
        text = template.render({"first_name": "Ana"})
    assert text == "Secret: "
    assert app.config["SECRET_KEY"] not in text


def test_attribute_walk_is_refused():
    """{{ ''.__class__.__mro__ }} is not a field name: refused, with where and what was found."""
    error = refused("Hi {{ ''.__class__.__mro__ }}")
    assert str(error).startswith("Line 1, column 4: Found “{{ ''.__class__.__mro__ }}”, which is not a field name")


def test_block_tags_and_comments_are_refused():
    """{% for %} loops and {# #} comments are refused, each located."""
    error = refused("Hi\n{% for x in range(10**9) %}x{% endfor %} {# note #}")
    messages = [str(problem) for problem in error.problems]
    assert messages[0].startswith("Line 2, column 1: Found a {% … %} block: “{% for x in range(10**9) %}”")
    assert messages[1].startswith("Line 2, column 29: Found a {% … %} block: “{% endfor %}”")
    assert messages[2].startswith("Line 2, column 42: Found a {# … #} comment")


def test_arithmetic_is_never_evaluated():
    """{{ 9**9**9 }} would take forever to fold; it is refused as text, in no time."""
    error = refused("Total {{ 9**9**9 }}")
    assert "“{{ 9**9**9 }}”, which is not a field name" in str(error)


def test_filters_other_than_default_are_refused():
    """Only default("…") is a filter; anything else says so."""
    error = refused("{{ name | upper }}")
    assert "unsupported filter" in str(error) and "default(\"text\")" in str(error)


def test_unclosed_and_empty_placeholders_are_refused():
    """An unclosed {{ and an empty {{ }} are each named."""
    assert "never closed" in str(refused("Hi {{ name"))
    assert "empty placeholder" in str(refused("Hi {{ }}"))


def test_a_megabyte_template_is_refused_by_length():
    """1 MB of text is refused by its length before any parsing."""
    error = refused("{{ a }}" * (1024 * 1024 // 7) + "x" * 10)
    assert f"the limit is {MAX_TEMPLATE_CHARS:,}" in str(error)


def test_ten_thousand_placeholders_are_refused():
    """10,000 placeholders are refused (by length), and 51 short ones by the placeholder cap."""
    assert "characters long" in str(refused("{{a}}" * 10_000))
    error = refused("{{a}}" * (MAX_PLACEHOLDERS + 1))
    assert f"at most {MAX_PLACEHOLDERS}" in str(error)
    assert len(compile_template("{{a}}" * MAX_PLACEHOLDERS).placeholders) == MAX_PLACEHOLDERS


def test_a_template_at_the_length_limit_compiles():
    """The limit is inclusive: exactly MAX_TEMPLATE_CHARS characters are accepted."""
    assert compile_template("x" * MAX_TEMPLATE_CHARS).render({}) == "x" * MAX_TEMPLATE_CHARS


def test_values_are_inserted_as_text_not_re_parsed():
    """A contact's value that looks like a placeholder is printed as it is, never rendered again."""
    template = compile_template("{{ name }}")
    assert template.render({"name": "{{ config }}"}) == "{{ config }}"


def test_rendering_a_hundred_thousand_contacts_is_fast():
    """Compiled once, a template renders 100,000 contacts in well under a second."""
    template = compile_template('Hi {{ first_name | default("there") }}, {{ city }} deals: {{ code }}!')
    contacts = [{"first_name": f"P{i}", "city": "Paris", "code": str(i)} for i in range(100_000)]
    started = time.perf_counter()
    texts = [template.render(contact) for contact in contacts]
    assert time.perf_counter() - started < DEADLINE
    assert texts[42] == "Hi P42, Paris deals: 42!"
