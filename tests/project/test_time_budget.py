"""The time budget (tests/support/budget.py): a test not marked slow fails when its setup or call
takes longer than the budget; a marked one passes. Run on small test files with a tiny budget."""

from __future__ import annotations

import pytest

TESTS = """
import time

import pytest


@pytest.fixture
def heavy():
    time.sleep(0.6)


def test_quick():
    pass


def test_unmarked():
    time.sleep(0.6)


@pytest.mark.slow
def test_marked():
    time.sleep(0.6)


def test_unmarked_with_a_heavy_fixture(heavy):
    pass


@pytest.mark.slow
def test_marked_with_a_heavy_fixture(heavy):
    pass


def test_failing_slowly():
    time.sleep(0.6)
    assert 1 == 2
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    slow: past the budget\n")
    pytester.makepyfile(test_budget=TESTS)
    return pytester


def test_a_test_over_the_budget_fails_unless_it_is_marked_slow(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess("-p", "tests.support.budget", "--time-budget=0.2")
    result.assert_outcomes(passed=3, failed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_unmarked_with_a_heavy_fixture*",
            "setup took 0.* s, over the 0.2 s budget for a test not marked slow: *mark it @pytest.mark.slow*",
            "*_ test_unmarked _*",
            "call took 0.* s, over the 0.2 s budget for a test not marked slow: *mark it @pytest.mark.slow*",
            "*_ test_failing_slowly _*",
            "*assert 1 == 2",  # a slow test that fails for itself reports its own failure
        ]
    )


def test_a_budget_of_zero_is_no_limit(suite: pytest.Pytester) -> None:
    result = suite.runpytest_inprocess("-p", "tests.support.budget", "--time-budget=0")
    result.assert_outcomes(passed=5, failed=1)
