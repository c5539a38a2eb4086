"""What the numbers were measured on: ratios travel between machines, absolute times do not."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (``platform.processor()`` is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def describe() -> str:
    """One line: cores, CPU, memory, Python, kernel."""
    memory = memory_total_mb()
    parts = [
        f"nproc {os.cpu_count() or 1}",
        f"CPU {cpu_model()}",
        f"RAM {memory / 1024:.0f} GB" if memory else None,
        f"Python {sys.version.split()[0]}",
        f"{platform.system()} {platform.release()}",
    ]
    return ", ".join(p for p in parts if p)
