"""Hypothesis profiles, and the test-time budget.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) replays the same examples on every run, so a red CI
always means a change, never a new draw; locally the search stays random.

Every test not marked ``slow`` should finish within :data:`BUDGET_SECONDS`; the session ends with
the list of those that did not (``make test`` also prints the slowest tests).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "explore"))

BUDGET_SECONDS = 20.0
_over_budget: list[tuple[str, float]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.duration > BUDGET_SECONDS \
            and "slow" not in report.keywords:
        _over_budget.append((report.nodeid, report.duration))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _over_budget:
        terminalreporter.section(f"tests over the {BUDGET_SECONDS:g} s budget (mark them slow "
                                 f"or make them faster)")
        for nodeid, duration in sorted(_over_budget, key=lambda item: -item[1]):
            terminalreporter.write_line(f"{duration:8.1f} s  {nodeid}")
