"""How long-running library work reports progress without printing: the caller passes a sink."""
from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, total: int, description: str, unit: str) -> None: ...
    def advance(self, count: int = 1) -> None: ...
    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int, description: str, unit: str) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass
