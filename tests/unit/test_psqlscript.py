"""adapters.psqlscript: psql's script language as the admin service's connection runs it.
Values are quoted as libpq quotes them for psql, statements end where psql ends them, and
whatever psql would do that the connection does not is refused, never ignored."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailstack.adapters import psql, psqlscript
from mailstack.adapters.psqlscript import (
    Reference,
    SetVariable,
    Statement,
    UnsupportedScript,
    parse,
    quote_identifier,
    quote_literal,
    render,
)

HOSTILE = [
    "'; DROP TABLE mailboxes; --",
    "x' OR '1'='1",
    "back\\slash",
    "\\'; DROP TABLE mailboxes; --",
    "quote '' doubled",
    "$$; DROP TABLE mailboxes; $$",
    "/* comment */ -- line",
    ":'name' :\"name\" :name",
    "Grüße, 你好, émoji 📬",
    "E'escape'",
    ";",
    "",
]


def unquote_literal(text: str) -> str:
    """What PostgreSQL reads from a literal in either form PQescapeLiteral writes."""
    escapes = text.startswith(" E'")
    body = text[3:-1] if escapes else text[1:-1]
    assert text.endswith("'") and (escapes or text.startswith("'"))
    value, index = [], 0
    while index < len(body):
        char = body[index]
        if char == "'" or (char == "\\" and escapes):
            assert body[index + 1] == char, "a lone quote or backslash would end the literal"
            index += 1
        value.append(char)
        index += 1
    return "".join(value)


def statements(script: str) -> list[Statement]:
    return [step for step in parse(script) if isinstance(step, Statement)]


def rendered(script: str, **variables: str) -> list[str]:
    return [render(statement, variables) for statement in statements(script)]


# --- quoting ---------------------------------------------------------------------------------


def test_a_literal_is_quoted_as_libpq_quotes_it() -> None:
    assert quote_literal("plain") == "'plain'"
    assert quote_literal("it's") == "'it''s'"
    # With a backslash, PQescapeLiteral writes the E'' form (a leading space included).
    assert quote_literal("a\\b") == " E'a\\\\b'"
    assert quote_literal("a\\'b") == " E'a\\\\''b'"
    assert quote_literal("Grüße") == "'Grüße'"


def test_an_identifier_is_quoted_as_libpq_quotes_it() -> None:
    assert quote_identifier("mailboxes") == '"mailboxes"'
    assert quote_identifier('we"ird') == '"we""ird"'


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_value_stays_one_literal(value: str) -> None:
    sql = rendered("SELECT * FROM mailboxes WHERE address = :'value';", value=value)
    assert len(sql) == 1
    # The rendered SQL is still one statement, and its literal reads back as the value.
    again = statements(sql[0])
    assert len(again) == 1
    literal = sql[0].removeprefix("SELECT * FROM mailboxes WHERE address = ").removesuffix(";")
    assert unquote_literal(literal) == value


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_value_round_trips_through_a_literal(value: str) -> None:
    sql = rendered("SELECT :'value';", value=value)[0]
    assert len(statements(sql)) == 1
    assert unquote_literal(sql.removeprefix("SELECT ").removesuffix(";")) == value


def test_a_hostile_identifier_stays_one_identifier() -> None:
    sql = rendered('SELECT 1 FROM :"table";', table='x"; DROP TABLE mailboxes; --')
    assert sql == ['SELECT 1 FROM "x""; DROP TABLE mailboxes; --";']
    assert len(statements(sql[0])) == 1


# --- statements and variables ----------------------------------------------------------------


def test_statements_end_at_semicolons_outside_quotes_comments_and_parentheses() -> None:
    script = (
        "SELECT 'a;b', \"c;d\", $$e;f$$, $tag$g;h$tag$ -- i;j\n"
        "/* k; /* nested; */ l; */ FROM t;\n"
        "CREATE RULE r AS ON INSERT TO t DO ALSO (SELECT 1; SELECT 2);\n"
        "SELECT E'it\\'s;'; SELECT 'last' "
    )
    found = rendered(script)
    assert len(found) == 4
    assert found[0].startswith("SELECT 'a;b'") and found[0].endswith("FROM t;")
    assert found[1].strip().endswith("SELECT 2);")
    assert found[2].strip() == "SELECT E'it\\'s;';"
    assert found[3].strip() == "SELECT 'last'"  # text at the end is one more statement


def test_variables_are_replaced_outside_quotes_only() -> None:
    script = (
        "SELECT to_char(now(), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), :'name', CAST(:'n' AS int)"
        "::text, ':''name''', $$:'name'$$ -- :'name'\n;"
    )
    assert rendered(script, name="x'y", n="1") == [
        "SELECT to_char(now(), 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), 'x''y', CAST('1' AS int)"
        "::text, ':''name''', $$:'name'$$ -- :'name'\n;"
    ]


def test_a_raw_variable_reference_is_left_alone_unless_it_names_a_set_variable() -> None:
    assert rendered("SELECT a[1:n] FROM t;") == ["SELECT a[1:n] FROM t;"]
    with pytest.raises(UnsupportedScript, match=r":n without quotes"):
        rendered("SELECT a[1:n] FROM t;", n="2")


def test_a_variable_that_is_not_set_is_refused() -> None:
    with pytest.raises(UnsupportedScript, match="missing, which is not set"):
        rendered("SELECT :'missing';")


def test_escaped_semicolon_and_colon_are_literal() -> None:
    assert rendered("SELECT 1 \\; SELECT 2 \\:x;") == ["SELECT 1 ; SELECT 2 :x;"]


def test_set_lines_are_read_and_the_secret_stays_out_of_repr() -> None:
    prelude = psql.set_secret_variable("password_hash", "$argon2id$v=19$secret")
    steps = parse(prelude + "SELECT :'password_hash';")
    assert steps[0] == SetVariable("password_hash", "$argon2id$v=19$secret", 1)
    assert "secret" not in repr(steps[0])
    assert isinstance(steps[1], Statement)
    assert render(steps[1], {"password_hash": "$h"}) == "\nSELECT '$h';"


@pytest.mark.parametrize(
    "line",
    [
        "\\set name unquoted\n",
        "\\set name 'has \\' a quote'\n",
        "\\set name 'a' 'b'\n",
        "\\set name\n",
    ],
)
def test_other_set_forms_are_refused_without_echoing_the_value(line: str) -> None:
    with pytest.raises(UnsupportedScript) as refused:
        parse(line + "SELECT 1;")
    assert "quote" in refused.value.message
    assert "unquoted" not in refused.value.message


def test_set_inside_a_statement_is_refused() -> None:
    with pytest.raises(UnsupportedScript, match="inside a statement"):
        parse("SELECT\n\\set name 'x'\n:'name';")


def test_gset_ends_its_statement_and_names_a_prefix() -> None:
    steps = parse("SELECT 1 AS found\n\\gset\nSELECT :'found';\nSELECT 2 AS n \\gset pre_\n")
    assert [step.gset for step in steps if isinstance(step, Statement)] == [
        "",
        None,
        "pre_",
    ]
    assert steps[1] == Statement(("\nSELECT ", Reference("found", "literal"), ";"), 3)


def test_gset_without_a_statement_is_refused() -> None:
    with pytest.raises(UnsupportedScript, match="no statement"):
        parse("SELECT 1;\n\\gset\n")


@pytest.mark.parametrize(
    "command",
    [
        "\\g /dev/null",
        "\\gexec",
        "\\copy t to '/tmp/x'",
        "\\! id",
        "\\i /etc/passwd",
        "\\c db",
        "\\o /tmp/x",
        "\\q",
    ],
)
def test_every_other_meta_command_is_refused(command: str) -> None:
    with pytest.raises(UnsupportedScript, match=r"not supported"):
        parse(f"SELECT 1\n{command}\n")


def test_the_session_prelude_of_psql_is_not_for_the_connection() -> None:
    # psql.query never hands SESSION_PRELUDE (its \g /dev/null) to a SqlRunner: the actor
    # is set per transaction there. Given it anyway, it is refused.
    with pytest.raises(UnsupportedScript, match=r"\\g is not supported"):
        parse(psql.SESSION_PRELUDE)


@pytest.mark.parametrize(
    "sql",
    ["BEGIN;", "commit;", "  -- why\n ROLLBACK;", "START TRANSACTION;", "SAVEPOINT a;", "END;"],
)
def test_transaction_control_is_refused(sql: str) -> None:
    with pytest.raises(UnsupportedScript, match="transaction control"):
        parse(sql)


def test_comments_and_empty_statements_send_nothing() -> None:
    assert parse("-- nothing\n;\n/* still nothing */ ;  \n") == ()


@pytest.mark.parametrize("sql", ["SELECT 'open", 'SELECT "open', "SELECT $$open", "/* open"])
def test_unterminated_quotes_are_refused(sql: str) -> None:
    with pytest.raises(UnsupportedScript, match="unterminated"):
        parse(sql)


def test_the_error_line_is_where_the_statement_ends() -> None:
    found = statements("SELECT 1;\n\nSELECT\n2;")
    assert [statement.line for statement in found] == [1, 4]


def test_psqlscript_has_no_third_party_import() -> None:
    source = psqlscript.__file__
    imports = re.findall(r"^(?:from|import) (\S+)", open(source).read(), re.MULTILINE)  # noqa: PTH123, SIM115
    assert {name.split(".")[0] for name in imports} <= {
        "__future__",
        "re",
        "collections",
        "dataclasses",
        "typing",
        "mailstack",
    }
