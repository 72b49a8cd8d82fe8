"""YAML text for the files modelport ships: workflows, cloud-init user-data, Kubernetes and KServe
manifests, Prometheus and Grafana files.

One dumper, PyYAML's safe one, for all of them: keys in the order given, multi-line strings (run
scripts, unit files) as literal blocks, UTF-8 as itself. What differs between the files is asked
for by name: lists indented under their key or not, ``null`` or nothing for None, the width at
which long strings fold.
"""

from __future__ import annotations

import math
from functools import partial
from typing import IO, Any

import yaml

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"


class _Dumper(yaml.SafeDumper):
    def __init__(self, stream: IO[str], *, indent_lists: bool, empty_null: bool, **options: Any) -> None:
        super().__init__(stream, **options)
        self.indent_lists = indent_lists
        self.empty_null = empty_null

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, indentless and not self.indent_lists)


def _str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar(_STR, value, style="|" if "\n" in value else None)


def _none(dumper: _Dumper, value: None) -> yaml.ScalarNode:
    return dumper.represent_scalar(_NULL, "" if dumper.empty_null else "null")


_Dumper.add_representer(str, _str)
_Dumper.add_representer(type(None), _none)


def dump(document: Any, *, indent_lists: bool = True, empty_null: bool = False, width: float = math.inf) -> str:
    """YAML text of ``document`` (plain data: dicts, lists, strings, numbers, booleans, None).

    indent_lists: a list's items indented under their key (``key:\\n  - item``), not level with
    it. empty_null: None as an empty value (``push:``), not ``null``. width: the column past which
    long plain strings fold onto the next line (never, by default).
    """
    dumper = partial(_Dumper, indent_lists=indent_lists, empty_null=empty_null)
    return yaml.dump(
        document, Dumper=dumper, sort_keys=False, default_flow_style=False, width=width, allow_unicode=True
    )
