"""The one YAML dumper of the shipping layer: what reads back, and the styles each file asks for."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from modelport.shipping.yamlfiles import dump

TRICKY: dict[str, Any] = {
    "quote": "it's",
    "promql": 'sum(rate(x{code="5xx"}[5m])) > 0.01',
    "template": "{{ $labels.model }}: {{ $value }}",
    "word that reads as a boolean": "true",
    "number as text": "0.5",
    "script": "set -e\npython train.py\n",
    "no final newline": "a\nb",
    "unicode": "modèle – 模型",
    "empty": [[], {}, ""],
    "nested": [{"a": [1, 2.5, -3e-9]}, None, True],
    "long": "word " * 400,
}


@pytest.mark.parametrize("indent_lists", [True, False])
@pytest.mark.parametrize("empty_null", [True, False])
def test_every_style_reads_back_as_the_data(indent_lists: bool, empty_null: bool) -> None:
    assert yaml.safe_load(dump(TRICKY, indent_lists=indent_lists, empty_null=empty_null, width=80)) == TRICKY


def test_multi_line_strings_are_literal_blocks_and_unicode_is_itself() -> None:
    text = dump({"run": "set -e\npython train.py\n", "name": "modèle"})
    assert text == "run: |\n  set -e\n  python train.py\nname: modèle\n"


def test_lists_indented_or_level_with_their_key() -> None:
    assert dump({"steps": ["a", "b"]}) == "steps:\n  - a\n  - b\n"
    assert dump({"steps": ["a", "b"]}, indent_lists=False) == "steps:\n- a\n- b\n"


def test_none_as_null_or_as_nothing() -> None:
    assert dump({"on": {"push": None}}) == "'on':\n  push: null\n"
    assert dump({"on": {"push": None}}, empty_null=True) == "'on':\n  push:\n"


def test_long_strings_fold_only_past_the_width_asked_for() -> None:
    line = " ".join(["word"] * 100)
    assert dump({"k": line}) == f"k: {line}\n"
    assert dump({"k": line}, width=120).count("\n") > 1
