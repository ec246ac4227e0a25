"""psql's script language, the part of it mailstack's SQL uses, for an executor that runs a
script on a database connection of its own instead of starting psql (adapters.pgconnection).

What psql does with the text on its stdin, done the same way:
- statements end at a `;` outside quotes, comments and parentheses (psqlscan.l); text left
  at the end is one more statement;
- `:'name'` becomes the variable's value as a quoted literal and `:"name"` as a quoted
  identifier, quoted exactly as libpq's PQescapeLiteral / PQescapeIdentifier quote them
  (psql calls those), never inside quotes, dollar quotes or comments; `::` stays a cast;
- `\\set name 'value'` sets a variable (the one form psql.set_secret_variable writes: a value
  without a quote or a backslash, which psql would interpret); `\\gset [prefix]` runs the
  statement before it and sets one variable per column (accounts.directory.remove_domain);
- `\\;` and `\\:` are a literal `;` and `:`.
Anything else psql would treat specially is refused with UnsupportedScript, never ignored:
another meta-command (`\\g`, `\\copy`, `\\i`, ...), `:name` without quotes naming a variable
that is set (psql would paste the raw value into the SQL), `:{?name}`, a variable that is not
set, and transaction control (the executor owns the transactions: the audit actor is set per
transaction).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mailstack.errors import MailstackError

# psql's variable_char (psqlscan.l): ASCII letters, digits, '_' and any non-ASCII character.
_NAME = r"[A-Za-z0-9_\u0080-\U0010ffff]+"
_QUOTED_REFERENCE = re.compile(rf":'({_NAME})'|:\"({_NAME})\"")
_RAW_REFERENCE = re.compile(rf":({_NAME})")
# $tag$ opens a dollar-quoted string ($1 is a parameter, not a tag).
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")
_IDENTIFIER_CHAR = re.compile(r"[A-Za-z0-9_$\u0080-\U0010ffff]")
# The one \set form read: a name and a single-quoted value with no quote or backslash in it.
_SET_ARGUMENTS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]+'([^'\\]*)'[ \t]*")
_GSET_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRANSACTION_CONTROL = re.compile(
    r"(?:begin|start|commit|end|rollback|abort|savepoint|release|prepare\s+transaction)\b",
    re.IGNORECASE,
)
_COMMENTS_AND_SPACE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)

Quoting = Literal["literal", "identifier", "raw"]


class UnsupportedScript(MailstackError):
    """A script the connection would not run the way psql runs it: refused whole, before
    anything of it reaches the database."""


@dataclass(frozen=True)
class Reference:
    """A variable named in a statement: `:'name'` (literal), `:"name"` (identifier) or
    `:name` (raw, only allowed while no variable of that name is set)."""

    name: str
    quoting: Quoting


@dataclass(frozen=True)
class Statement:
    """One statement to send: SQL text and variable references, in order. `gset` is None
    when its rows are printed, else the prefix of the variables \\gset sets from its row."""

    parts: tuple[str | Reference, ...]
    line: int  # of the statement's end, as psql reports an error ("psql:<stdin>:LINE:")
    gset: str | None = None


@dataclass(frozen=True)
class SetVariable:
    r"""A `\set name 'value'` line; the value may be a secret, so it is kept out of repr."""

    name: str
    value: str = field(repr=False)
    line: int = 0


Step = Statement | SetVariable


def quote_literal(value: str) -> str:
    """A string literal as libpq's PQescapeLiteral writes it (what psql sends for :'name'):
    quotes doubled; with a backslash in the value, backslashes doubled and the E'' form."""
    if "\\" in value:
        return " E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def quote_identifier(value: str) -> str:
    """An identifier as libpq's PQescapeIdentifier writes it (what psql sends for :"name")."""
    return '"' + value.replace('"', '""') + '"'


def parse(script: str) -> tuple[Step, ...]:
    """The steps of a psql script, in order; UnsupportedScript for anything psql would do
    that this does not (see the module's docstring)."""
    return _Parser(script).steps()


def render(
    statement: Statement,
    variables: Mapping[str, str],
    literal: Callable[[str], str] = quote_literal,
    identifier: Callable[[str], str] = quote_identifier,
) -> str:
    """The statement's SQL with its variables' values quoted in, as psql sends it."""
    pieces: list[str] = []
    for part in statement.parts:
        if isinstance(part, str):
            pieces.append(part)
            continue
        value = variables.get(part.name)
        if part.quoting == "raw":
            if value is not None:
                raise UnsupportedScript(
                    f"the SQL names the variable :{part.name} without quotes (psql would paste "
                    f"its value in unquoted); write :'{part.name}' or :\"{part.name}\""
                )
            pieces.append(f":{part.name}")  # psql leaves an unset :name as it is
        elif value is None:
            raise UnsupportedScript(f"the SQL names the variable :{part.name}, which is not set")
        else:
            pieces.append(literal(value) if part.quoting == "literal" else identifier(value))
    return "".join(pieces)


class _Parser:
    """psqlscan.l's lexer, reduced to what decides where statements end and where
    variables are: quotes, dollar quotes, comments, parentheses, ':' and '\\'."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.position = 0
        self.found: list[Step] = []
        self.parts: list[str | Reference] = []
        self.text: list[str] = []
        self.depth = 0

    def steps(self) -> tuple[Step, ...]:
        script = self.script
        while self.position < len(script):
            char = script[self.position]
            if char == "'":
                self._take(self._end_of_string())
            elif char == '"':
                self._take(self._end_of_quoted('"', doubled_only=True))
            elif char == "$" and self._dollar_tag() is not None:
                self._take(self._end_of_dollar_quote())
            elif script.startswith("--", self.position):
                end = script.find("\n", self.position)
                self._take(len(script) if end < 0 else end)
            elif script.startswith("/*", self.position):
                self._take(self._end_of_comment())
            elif char == ":":
                self._colon()
            elif char == "\\":
                self._backslash()
            elif char == ";" and self.depth == 0:
                self._take(self.position + 1)
                self._finish(gset=None)
            else:
                if char == "(":
                    self.depth += 1
                elif char == ")":
                    self.depth = max(0, self.depth - 1)
                self._take(self.position + 1)
        self._finish(gset=None)
        return tuple(self.found)

    # --- tokens ---------------------------------------------------------------------------

    def _take(self, end: int) -> None:
        self.text.append(self.script[self.position : end])
        self.position = end

    def _end_of_string(self) -> int:
        # E'...' (an E right before the quote, not ending a longer word) takes backslash
        # escapes; every other string (standard_conforming_strings) only doubled quotes.
        start = self.position
        escapes = (
            start > 0
            and self.script[start - 1] in "eE"
            and (start < 2 or not _IDENTIFIER_CHAR.match(self.script[start - 2]))
        )
        return self._end_of_quoted("'", doubled_only=not escapes)

    def _end_of_quoted(self, quote: str, *, doubled_only: bool) -> int:
        script, index = self.script, self.position + 1
        while index < len(script):
            char = script[index]
            if char == "\\" and not doubled_only:
                index += 2
            elif char == quote:
                if script.startswith(quote * 2, index):
                    index += 2
                else:
                    return index + 1
            else:
                index += 1
        raise UnsupportedScript(f"unterminated quoted text ({quote}) in the SQL")

    def _dollar_tag(self) -> str | None:
        if self.position > 0 and _IDENTIFIER_CHAR.match(self.script[self.position - 1]):
            return None  # a $ inside a word (name$1) opens nothing
        found = _DOLLAR_TAG.match(self.script, self.position)
        return found.group() if found else None

    def _end_of_dollar_quote(self) -> int:
        tag = self._dollar_tag() or ""
        end = self.script.find(tag, self.position + len(tag))
        if end < 0:
            raise UnsupportedScript(f"unterminated dollar-quoted text ({tag}) in the SQL")
        return end + len(tag)

    def _end_of_comment(self) -> int:
        script, index, depth = self.script, self.position + 2, 1
        while index < len(script):
            if script.startswith("/*", index):
                depth, index = depth + 1, index + 2
            elif script.startswith("*/", index):
                depth, index = depth - 1, index + 2
                if depth == 0:
                    return index
            else:
                index += 1
        raise UnsupportedScript("unterminated /* comment in the SQL")

    def _colon(self) -> None:
        script = self.script
        if script.startswith("::", self.position):
            self._take(self.position + 2)
            return
        if script.startswith(":{?", self.position):
            raise UnsupportedScript("psql's :{?name} test is not supported")
        quoted = _QUOTED_REFERENCE.match(script, self.position)
        raw = _RAW_REFERENCE.match(script, self.position)
        if quoted:
            literal_name, identifier_name = quoted.groups()
            if literal_name is not None:
                self._reference(Reference(literal_name, "literal"), quoted.end())
            else:
                self._reference(Reference(identifier_name, "identifier"), quoted.end())
        elif raw:
            self._reference(Reference(raw.group(1), "raw"), raw.end())
        else:
            self._take(self.position + 1)

    def _reference(self, reference: Reference, end: int) -> None:
        self._flush_text()
        self.parts.append(reference)
        self.position = end

    def _backslash(self) -> None:
        script = self.script
        following = script[self.position + 1 : self.position + 2]
        if following in (";", ":"):  # psql's escapes for a literal ; or :
            self.text.append(following)
            self.position += 2
            return
        end = script.find("\n", self.position)
        end = len(script) if end < 0 else end
        command, _, arguments = script[self.position + 1 : end].strip().partition(" ")
        line = self._line()
        self.position = end
        if command == "set":
            self._set(arguments.strip(), line)
        elif command == "gset":
            self._gset(arguments.strip())
        else:
            raise UnsupportedScript(
                f"psql's \\{command[:20]} is not supported on the admin service's database "
                "connection (only \\set and \\gset are)"
            )

    def _set(self, arguments: str, line: int) -> None:
        if self._has_content():
            raise UnsupportedScript("\\set inside a statement is not supported")
        found = _SET_ARGUMENTS.fullmatch(arguments)
        if not found:
            # The arguments may hold a secret: never quoted into the error.
            raise UnsupportedScript(
                "\\set is supported only as \\set NAME 'VALUE', the value without a quote "
                "or a backslash"
            )
        self.text.clear()  # whitespace and comments before it
        self.found.append(SetVariable(found.group(1), found.group(2), line))

    def _gset(self, prefix: str) -> None:
        if prefix and not _GSET_PREFIX.fullmatch(prefix):
            raise UnsupportedScript(f"\\gset: {prefix[:40]!r} is not a variable prefix")
        if not self._has_content():
            # psql would run the previous statement again: nothing here does that.
            raise UnsupportedScript("\\gset with no statement before it")
        self._finish(gset=prefix)

    # --- statements -----------------------------------------------------------------------

    def _flush_text(self) -> None:
        if self.text:
            self.parts.append("".join(self.text))
            self.text.clear()

    def _line(self) -> int:
        return self.script.count("\n", 0, self.position) + 1

    def _has_content(self) -> bool:
        if any(isinstance(part, Reference) for part in self.parts):
            return True
        text = "".join(part for part in self.parts if isinstance(part, str))
        text += "".join(self.text)
        return _COMMENTS_AND_SPACE.fullmatch(text.rstrip(";").rstrip()) is None

    def _finish(self, gset: str | None) -> None:
        has_content = self._has_content()
        self._flush_text()
        parts, self.parts, self.depth = tuple(self.parts), [], 0
        if not has_content:
            return  # only space, comments or a lone ';': psql sends nothing either
        first = parts[0] if isinstance(parts[0], str) else ""
        leading = _COMMENTS_AND_SPACE.match(first)
        if _TRANSACTION_CONTROL.match(first, leading.end() if leading else 0):
            raise UnsupportedScript(
                "transaction control in the SQL is not supported: the connection runs each "
                "script in its own transactions (psql.query's single_transaction)"
            )
        self.found.append(Statement(parts, self._line(), gset))
