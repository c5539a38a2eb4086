"""The list-filter language (AIP-160) as ``secrets.list`` and ``versions.list`` accept it.

A parser of its own because it knows nothing of secrets: each list method passes the
fields it can be filtered on, and the same grammar (and the same refusals) serve both.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from localcloud.secretmanager.errors import invalid
from localcloud.secretmanager.wire import parse_timestamp

_FILTER_TOKEN = re.compile(
    r"""\s*(?:
        (?P<lparen>\() | (?P<rparen>\)) |
        (?P<neg>-)(?=[A-Za-z_(]) |
        (?P<field>[A-Za-z_][\w.\-]*)\s*(?P<op><=|>=|!=|=|:|<|>)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s()"]+) |
        (?P<word>[^\s()]+)
    )""",
    re.VERBOSE,
)

Predicate = Callable[[Any], bool]
Getter = Callable[[Any, str], list[Any]]


@dataclass(frozen=True)
class FilterFields:
    """What a resource can be filtered on: field (or map prefix such as ``labels.``) -> kind."""

    kinds: Mapping[str, str]
    getter: Getter

    def kind_of(self, name: str) -> str:
        if name in self.kinds:
            return self.kinds[name]
        for prefix, kind in self.kinds.items():
            if prefix.endswith(".") and name.startswith(prefix) and len(name) > len(prefix):
                return kind
        raise invalid(f"Invalid filter: unsupported field [{name}].")


class ListFilter:
    """The documented subset of the list-filter language (AIP-160) that the service accepts.

    Comparisons ``field:value`` (has / substring, ``*`` wildcard, ``:*`` presence), ``=``,
    ``!=`` and, on timestamps, ``< <= > >=``; combined with ``AND`` (or juxtaposition),
    ``OR`` (which binds tighter, as in AIP-160), ``NOT``/``-`` and parentheses. Anything
    else, including a bare word, is INVALID_ARGUMENT rather than silently matching.
    """

    def __init__(self, text: str, fields: FilterFields) -> None:
        self.text = text
        self.fields = fields
        self._tokens = self._tokenize(text)
        self._pos = 0
        self.predicate: Predicate = (lambda _r: True) if not self._tokens else self._expression()
        if self._pos != len(self._tokens):
            raise invalid(f"Invalid filter [{text}]: unexpected {self._describe(self._tokens[self._pos])}.")

    def matches(self, resource: Any) -> bool:
        return self.predicate(resource)

    # grammar ----------------------------------------------------------------------------
    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, Any]]:
        tokens: list[tuple[str, Any]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _FILTER_TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise invalid(f"Invalid filter [{text}] at offset {pos}.")
            pos = match.end()
            if match.group("lparen"):
                tokens.append(("(", None))
            elif match.group("rparen"):
                tokens.append((")", None))
            elif match.group("neg"):
                tokens.append(("NOT", None))
            elif match.group("field"):
                value = match.group("value")
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                tokens.append(("cmp", (match.group("field"), match.group("op"), value)))
            elif match.group("word") in ("AND", "OR", "NOT"):
                tokens.append((match.group("word"), None))
            else:
                raise invalid(f"Invalid filter [{text}]: [{match.group('word')}] is not a comparison.")
        return tokens

    @staticmethod
    def _describe(token: tuple[str, Any]) -> str:
        return f"'{token[0]}'" if token[0] != "cmp" else "comparison"

    def _peek(self) -> str | None:
        return self._tokens[self._pos][0] if self._pos < len(self._tokens) else None

    def _expression(self) -> Predicate:
        terms = [self._disjunction()]
        while self._peek() not in (None, ")"):
            if self._peek() == "AND":
                self._pos += 1
            terms.append(self._disjunction())
        return terms[0] if len(terms) == 1 else (lambda r: all(t(r) for t in terms))

    def _disjunction(self) -> Predicate:
        terms = [self._unary()]
        while self._peek() == "OR":
            self._pos += 1
            terms.append(self._unary())
        return terms[0] if len(terms) == 1 else (lambda r: any(t(r) for t in terms))

    def _unary(self) -> Predicate:
        kind = self._peek()
        if kind == "NOT":
            self._pos += 1
            inner = self._unary()
            return lambda r: not inner(r)
        if kind == "(":
            self._pos += 1
            inner = self._expression()
            if self._peek() != ")":
                raise invalid(f"Invalid filter [{self.text}]: missing ')'.")
            self._pos += 1
            return inner
        if kind == "cmp":
            _, (name, op, value) = self._tokens[self._pos]
            self._pos += 1
            return self._comparison(name, op, value)
        raise invalid(f"Invalid filter [{self.text}]: expected a comparison, got {kind or 'end of input'}.")

    # comparisons ------------------------------------------------------------------------
    def _comparison(self, name: str, op: str, value: str) -> Predicate:
        kind = self.fields.kind_of(name)
        getter = self.fields.getter
        if kind == "presence":
            if (op, value) != (":", "*"):
                raise invalid(f"Invalid filter: [{name}] supports only '{name}:*'.")
            return lambda r: bool(getter(r, name))
        if kind == "time":
            if op == ":":
                raise invalid(f"Invalid filter: [{name}] is a timestamp; compare it with =, !=, <, <=, > or >=.")
            bound = parse_timestamp(value, "filter")
            compare = _ORDERINGS[op]
            return lambda r: any(compare(v, bound) for v in getter(r, name))
        if kind.startswith("enum"):
            allowed = kind.split(":", 1)[1].split(",")
            if op not in (":", "=", "!=") or value not in allowed:
                raise invalid(f"Invalid filter: [{name}] accepts one of {', '.join(allowed)} with ':', '=' or '!='.")
            if op == "!=":
                return lambda r: value not in getter(r, name)
            return lambda r: value in getter(r, name)
        # strings
        if op == ":":
            if value == "*":
                return lambda r: bool(getter(r, name))
            pattern = re.compile(".*".join(re.escape(part) for part in value.split("*")))
            return lambda r: any(pattern.search(v) for v in getter(r, name))
        if op == "=":
            return lambda r: value in getter(r, name)
        if op == "!=":
            return lambda r: value not in getter(r, name)
        raise invalid(f"Invalid filter: operator '{op}' is not supported on [{name}].")


_ORDERINGS: dict[str, Callable[[datetime, datetime], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
