"""Errors a person can act on, shared by modules that must not import each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class InvalidConfigError(ValueError):
    """A config file is wrong; the message names the file, the rule and the problem."""

    def __init__(self, path: Path, where: str, problem: str) -> None:
        super().__init__(f"{path}: {where}: {problem}")
        self.path, self.where, self.problem = path, where, problem


def read_yaml(path: Path) -> Any:
    """A config file's YAML; a missing file or a syntax error is an InvalidConfigError naming the line."""
    if not path.exists():
        raise InvalidConfigError(path, "file", "does not exist")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "file"
        raise InvalidConfigError(path, where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
