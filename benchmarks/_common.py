"""Shared helpers of the benchmarks: the machine, peak memory, the JSON line, ``--set``."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STREAMMIX_SHARED_DATA", ROOT.parent / "shared" / "data"))


def machine() -> dict:
    """Where the numbers come from."""
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TreeMemory:
    """The peak of the summed resident memory (RSS) of a process (default: this one) and all its
    descendants (a fit's worker processes), sampled every ``interval`` seconds in a thread while the ``with``
    block runs and once more at its end; ``peak_mb`` after it. Pages the processes share (the
    libraries each spawned worker loads) count once per process, so the sum errs high; a peak
    shorter than the interval can be missed.

    Arguments:
        interval: Seconds between samples.
        pid: The process whose tree is sampled (None: this one); ``root_peak_mb`` is its own peak.

    Example:
        >>> import psutil
        >>> before = psutil.Process().memory_info().rss / 2**20
        >>> with TreeMemory() as memory:
        ...     block = b"x" * (100 * 2**20)
        >>> memory.peak_mb - before > 90
        True
    """

    def __init__(self, interval: float = 0.2, pid: int | None = None) -> None:
        self.interval = interval
        self.pid = pid
        self.peak_mb = 0.0
        self.root_peak_mb = 0.0
        self._stop = None
        self._thread = None
        self._error: BaseException | None = None

    def _sample(self, psutil) -> None:
        try:
            root = psutil.Process(self.pid)
            stopping = False
            while True:
                total = 0
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.Error:  # the root has ended (a command run under watch)
                    tree = []
                for process in tree:
                    try:
                        rss = process.memory_info().rss
                    except psutil.Error:  # ended between the listing and the reading
                        continue
                    total += rss
                    if process is root:
                        self.root_peak_mb = max(self.root_peak_mb, rss / 2**20)
                self.peak_mb = max(self.peak_mb, total / 2**20)
                if stopping:
                    return
                stopping = self._stop.wait(self.interval)  # then one last sample
        except BaseException as error:  # reported by __exit__ rather than lost with the thread
            self._error = error

    def __enter__(self) -> TreeMemory:
        import threading

        import psutil

        self.peak_mb, self.root_peak_mb, self._error = 0.0, 0.0, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(psutil,), name="tree-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("TreeMemory: sampling failed") from self._error


def scaling_mock(n: int):
    """The mock field of ``n`` stars the scaling benchmarks fit: 2 % of them (at least 50) in
    the stream, the rest field stars (a :class:`streammix.mock.MockConfig`)."""
    from streammix.mock import MockConfig

    n_stream = max(50, n // 50)
    return MockConfig(n_stream=n_stream, n_background=n - n_stream)


def run_child(script: str, *args: str) -> dict:
    """Run ``script`` with ``args`` in a fresh process (so peak memory is its own)
    and return the JSON object on the last line it prints."""
    import subprocess

    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result, flush=True)
    return result


def emit(summary: dict) -> None:
    """Print the one-line JSON summary last, so runs can be compared between commits."""
    sys.stdout.flush()
    print(json.dumps(summary, default=float))


def parse_sets(items: list[str]) -> list[tuple[list[str], object]]:
    """``--set key.path=value`` items as (keys, YAML value) pairs
    (:func:`streammix.overrides.parse_overrides`, what ``streammix fit --set`` reads)."""
    from streammix.overrides import parse_overrides

    return parse_overrides(items)


def apply_sets(data: dict, sets) -> dict:
    """``data`` (a config as a dict) with the ``--set`` values written in, in place
    (:func:`streammix.overrides.apply_overrides`: a component by its name,
    ``model.components.cocoon.bounds``)."""
    from streammix.overrides import apply_overrides

    return apply_overrides(data, sets)
