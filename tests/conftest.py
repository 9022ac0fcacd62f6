"""Say which build of the engine the suite exercised (see pyvs/__init__.py)."""

import pyvs


def pytest_report_header(config) -> str:
    return f"pyvs engine: {pyvs.ENGINE}"
