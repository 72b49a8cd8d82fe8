"""The time budget (a pytest plugin, loaded by tests/conftest.py): a test not marked ``slow`` fails
when its setup or its call takes longer than ``--time-budget`` seconds (default :data:`BUDGET_S`).

``make unit-fast`` (``-m "not slow and not postgres"``) is the inner loop; a test that does real
work there (a real PyTorch or TensorFlow conversion, a server started as a process) makes every run
of it slower for everyone, so such a test says so: ``@pytest.mark.slow``, or
``pytestmark = pytest.mark.slow`` for a whole module. Setup counts too, because a fixture may be
what does the work (a module-scoped fixture is charged to the first test that uses it).

The default, 60 s, is several times the slowest unmarked test measured on a 2-core machine loaded by
other test runs beside it (``--durations=0``, one folder at a time, December 2026: 17 s for the setup
of a folder's first test, which pays its imports and module fixtures, 9 s for a call), so a busy CI
runner does not trip it; a test near it is doing too much for the inner loop. ``--time-budget=0``
turns the check off.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

BUDGET_S = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--time-budget",
        type=float,
        default=BUDGET_S,
        metavar="SECONDS",
        help=f"fail a test not marked slow whose setup or call takes longer (default {BUDGET_S:g}; 0: no limit)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    budget: float = item.config.getoption("time_budget")
    over = budget > 0 and call.duration > budget
    if over and report.when in ("setup", "call") and report.passed and item.get_closest_marker("slow") is None:
        report.outcome = "failed"
        report.longrepr = (
            f"{report.when} took {call.duration:.1f} s, over the {budget:g} s budget for a test not marked slow: "
            "make it faster, or mark it @pytest.mark.slow (tests/support/budget.py)"
        )
    return report
