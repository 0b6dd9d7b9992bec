"""Shared fixtures: `report` collects measured numbers and prints them at the end of the run."""

import pytest

_REPORT_LINES: list[str] = []


@pytest.fixture
def report(request):
    """Call report("text") to have a measured figure printed in pytest's terminal summary."""

    def add(line: str) -> None:
        _REPORT_LINES.append(f"{request.node.name}: {line}")

    return add


def pytest_terminal_summary(terminalreporter):
    if _REPORT_LINES:
        terminalreporter.section("measured numbers")
        for line in _REPORT_LINES:
            terminalreporter.write_line(line)
