from __future__ import annotations

import pytest

from modelport.errors import InvalidReference
from modelport.reference import Reference, parse_reference, parse_selector, validate_alias


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iris", Reference("iris")),
        ("iris@latest", Reference("iris")),
        ("iris@3", Reference("iris", version=3)),
        ("iris@production", Reference("iris", alias="production")),
        ("churn-v2.1_x@canary-2", Reference("churn-v2.1_x", alias="canary-2")),
        ("  iris@12  ", Reference("iris", version=12)),
    ],
)
def test_valid_references_parse(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


@pytest.mark.parametrize(
    "text", ["", "@3", "iris@", "iris@0", "iris@03", "iris@-1", "iris@Prod", "iris@a@b", "ir is", "../etc", "iris@1.5"]
)
def test_bad_references_raise_one_message_with_the_grammar(text: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert str(info.value) == (
        f"invalid model reference {text.strip()!r}: a model reference is NAME, NAME@VERSION, NAME@ALIAS or NAME@latest "
        "(e.g. iris, iris@3, iris@production); names use letters, digits, '_', '.', '-'; aliases match [a-z][a-z0-9-]*"
    )


def test_reference_prints_back_as_written() -> None:
    for text in ["iris", "iris@3", "iris@production"]:
        assert str(parse_reference(text)) == text


def test_url_selector_accepts_versions_aliases_and_latest() -> None:
    assert parse_selector("iris", "4") == Reference("iris", version=4)
    assert parse_selector("iris", "staging") == Reference("iris", alias="staging")
    assert parse_selector("iris", "latest").is_latest
    with pytest.raises(InvalidReference, match="invalid model reference 'iris@BAD'"):
        parse_selector("iris", "BAD")


@pytest.mark.parametrize("alias", ["latest", "3", "Prod", "-x", "a_b", ""])
def test_reserved_or_malformed_alias_is_refused(alias: str) -> None:
    with pytest.raises(InvalidReference, match="invalid alias"):
        validate_alias(alias)
