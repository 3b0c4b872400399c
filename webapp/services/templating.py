"""Message templates: a purpose-built substitution, not Jinja, so a template can name fields and nothing else.

The whole language is two forms of placeholder:

    {{ first_name }}                      the contact's value, or nothing
    {{ first_name | default("there") }}   the fallback when the value is missing, empty or only spaces

(Jinja's own `default` keeps an empty string unless told `default(x, true)`; here empty always falls
back, because an empty CSV cell is the usual way a field is missing.) Field names are the keys the
import mapping gives a contact (webapp.services.csvfiles.field_names) plus the built-ins below.

Nothing inside `{{ }}` is ever evaluated: `{{ config }}` is a field called "config" that no contact
has, `{{ 9**9**9 }}` and `{{ ''.__class__ }}` are not field names and are refused, and `{% %}` and
`{# #}` are refused outright. The length is capped before anything is parsed, so refusing a 1 MB
template costs no more than refusing a 2,001-character one. A template compiles once into a tuple of
literal strings and placeholders; rendering is a join, so a million contacts render in seconds.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_TEMPLATE_CHARS = 2000
MAX_PLACEHOLDERS = 50
MAX_FALLBACK_CHARS = 200

BUILTIN_FIELDS: dict[str, str] = {"phone": "the contact's number, in international format"}
"""Fields every contact has whatever its list's columns were."""

_OPENERS = re.compile(r"\{\{|\{%|\{#")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_PLACEHOLDER = re.compile(
    r"""\s*(?P<name>[A-Za-z_][A-Za-z0-9_]{0,63})\s*
        (?:\|\s*default\s*\(\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')\s*\)\s*)?""",
    re.VERBOSE,
)
_SHOWN = 40  # characters of an offending expression quoted back in a message


class TemplateError(ValueError):
    """A template that is refused; `problems` says where and why, one line each."""

    def __init__(self, problems: list["Problem"]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(problem) for problem in problems))


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason a template is refused, located for the editor (1-based line and column)."""

    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        return f"Line {self.line}, column {self.column}: {self.message}"


@dataclass(frozen=True, slots=True)
class Placeholder:
    """A `{{ field }}` in the template, with its fallback (None: no fallback given)."""

    name: str
    fallback: str | None
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Rendered:
    """A contact's text, and what was substituted into it (for 'missing field' and 'data forces UCS-2')."""

    text: str
    values: tuple[str, ...]  # the contact's own values that were used (fallbacks excluded)
    missing: tuple[str, ...]  # fields with no value and no fallback, rendered as nothing


@dataclass(frozen=True)
class CompiledTemplate:
    """A checked template as literal strings and placeholders, ready to render many times."""

    source: str
    parts: tuple[str | Placeholder, ...]
    placeholders: tuple[Placeholder, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "placeholders", tuple(p for p in self.parts if isinstance(p, Placeholder)))

    @property
    def fields(self) -> list[str]:
        """Field names used, in order of first use."""
        return list(dict.fromkeys(p.name for p in self.placeholders))

    @property
    def literal_text(self) -> str:
        """The template's own characters and fallbacks: what a 'replace with GSM' click can change."""
        return "".join(p if isinstance(p, str) else (p.fallback or "") for p in self.parts)

    def unknown_fields(self, known: Iterable[str]) -> list[str]:
        """Fields that neither the given field names nor the built-ins supply."""
        known = set(known) | set(BUILTIN_FIELDS)
        return [name for name in self.fields if name not in known]

    def render(self, values: Mapping[str, object], phone: str = "") -> str:
        """The text for one contact; a missing, empty or blank value takes the fallback, else renders as nothing."""
        if not self.placeholders:
            return self.source
        out = []
        for part in self.parts:
            if part.__class__ is str:
                out.append(part)
                continue
            value = phone if part.name == "phone" else values.get(part.name)
            if value.__class__ is not str:
                value = "" if value is None else str(value)
            if not value or value.isspace():
                value = part.fallback or ""
            out.append(value)
        return "".join(out)

    def render_detail(self, values: Mapping[str, object], phone: str = "") -> Rendered:
        """render() plus which contact values were used and which fields were missing."""
        out, used, missing = [], [], []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = phone if part.name == "phone" else values.get(part.name)
            value = "" if value is None else str(value)
            if not value or value.isspace():
                if part.fallback is None:
                    missing.append(part.name)
                value = part.fallback or ""
            else:
                used.append(value)
            out.append(value)
        return Rendered("".join(out), tuple(used), tuple(missing))


def compile_template(source: str) -> CompiledTemplate:
    """Check a template and compile it; raises TemplateError listing every problem found."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateError([Problem(None, None,
                                     f"The message is {len(source):,} characters long; the limit is "
                                     f"{MAX_TEMPLATE_CHARS:,} (about 13 SMS parts). Shorten it.")])
    problems: list[Problem] = []
    parts: list[str | Placeholder] = []
    count = 0
    position = 0  # end of the last tag: the literal text runs from here
    for match in _OPENERS.finditer(source):
        start = match.start()
        if start < position:  # an opener inside a tag already read
            continue
        line, column = _locate(source, start)
        opener = match.group()
        closer = {"{{": "}}", "{%": "%}", "{#": "#}"}[opener]
        end = source.find(closer, start + 2)
        if end == -1:
            problems.append(Problem(line, column, f"“{opener}” is never closed with “{closer}”."))
            position = len(source)
            break
        inside = source[start + 2:end]
        if start > position:
            parts.append(source[position:start])
        position = end + 2
        if opener != "{{":
            kind = "a {% … %} block" if opener == "{%" else "a {# … #} comment"
            problems.append(Problem(line, column, f"Found {kind}: {_quote(opener + inside + closer)}. "
                                                  "Only {{ field }} and {{ field | default(\"text\") }} are allowed."))
            continue
        count += 1
        if count > MAX_PLACEHOLDERS:
            problems.append(Problem(line, column, f"More than {MAX_PLACEHOLDERS} placeholders; "
                                                  f"a message may use at most {MAX_PLACEHOLDERS}."))
            position = len(source)
            break
        placeholder = _parse_placeholder(inside, line, column, problems)
        if placeholder is not None:
            parts.append(placeholder)
    if problems:
        raise TemplateError(problems)
    if position < len(source):
        parts.append(source[position:])
    return CompiledTemplate(source, tuple(parts))


def _parse_placeholder(inside: str, line: int, column: int, problems: list[Problem]) -> Placeholder | None:
    """One `{{ … }}` body: a field name and an optional default("…"), or a problem saying what was found."""
    match = _PLACEHOLDER.fullmatch(inside)
    if match is None:
        stripped = inside.strip()
        if not stripped:
            why = "an empty placeholder {{ }}"
        elif _FIELD_NAME.fullmatch(stripped.split("|")[0].strip() or "-") and "|" in stripped:
            why = (f"an unsupported filter in {_quote('{{' + inside + '}}')}; the only one is "
                   "default(\"text\")")
        else:
            why = f"{_quote('{{' + inside + '}}')}, which is not a field name"
        problems.append(Problem(line, column, f"Found {why}. Placeholders are {{{{ field }}}} or "
                                              "{{ field | default(\"text\") }}, using letters, digits and _."))
        return None
    fallback = match.group("dq") if match.group("dq") is not None else match.group("sq")
    if fallback is not None and len(fallback) > MAX_FALLBACK_CHARS:
        problems.append(Problem(line, column, f"The fallback text is {len(fallback)} characters; "
                                              f"at most {MAX_FALLBACK_CHARS}."))
        return None
    return Placeholder(match.group("name"), fallback, line, column)


def _locate(source: str, index: int) -> tuple[int, int]:
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return line, column


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return f"“{text[:_SHOWN]}…”" if len(text) > _SHOWN else f"“{text}”"


def check(
    source: str, known_fields: Iterable[str] | None = None
) -> tuple[CompiledTemplate | None, list[str], list[str]]:
    """(compiled or None, errors, warnings) for the editor: errors refuse a save, warnings flag unknown fields."""
    try:
        compiled = compile_template(source)
    except TemplateError as error:
        return None, [str(problem) for problem in error.problems], []
    warnings = []
    if known_fields is not None:
        for name in compiled.unknown_fields(known_fields):
            placeholder = next(p for p in compiled.placeholders if p.name == name)
            fallback = " (its fallback will be used)" if placeholder.fallback is not None else ""
            warnings.append(f"Line {placeholder.line}, column {placeholder.column}: “{name}” is not a field of "
                            f"your contacts{fallback}.")
    return compiled, [], warnings
