"""Errors a person can act on, shared by modules that must not import each other."""

from __future__ import annotations

from pathlib import Path


class InvalidConfigError(ValueError):
    """A config file is wrong; the message names the file, the rule and the problem."""

    def __init__(self, path: Path, where: str, problem: str) -> None:
        super().__init__(f"{path}: {where}: {problem}")
        self.path, self.where, self.problem = path, where, problem
