"""Timing: the ``job.py`` subprocess runner, the largest-batch-size search, timed runs, and
the throughput formulas that the timing scripts print and the figures plot.

As in arXiv:2502.12300's timing: per preset, the largest batch size that runs (from a start
size doubling until the first out-of-memory failure, then bisecting), then timed steps at that
size, retrying with one less if the timed run runs out of memory. Throughputs (the paper's
main table and its MSE-vs-throughput figure):

- training: ``batch / mean step time`` in images/s;
- inference: ``batch x (T - 2 sr oc)^2 / mean step time`` in output pixels (of one channel)
  per second;

mean step times leave out the first step (compiling, warming up). ``results/timing.json``
keeps, per mode, ``{key: {preset: value}}`` under the keys of :data:`TIMING_KEYS`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import paths_config
import presets
from cli import UserError, non_negative_float, non_negative_int, positive_int, print_table
from eval_geometry import DEFAULT_TARGET_SIZE, output_crop_of, output_side, sr_rate_of
from job import EXIT_OUT_OF_MEMORY
from results_store import Unit, nested_get, read_json, run_units, update_json
from run_layout import timing_path as results_timing_path

JOB_SCRIPT = Path(__file__).resolve().parent / "job.py"
PROBE_STEPS = 5  # steps of a batch-size probe; only whether it runs matters
MODES = ("train", "inference")

TIMING_KEYS = {
    "train": ("largest_train_batch_sizes", "train_step_times", "train_target_sizes"),
    "inference": ("largest_inference_batch_sizes", "inference_step_times", "inference_target_sizes"),
}
"""mode -> keys in timing.json of the largest batch size, the step times and (an addition, for
the throughput of runs at other sizes) the target size T, each ``{preset: value}``."""


# ----------------------------------------------------------------------------------------------
# Throughput


def mean_step_time(step_times: float | Sequence[float]) -> float:
    """Mean time of a step, the first (compiling, warming up) excluded. A single number is a
    mean already (timing.json entries may be one), returned as it is."""
    if isinstance(step_times, (int, float)):
        return float(step_times)
    times = list(step_times)[1:]
    return float(np.mean(times)) if times else float("nan")


def train_throughput(batch_size: int, step_times: float | Sequence[float]) -> float:
    """Training images per second."""
    return batch_size / mean_step_time(step_times)


def inference_throughput(
    batch_size: int,
    step_times: float | Sequence[float],
    output_crop: int,
    target_size: int = DEFAULT_TARGET_SIZE,
    sr_rate: int = 4,
) -> float:
    """Output pixels of one channel per second: ``batch x (T - 2 sr oc)^2 / mean time``."""
    return batch_size * output_side(target_size, sr_rate, output_crop) ** 2 / mean_step_time(step_times)


@dataclasses.dataclass(frozen=True)
class Throughput:
    """One preset's timing in one mode: throughput in images/s (train) or output px/s (inference)."""

    preset: str
    batch_size: int
    mean_step_time: float
    throughput: float


def throughputs(timing: Mapping[str, Any], mode: str) -> list[Throughput]:
    """The timed presets of ``timing`` (the contents of timing.json) in ``mode``, known
    presets only, in table order."""
    size_key, times_key, target_key = TIMING_KEYS[mode]
    rows = []
    for preset, times in nested_get(timing, (times_key,), {}).items():
        size = nested_get(timing, (size_key, preset))
        if size is None or preset not in presets.presets:
            continue
        if mode == "train":
            value = train_throughput(size, times)
        else:
            target = nested_get(timing, (target_key, preset), DEFAULT_TARGET_SIZE)
            value = inference_throughput(size, times, output_crop_of(preset), target, sr_rate_of(preset))
        rows.append(Throughput(preset, int(size), mean_step_time(times), value))
    return sorted(rows, key=lambda row: presets.table_order(row.preset))


# ----------------------------------------------------------------------------------------------
# job.py in a subprocess


@dataclasses.dataclass(frozen=True)
class JobResult:
    returncode: int
    message: str  # the last line job.py printed (its one-line error on failure)


JobRunner = Callable[[list[str]], JobResult]
"""Runs ``job.py`` with ``name=value`` arguments."""


def subprocess_job_runner(memory_limit_gb: float | None = None) -> JobRunner:
    """Run ``job.py`` in a fresh Python process (so each try starts with free memory), its
    address space limited to ``memory_limit_gb`` when given (CPU runs: an allocation beyond
    it fails with out of memory instead of swapping or waking the OOM killer; GPU memory is
    limited by the device)."""

    def limit_memory() -> None:  # runs in the child between fork and exec
        size = int(memory_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    def run(args: list[str]) -> JobResult:
        completed = subprocess.run(
            [sys.executable, str(JOB_SCRIPT), *args],
            capture_output=True,
            text=True,
            preexec_fn=None if memory_limit_gb is None else limit_memory,
        )
        lines = [line for line in (completed.stderr + completed.stdout).splitlines() if line.strip()]
        errors = [line for line in completed.stderr.splitlines() if line.startswith("job.py:")]
        return JobResult(completed.returncode, (errors or lines or [""])[-1].strip())

    return run


@dataclasses.dataclass(frozen=True)
class TimingOptions:
    """A timing evaluation: ``mode`` "train" or "inference", and its caps."""

    mode: str
    start_batch_size: int
    max_batch_size: int
    steps: int
    cooldown: float
    target_size: int = DEFAULT_TARGET_SIZE
    seed: int = 0
    train_data_path: str | None = None  # the images trained on (the test set), train mode


def timing_job_args(
    preset: str,
    batch_size: int,
    steps: int,
    options: TimingOptions,
    cooldown: float = 0.0,
    timing_filename: str | None = None,
) -> list[str]:
    """The ``job.py`` arguments of one timing run (or probe, without ``timing_filename``)."""
    t = options.target_size
    args = [f"preset={preset}", f"seed={options.seed}", f"batch_size={batch_size}", f"image_shape=[3,{t},{t}]",
            f"cooldown={cooldown}"]  # fmt: skip
    if options.mode == "train":
        args += ["save=False", f"train_steps={steps}", f"train_data_path={options.train_data_path}"]
    else:
        args += [f"inference_steps={steps}"]
    if timing_filename is not None:
        args.append(f"timing_filename={timing_filename}")
    return args


def _ran(result: JobResult, what: str) -> bool:
    """True if the job ran, False if it ran out of memory; ``UserError`` for other failures."""
    if result.returncode == 0:
        return True
    if result.returncode == EXIT_OUT_OF_MEMORY:
        return False
    raise UserError(f"{what}: job.py failed with exit status {result.returncode}: {result.message}")


# ----------------------------------------------------------------------------------------------
# Search and timed runs


def largest_batch_size(runs: Callable[[int], bool], start: int, maximum: int) -> int:
    """The largest batch size ``b <= maximum`` for which ``runs(b)``: from ``start`` doubling
    until the first failure (or ``maximum``), then bisecting between the last success and
    that failure (down from ``start`` if it fails)."""
    good, bad, size = 0, None, min(start, maximum)
    while bad is None:
        if not runs(size):
            bad = size
        elif size >= maximum:
            return size
        else:
            good, size = size, min(2 * size, maximum)
    while bad - good > 1:
        middle = (good + bad) // 2
        if runs(middle):
            good = middle
        else:
            bad = middle
    if good == 0:
        raise UserError("even batch size 1 runs out of memory")
    return good


def timed_job(preset: str, batch_size: int, options: TimingOptions, runner: JobRunner) -> tuple[int, list[float]]:
    """``(batch_size, step_times)`` of ``options.steps`` timed steps (after the cooldown),
    retrying with one less when it runs out of memory."""
    with tempfile.TemporaryDirectory(prefix="timing-") as folder:
        timing_file = os.path.join(folder, "timing.json")
        while batch_size >= 1:
            args = timing_job_args(preset, batch_size, options.steps, options, options.cooldown, timing_file)
            if _ran(runner(args), f"{preset} timed {options.mode} run at batch size {batch_size}"):
                try:
                    return batch_size, [float(t) for t in read_json(timing_file)["step_times"]]
                except (KeyError, TypeError, ValueError) as e:
                    raise UserError(f"{preset}: job.py wrote no step times to {timing_file} ({e!r})") from e
            batch_size -= 1
    raise UserError(f"{preset}: the timed {options.mode} run ran out of memory even at batch size 1")


def timing_units(
    options: TimingOptions, preset_names: Sequence[str], timing_path: Path, runner: JobRunner
) -> list[Unit]:
    """Two units per preset, each stored in ``timing_path`` when done: the batch-size search,
    then the timed run at the size found."""
    size_key, times_key, target_key = TIMING_KEYS[options.mode]

    def search(preset: str) -> None:
        def runs(batch_size: int) -> bool:
            args = timing_job_args(preset, batch_size, PROBE_STEPS, options)
            return _ran(runner(args), f"{preset} {options.mode} probe at batch size {batch_size}")

        if options.start_batch_size >= options.max_batch_size:
            # Nothing to search (a fixed size, e.g. a smoke run): the timed run tries it.
            size = options.max_batch_size
        else:
            try:
                size = largest_batch_size(runs, options.start_batch_size, options.max_batch_size)
            except UserError as e:
                raise UserError(f"{preset}: {e}") from None
        update_json(timing_path, {(size_key, preset): size, (target_key, preset): options.target_size})

    def timed(preset: str) -> None:
        size, times = timed_job(preset, nested_get(read_json(timing_path), (size_key, preset)), options, runner)
        update_json(timing_path, {(size_key, preset): size, (times_key, preset): times})

    def stored(key: str, preset: str) -> Callable[[], bool]:
        return lambda: nested_get(read_json(timing_path), (key, preset)) is not None

    units = []
    for preset in preset_names:
        units.append(Unit(f"{preset} batch size", stored(size_key, preset), lambda p=preset: search(p)))
        units.append(Unit(f"{preset} timed", stored(times_key, preset), lambda p=preset: timed(p)))
    return units


# ----------------------------------------------------------------------------------------------
# The two timing scripts


def add_timing_arguments(parser: argparse.ArgumentParser, start: int, steps: int, cooldown: float) -> None:
    """The options of the two timing scripts; defaults are the paper's."""
    paths = paths_config.get_paths()
    parser.add_argument("--results-folder", default=paths["results_folder"], help="default: %(default)s")
    parser.add_argument(
        "--presets",
        nargs="+",
        type=presets.preset_name,
        default=list(presets.presets),
        metavar="PRESET",
        help="presets to time (default: all 22)",
    )
    parser.add_argument("--start-batch-size", type=positive_int, default=start, help="default: %(default)s")
    parser.add_argument(
        "--max-batch-size", type=positive_int, default=2**20, help="cap of the search (default: %(default)s)"
    )
    parser.add_argument("--steps", type=positive_int, default=steps, help="timed steps (default: %(default)s)")
    parser.add_argument(
        "--cooldown",
        type=non_negative_float,
        default=cooldown,
        help="seconds of sleep before the timed run (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-limit-gb",
        type=non_negative_float,
        help="address-space limit of each job.py process (CPU runs; default: none)",
    )
    parser.add_argument(
        "--target-size",
        type=positive_int,
        default=DEFAULT_TARGET_SIZE,
        help="target size T: image_shape [3,T,T], inputs T/4 (default: %(default)s)",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="model seed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="time presets that are stored already again")


def run_timing(options: TimingOptions, args: argparse.Namespace, runner: JobRunner | None = None) -> None:
    """Search, time and store every preset of ``args.presets``, then print the summary."""
    sr_rate = presets.hpars["sr_rate"]
    if options.target_size % sr_rate:
        raise UserError(f"--target-size {options.target_size} must be a multiple of the sr rate {sr_rate}")
    path = results_timing_path(args.results_folder)
    runner = subprocess_job_runner(args.memory_limit_gb) if runner is None else runner
    run_units(timing_units(options, args.presets, path, runner), f"{options.mode} timing", args.overwrite)
    unit = "images/s" if options.mode == "train" else "output px/s"
    rows = [(t.preset, t.batch_size, t.mean_step_time, t.throughput)
            for t in throughputs(read_json(path), options.mode) if t.preset in args.presets]  # fmt: skip
    print_table(["preset", "largest batch", "mean step s", f"throughput {unit}"], rows)
