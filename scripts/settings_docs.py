"""Write the settings tables in the docs from their declarations in src/modelport/settings.py.

Each table sits between ``<!-- settings table: WHICH -->`` and ``<!-- end of settings table -->``
in a Markdown file; WHICH is ``all``, ``sagemaker-mode`` or group names (``watching``, ...).

    .venv/bin/python scripts/settings_docs.py          # rewrite the tables
    .venv/bin/python scripts/settings_docs.py --check  # exit 1, naming the files, if one differs
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from modelport.settings import GROUPS, sagemaker_table, settings_table

ROOT = Path(__file__).resolve().parent.parent
FILES = ("README.md", "docs/serving.md", "docs/monitoring.md", "docs/sagemaker.md", "docs/registry.md")
COMMAND = ".venv/bin/python scripts/settings_docs.py"
_TABLE = re.compile(r"(<!-- settings table: ([a-z, -]+) -->\n)(.*?)(<!-- end of settings table -->)", re.DOTALL)


def table(which: str) -> str:
    """The table a marker names."""
    names = [n.strip() for n in which.split(",") if n.strip()]
    if names == ["all"]:
        return settings_table()
    if names == ["sagemaker-mode"]:
        return sagemaker_table()
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise ValueError(f"settings table {which!r}: name all, sagemaker-mode or groups of {', '.join(GROUPS)}")
    return settings_table(*names)


def regenerate(text: str) -> str:
    """``text`` with every settings table written anew."""
    return _TABLE.sub(lambda m: m.group(1) + "\n" + table(m.group(2)) + "\n" + m.group(4), text)


def main(argv: list[str]) -> int:
    stale = []
    for name in FILES:
        path = ROOT / name
        text = path.read_text(encoding="utf-8")
        fresh = regenerate(text)
        if fresh != text:
            stale.append(name)
            if "--check" not in argv:
                path.write_text(fresh, encoding="utf-8")
    if stale and "--check" in argv:
        print(f"settings tables differ from src/modelport/settings.py in {', '.join(stale)}; run: {COMMAND}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
