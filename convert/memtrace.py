"""An export's peak-memory trace: this process's RSS over time, by phase, written as a TSV file.

    MEDKIT_MEMTRACE=trace.tsv medkit export ...      # or, in Python: with Trace(path): ...
    phase("calibration layer 3/22")                  # anywhere in the export: nothing when no trace runs

A thread samples the RSS every INTERVAL seconds and at every change of phase; the file (seconds, RSS in
MiB, phase), written when the trace ends, opens with one comment line per phase: its start, its end and
its peak; it is rewritten at every change of phase, so a run that is killed leaves its trace so far. The
process's own high-water mark (ru_maxrss, which a sample may miss) closes it. The export's
phases are named where they run (export, layerwise, gram_store); rows() reads the file back.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

ENV = "MEDKIT_MEMTRACE"
INTERVAL = 0.2
_current: Trace | None = None


def _rss() -> int:
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


class Trace:
    def __init__(self, path: Path, interval: float = INTERVAL) -> None:
        self.path = Path(path)
        self.interval = interval
        self.samples: list[tuple[float, int, str]] = []
        self.label = "start"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="medkit-memtrace", daemon=True)
        self._t0 = time.perf_counter()

    def _sample(self) -> None:
        with self._lock:
            self.samples.append((time.perf_counter() - self._t0, _rss(), self.label))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def phase(self, name: str) -> None:
        self._sample()  # the RSS the last phase ended at
        with self._lock:
            self.label = name
        self._sample()
        self.write()  # so far: a run killed (or still running) leaves its trace up to this phase

    def __enter__(self) -> Trace:
        global _current
        self._sample()
        self._thread.start()
        _current = self
        return self

    def __exit__(self, *exc: Any) -> None:
        global _current
        _current = None
        self._stop.set()
        self._thread.join()
        self.phase("end")
        self.write()

    def phases(self) -> list[tuple[str, float, float, int]]:
        """(phase, start s, end s, peak RSS bytes) in the order they ran."""
        out: list[tuple[str, float, float, int]] = []
        for t, rss, label in self.samples:
            if out and out[-1][0] == label:
                name, start, _, peak = out[-1]
                out[-1] = (name, start, t, max(peak, rss))
            else:
                out.append((label, t, t, rss))
        return out

    def write(self) -> None:
        import resource

        with self._lock:
            samples = list(self.samples)
        lines = [
            f"# {name}\t{start:.1f}\t{end:.1f}\t{peak / 2**20:.0f}"
            for name, start, end, peak in self.phases()
        ]
        high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
        lines.append(f"# ru_maxrss\t\t\t{high / 2**20:.0f}")
        lines.append("seconds\trss_mib\tphase")
        lines += [f"{t:.2f}\t{rss / 2**20:.0f}\t{label}" for t, rss, label in samples]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.partial")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)


def phase(name: str) -> None:
    """Name what the export does from now on (in the running trace, if any)."""
    if _current is not None:
        _current.phase(name)


def from_env() -> Any:
    """A Trace to the file MEDKIT_MEMTRACE names, or a context that does nothing."""
    import contextlib

    path = os.environ.get(ENV, "").strip()
    return Trace(Path(path)) if path else contextlib.nullcontext()


def rows(path: Path) -> tuple[list[tuple[str, float, float, float]], float]:
    """A trace file's phases (name, start s, end s, peak GiB) and its ru_maxrss in GiB."""
    out, high = [], 0.0
    for line in Path(path).read_text().splitlines():
        if not line.startswith("# "):
            continue
        name, start, end, mib = line[2:].split("\t")
        if name == "ru_maxrss":
            high = float(mib) / 1024
        else:
            out.append((name, float(start), float(end), float(mib) / 1024))
    return out, high
