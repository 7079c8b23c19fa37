"""What a stage reports: a dataclass per stage, printed by the runner and the CLI's --json."""

from __future__ import annotations

from dataclasses import asdict


class StageSummary:
    """Mixin for the stage summary dataclasses."""

    def to_json(self) -> dict:
        return asdict(self)
