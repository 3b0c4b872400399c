"""Fuzz: templates built from known pieces render exactly; any other text is compiled or refused, quickly."""

import re

from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzzing import bounded_time, fuzz_settings
from webapp.services.templating import (
    MAX_FALLBACK_CHARS,
    MAX_PLACEHOLDERS,
    MAX_TEMPLATE_CHARS,
    CompiledTemplate,
    TemplateError,
    check,
    compile_template,
)

SPACES = st.text(" \t\n\u00a0\u2003", max_size=3)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,63}", fullmatch=True)
_OPENER_AHEAD = re.compile(r"\{(?=[{%#]|$)")


def _literal(text: str) -> str:
    """Text with no tag opener in it, and no "{" at its end that the next tag would make one of."""
    return _OPENER_AHEAD.sub("(", text)


@st.composite
def placeholders(draw) -> tuple[str, str, str | None]:
    """(the tag as typed, the field name, the fallback or None), in any of the spellings the language allows."""
    name = draw(names)
    fallback = draw(st.none() | st.text(max_size=30).filter(lambda text: "}}" not in text and not text.endswith("}")))
    if fallback is None:
        inside = f"{draw(SPACES)}{name}{draw(SPACES)}"
    else:
        quote = "'" if '"' in fallback else '"' if "'" in fallback else draw(st.sampled_from("'\""))
        if quote in fallback:
            fallback = fallback.replace(quote, "")
        space = [draw(SPACES) for _ in range(6)]
        inside = (f"{space[0]}{name}{space[1]}|{space[2]}default{space[3]}({space[4]}{quote}{fallback}{quote}"
                  f"{space[5]})")
        inside += draw(SPACES)
    return "{{" + inside + "}}", name, fallback


@st.composite
def templates(draw) -> tuple[str, list]:
    """A valid template as source text, and its pieces: literal strings and (name, fallback, line, column)."""
    pieces: list = []
    source = ""
    for _ in range(draw(st.integers(0, 12))):
        if draw(st.booleans()):
            text = _literal(draw(st.text(max_size=40)))
            if pieces and isinstance(pieces[-1], str):
                source = source[: -len(pieces[-1])] if pieces[-1] else source
                text = _literal(pieces.pop() + text)
            pieces.append(text)
            source += text
        else:
            tag, name, fallback = draw(placeholders())
            line = source.count("\n") + 1
            column = len(source) - (source.rfind("\n") + 1) + 1
            pieces.append((name, fallback, line, column))
            source += tag
    return source, pieces


def _render_by_hand(pieces: list, values: dict, phone: str) -> str:
    out = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
            continue
        name, fallback = piece[0], piece[1]
        value = phone if name == "phone" else values.get(name)
        value = "" if value is None else str(value)
        out.append(fallback or "" if not value or value.isspace() else value)
    return "".join(out)


contact_values = st.one_of(st.none(), st.text(max_size=50), st.just("  \t"), st.integers())


@fuzz_settings(120)
@given(templates(), st.data())
@example(('Hi {{first_name|default("there")}}!', ["Hi ", ("first_name", "there", 1, 4), "!"]), None)
def test_a_valid_template_renders_exactly(template, data):
    """Literal text stays as typed and every placeholder takes its value, else its fallback, else nothing."""
    source, pieces = template
    tags = [piece for piece in pieces if not isinstance(piece, str)]
    with bounded_time(1.0, f"compiling {len(source)} characters"):
        if len(source) > MAX_TEMPLATE_CHARS or len(tags) > MAX_PLACEHOLDERS:
            try:
                compile_template(source)
            except TemplateError:
                return
            raise AssertionError("a template over the limits was accepted")
        compiled = compile_template(source)
    assert [(p.name, p.fallback, p.line, p.column) for p in compiled.placeholders] == tags
    assert compiled.fields == list(dict.fromkeys(tag[0] for tag in tags))
    values = {} if data is None else data.draw(st.dictionaries(st.sampled_from([t[0] for t in tags] or ["x"]),
                                                               contact_values))
    phone = "+14155550100"
    expected = _render_by_hand(pieces, values, phone)
    assert compiled.render(values, phone) == expected
    assert compiled.render_detail(values, phone).text == expected
    assert compiled.literal_text == "".join(p if isinstance(p, str) else p[1] or "" for p in pieces)


@st.composite
def any_text(draw) -> str:
    """Tag soup, valid tags in noise, or text near and over the length limit."""
    kind = draw(st.sampled_from(["soup", "mixed", "long"]))
    if kind == "soup":
        return "".join(draw(st.lists(st.sampled_from(["{{", "}}", "{%", "%}", "{#", "#}", "{", "}", "|", "(", ")",
                                                      "default", "'", '"', "\n", " ", "a", "_", "9", "**", "."]),
                                     max_size=300)))
    if kind == "mixed":
        return "".join(draw(st.lists(st.one_of(placeholders().map(lambda p: p[0]), st.text(max_size=20)),
                                     max_size=60)))
    size = draw(st.sampled_from([MAX_TEMPLATE_CHARS - 1, MAX_TEMPLATE_CHARS, MAX_TEMPLATE_CHARS + 1, 10**6]))
    return draw(st.sampled_from(["{{ a }}", "{", "{{", "a\n", "{{ " + "x" * 70 + " }}"])) * size


@fuzz_settings(200)
@given(any_text(), st.lists(st.text(max_size=20), max_size=5))
@example("{{" * 1000, [])
@example("{{ a | default(\"" + "x" * (MAX_FALLBACK_CHARS + 1) + "\") }}", [])
@example("{{ a }}" * (MAX_PLACEHOLDERS + 1), [])
def test_any_text_is_compiled_or_refused_with_located_problems(source, known):
    """compile_template only ever raises TemplateError, each problem inside the source; check() never raises."""
    with bounded_time(1.0, f"compiling {len(source):,} characters"):
        try:
            compiled = compile_template(source)
        except TemplateError as error:
            compiled = None
            assert error.problems
            lines = source.split("\n")
            for problem in error.problems:
                assert problem.message
                if problem.line is not None:
                    assert 1 <= problem.line <= len(lines) and 1 <= problem.column <= len(lines[problem.line - 1])
                # A message quotes at most a short piece of what was typed.
                assert len(problem.message) < 400
        result, errors, warnings = check(source, known)
    assert (result is None) is (compiled is None) and bool(errors) is (compiled is None)
    if compiled is None:
        return
    assert isinstance(compiled, CompiledTemplate) and len(compiled.placeholders) <= MAX_PLACEHOLDERS
    assert len(warnings) == len(compiled.unknown_fields(known))
    value = "v" * 100
    with bounded_time(1.0, "rendering"):
        text = compiled.render(dict.fromkeys(compiled.fields, value))
    assert text == compiled.render_detail(dict.fromkeys(compiled.fields, value)).text
    # Output is bounded by the template plus one value per placeholder.
    assert len(text) <= len(source) + len(value) * len(compiled.placeholders)
