"""Timing helpers: a runner protocol, and interleaved repetitions so that drifts in
the machine's load hit every implementation alike."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable

import numpy as np
from tqdm.auto import tqdm


@dataclasses.dataclass
class Runner:
    """``warm_up()`` once (compilation), then ``run() -> float`` timed repeatedly.

    ``run`` trains one epoch (returning its mean loss) or evaluates (returning a
    mean log p(x)) and blocks until its result is ready. ``params()``, where
    given, returns the current parameters. ``examples``, where given, is the number
    of examples one ``run()`` trains on (a shortened epoch); None: the whole epoch.
    ``compiled()``, where given, returns the compiled program ``run()`` calls (after ``warm_up``).
    """

    warm_up: Callable[[], None]
    run: Callable[[], float]
    params: Callable[[], object] | None = None
    examples: int | None = None
    compiled: Callable[[], object] | None = None



# The limits past which a benchmark flags its timings invalid (DESIGN.md): the 1-minute load
# average before the run, and the cores other processes keep busy during any timed block.
MAX_LOAD, MAX_OTHER_CORES = 1.5, 0.2

def time_interleaved(runners: dict[str, Runner], *, repeats: int, progress: bool = True
                     ) -> dict[str, dict]:
    """Warms every runner up, then times ``repeats`` rounds of one ``run()`` each, in turn.

    Returns:
      Per name: ``seconds`` (the list of wall times), ``median_seconds``,
      ``warm_up_seconds``, ``last_value`` (what the last ``run()`` returned) and
      ``other_processes_cores`` (cores other processes kept busy during the timed
      rounds, the same for every name; None where it cannot be measured).
    """
    results = {}
    for name, runner in tqdm(runners.items(), desc="warm-up", disable=not progress, leave=False):
        start = time.perf_counter()
        runner.warm_up()
        results[name] = {"warm_up_seconds": time.perf_counter() - start, "seconds": []}
    before = cpu_snapshot()
    bar = tqdm(total=repeats * len(runners), desc="timing", disable=not progress, leave=False)
    for _ in range(repeats):
        for name, runner in runners.items():
            bar.set_postfix_str(name)
            start = time.perf_counter()
            results[name]["last_value"] = runner.run()
            results[name]["seconds"].append(time.perf_counter() - start)
            bar.update()
    bar.close()
    after = cpu_snapshot()
    others = other_processes_cores(before, after) if before and after else None
    for result in results.values():
        result["median_seconds"] = float(np.median(result["seconds"]))
        result["other_processes_cores"] = others
    return results


def median_seconds(fn: Callable[[], object], *, repeats: int, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` over ``repeats`` timed calls after one warm-up call.

    Calls are grouped so that each timed group lasts at least ``min_seconds``;
    ``fn`` must block until its result is ready.
    """
    fn()
    start = time.perf_counter()
    fn()
    per_call = max(time.perf_counter() - start, 1e-9)
    calls = max(1, int(np.ceil(min_seconds / per_call)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return float(np.median(times))


def cpu_snapshot() -> dict | None:
    """Wall clock, the machine's busy CPU seconds and the CPU seconds of this process and its
    finished (waited-for) children, or None off Linux.

    The difference of two snapshots tells how many cores *other* processes kept busy
    in between (:func:`other_processes_cores`). The load average cannot: on 2 cores a
    benchmark's own two threads alone hold it near 2.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    own = os.times()
    return {"wall": time.monotonic(),
            "machine_busy_seconds": (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
            "own_seconds": own.user + own.system + own.children_user + own.children_system}


def other_processes_cores(start: dict, end: dict) -> float:
    """Mean number of cores busy with other processes between two :func:`cpu_snapshot` s."""
    busy = end["machine_busy_seconds"] - start["machine_busy_seconds"]
    own = end["own_seconds"] - start["own_seconds"]
    return max(0.0, busy - own) / max(end["wall"] - start["wall"], 1e-9)
