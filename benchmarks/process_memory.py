"""The peak memory of a command and every process it starts (e.g. ``streammix fit`` and its workers).

Usage::

    python benchmarks/process_memory.py [--interval 0.2] -- streammix fit CONFIG --out DIR --overwrite

Runs the command, samples the resident memory (RSS) of its process tree every
``--interval`` seconds (``_common.TreeMemory``: the sum over the processes, shared pages
counted once per process, so it errs high), and prints a JSON line with the peak of that
sum, the command's own process's peak, and the wall time. Run it with
``PYTHONPATH=<worktree>`` to measure another commit's package. The command's output is
discarded; a command that fails stops this script with its exit code.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from _common import TreeMemory, emit, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given (put it after --)")
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with TreeMemory(args.interval, pid=process.pid) as memory:
        _, stderr = process.communicate()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    emit({"machine": machine(), "command": command, "wall_s": round(wall, 1),
          "peak_mb_all_processes": round(memory.peak_mb), "peak_mb_command": round(memory.root_peak_mb)})  # fmt: skip


if __name__ == "__main__":
    main()
