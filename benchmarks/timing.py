"""Timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Clock:
    """CPU (all threads of this process) and wall seconds since it was started."""

    cpu: float = field(default_factory=time.process_time)
    wall: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> tuple[float, float]:
        """(CPU seconds, wall seconds) so far."""
        return time.process_time() - self.cpu, time.perf_counter() - self.wall
