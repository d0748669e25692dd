"""The lab's evaluation suites (`--suite lab`), registered with the evaluation layer through
the `skillgraft.suites` entry point (see pyproject.toml)."""

from pathlib import Path


def folder() -> Path:
    """The folder holding the lab's suite YAML files."""
    return Path(__file__).parent
