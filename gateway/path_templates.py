"""Parses ``google.api.http`` path templates and renders them for aiohttp and OpenAPI.

The grammar (google/api/http.proto)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that end a literal: the template's own syntax.
_SYNTAX = frozenset("/{}:*=")


# RFC 3986 unreserved characters: escaping them changes nothing, so they are decoded before
# matching; every other escape (reserved ":" and "/" above all) stays as the client sent it.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_ENCODED_SLASH = re.compile(r"(%2[Ff])")


class TemplateError(ValueError):
    """A path template that does not follow the grammar."""


class PathValueError(ValueError):
    """Path text that does not decode to a field value (an escape that is not UTF-8)."""


@dataclass(frozen=True)
class Literal:
    """A fixed path segment."""

    text: str


@dataclass(frozen=True)
class Wildcard:
    """``*`` (one segment) or ``**`` (the rest of the path)."""

    multi: bool


@dataclass(frozen=True)
class Variable:
    """``{field.path}`` or ``{field.path=segments}``: path text bound to a request field."""

    field_path: tuple[str, ...]
    segments: tuple[Literal | Wildcard, ...]

    @property
    def name(self) -> str:
        """The dotted field path, as written in the template."""
        return ".".join(self.field_path)

    @property
    def multi_segment(self) -> bool:
        """Whether the variable may span several segments (``{name=shelves/*}``, ``{path=**}``),
        which decides how its text is decoded (``decode_variable``)."""
        return len(self.segments) > 1 or any(
            isinstance(s, Wildcard) and s.multi for s in self.segments
        )

    @property
    def pattern(self) -> str:
        """The variable's own segments as written, e.g. ``shelves/*`` (``*`` when implicit)."""
        return "/".join(_segment_text(s) for s in self.segments)


Segment = Literal | Wildcard | Variable


@dataclass(frozen=True)
class PathTemplate:
    """A parsed template."""

    text: str
    segments: tuple[Segment, ...]
    verb: str | None

    @property
    def variables(self) -> tuple[Variable, ...]:
        """The variables in path order."""
        return tuple(s for s in self.segments if isinstance(s, Variable))

    def aiohttp_path(self) -> str:
        """The aiohttp route path: variables become groups ``v0``, ``v1``... in path order.

        Positional names (field paths hold dots, which aiohttp does not take) make two
        templates of the same shape render identically, so their methods share one resource.
        """
        parts: list[str] = []
        variable_index = wildcard_index = 0
        last = len(self.segments) - 1
        for position, segment in enumerate(self.segments):
            is_last = position == last
            if isinstance(segment, Literal):
                parts.append(segment.text)
            elif isinstance(segment, Wildcard):
                parts.append(f"{{w{wildcard_index}:{_regex((segment,), is_last, self.verb)}}}")
                wildcard_index += 1
            else:
                parts.append(
                    f"{{v{variable_index}:{_regex(segment.segments, is_last, self.verb)}}}"
                )
                variable_index += 1
        path = "/" + "/".join(parts)
        return path if self.verb is None else f"{path}:{self.verb}"

    @property
    def placeholder_names(self) -> tuple[str, ...]:
        """Default OpenAPI names of the path's placeholders: each variable's field path, and
        ``segmentN`` for a bare wildcard (OpenAPI has no unnamed path parameters)."""
        names: list[str] = []
        wildcards = 0
        for segment in self.segments:
            if isinstance(segment, Variable):
                names.append(segment.name)
            elif isinstance(segment, Wildcard):
                names.append(f"segment{wildcards}")
                wildcards += 1
        return tuple(names)

    def openapi_path(self, names: tuple[str, ...] | None = None) -> str:
        """The OpenAPI path, one ``{name}`` per placeholder; ``names`` renames them in order."""
        names = names if names is not None else self.placeholder_names
        parts: list[str] = []
        index = 0
        for segment in self.segments:
            if isinstance(segment, Literal):
                parts.append(segment.text)
            else:
                parts.append(f"{{{names[index]}}}")
                index += 1
        path = "/" + "/".join(parts)
        return path if self.verb is None else f"{path}:{self.verb}"

    @property
    def shape(self) -> tuple[str, ...]:
        """What the template matches, without the field names: two templates of one shape
        match exactly the same paths (``/a/{x}/b/{y}`` and ``/a/{n=*/b/*}``, say)."""
        flat: list[str] = []
        for segment in self.segments:
            inner = segment.segments if isinstance(segment, Variable) else (segment,)
            flat.extend(_segment_text(part) for part in inner)
        return (*flat, f":{self.verb}" if self.verb is not None else "")

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: literals before variables before multi-segment wildcards, per segment."""
        key: list[int] = []
        for segment in self.segments:
            inner = segment.segments if isinstance(segment, Variable) else (segment,)
            for part in inner:
                key.append(
                    0
                    if isinstance(part, Literal)
                    else 2
                    if isinstance(part, Wildcard) and part.multi
                    else 1
                )
        return (*key, 0 if self.verb is not None else 1)


def _segment_text(segment: Literal | Wildcard) -> str:
    if isinstance(segment, Literal):
        return segment.text
    return "**" if segment.multi else "*"


def _regex(segments: tuple[Literal | Wildcard, ...], ends_path: bool, verb: str | None) -> str:
    """The regular expression matching a variable's (or bare wildcard's) segments.

    The path's last segment never swallows a ``:`` so that ``/things/x:cancel`` is not read as
    the id ``x:cancel`` of ``GET /things/{id}``: it matches only the custom method's route,
    and other HTTP methods get 405 rather than a call with a wrong id. The expression runs on
    ``normalize_path``'s output, where a ``:`` the client escaped is still ``%3A`` and so may
    be part of an id.
    """
    out: list[str] = []
    last = len(segments) - 1
    for position, segment in enumerate(segments):
        final = ends_path and position == last
        if isinstance(segment, Literal):
            out.append(re.escape(segment.text))
        elif segment.multi:
            out.append(".+" if verb is not None else "[^:]+")
        else:
            out.append("[^/:]+" if final else "[^/]+")
    return "/".join(out)


def normalize_path(raw_path: str) -> str:
    """The path as sent, with only escaped unreserved characters decoded (RFC 3986 6.2.2.2).

    Templates are matched against this rather than a fully decoded path, so that ``a%3Ab`` is
    one segment and not a custom verb, and ``a%2Fb`` is one segment and not two.
    """
    if "%" not in raw_path:
        return raw_path

    def decode(match: re.Match[str]) -> str:
        char = chr(int(match.group()[1:], 16))
        return char if char in _UNRESERVED else match.group()

    return _ESCAPE.sub(decode, raw_path)


def decode_variable(variable: Variable, matched: str) -> str:
    """The field value of a variable's matched (still escaped) path text, as google.api.http
    says: a single-segment variable is decoded fully (``a%3Ab`` → ``a:b``, ``a%2Fb`` → ``a/b``);
    a multi-segment one keeps ``%2F``/``%2f`` as sent (its reserved expansion), so an encoded
    slash is never read as a separator."""
    try:
        if not variable.multi_segment:
            return unquote(matched, errors="strict")
        parts = _ENCODED_SLASH.split(matched)  # odd positions: the encoded slashes themselves
        return "".join(
            part if index % 2 else unquote(part, errors="strict")
            for index, part in enumerate(parts)
        )
    except UnicodeDecodeError:
        raise PathValueError(f"{matched!r} does not decode to UTF-8 text") from None


def parse_template(text: str) -> PathTemplate:
    """Parse a template, raising ``TemplateError`` with the offending position."""
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over the grammar in the module docstring."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def parse(self) -> PathTemplate:
        self._expect("/")
        segments = self._segments(in_variable=False)
        verb = None
        if self._peek() == ":":
            self._pos += 1
            verb = self._literal()
        if self._pos != len(self._text):
            self._fail("unexpected text")
        flat = [
            s for seg in segments for s in (seg.segments if isinstance(seg, Variable) else (seg,))
        ]
        if any(isinstance(s, Wildcard) and s.multi for s in flat[:-1]):
            self._fail("'**' may only be the last segment")
        names = [v.name for v in segments if isinstance(v, Variable)]
        if len(names) != len(set(names)):
            self._fail("a field is bound twice")
        return PathTemplate(text=self._text, segments=tuple(segments), verb=verb)

    def _segments(self, *, in_variable: bool) -> list[Segment]:
        segments = [self._segment(in_variable=in_variable)]
        while self._peek() == "/":
            self._pos += 1
            segments.append(self._segment(in_variable=in_variable))
        return segments

    def _segment(self, *, in_variable: bool) -> Segment:
        if self._text.startswith("**", self._pos):
            self._pos += 2
            return Wildcard(multi=True)
        if self._peek() == "*":
            self._pos += 1
            return Wildcard(multi=False)
        if self._peek() == "{":
            if in_variable:
                self._fail("variables cannot nest")
            return self._variable()
        return Literal(self._literal())

    def _variable(self) -> Variable:
        self._expect("{")
        field_path = [self._ident()]
        while self._peek() == ".":
            self._pos += 1
            field_path.append(self._ident())
        inner: list[Literal | Wildcard] = [Wildcard(multi=False)]
        if self._peek() == "=":
            self._pos += 1
            inner = [s for s in self._segments(in_variable=True) if not isinstance(s, Variable)]
        self._expect("}")
        return Variable(field_path=tuple(field_path), segments=tuple(inner))

    def _ident(self) -> str:
        match = _IDENT.match(self._text, self._pos)
        if match is None:
            self._fail("expected a field name")
        self._pos = match.end()
        return match.group()

    def _literal(self) -> str:
        start = self._pos
        while self._pos < len(self._text) and self._text[self._pos] not in _SYNTAX:
            self._pos += 1
        if self._pos == start:
            self._fail("expected a path segment")
        return self._text[start : self._pos]

    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _expect(self, char: str) -> None:
        if self._peek() != char:
            self._fail(f"expected {char!r}")
        self._pos += 1

    def _fail(self, message: str) -> NoReturn:
        raise TemplateError(f"{message} at position {self._pos} of path template {self._text!r}")
