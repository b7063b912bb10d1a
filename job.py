"""Train one preset and seed: ``python job.py preset=lp2x3 seed=0 [name=value ...]``.

Names (those of the paper's code; README "Training"): seed, resume_checkpoint, folder,
train_data_path, test_data_path, train_steps, batch_size (an int, or ``max`` for the largest
size found by the timing evaluations), protect_existing, save (True/False), checkpoint_steps
(``[1,2,3]``), timing_filename, inference_steps, inference_data_path, cooldown; and for smoke
runs image_shape (``[3,96,96]``) and test_image_save_interval. ``None`` clears an optional
value. ``resume_checkpoint=-1`` resumes from the newest checkpoint that fully loads, and
stops without changing anything when checkpoints exist but none does.

Exit status: 0 done, 1 a clear one-line error (missing data, existing run folder,
diverged training, ...), 2 a bad command line, 3 out of memory, 128 + N when signal N
(SIGUSR1, SIGTERM) stopped training after writing a checkpoint of the current step.

Importing this module has no side effects; it re-exports the hyperparameters and presets of
``presets`` for scripts that look for them here.
"""

import json
import sys
from collections.abc import Callable
from typing import Any

from presets import CHECKPOINT_STEPS, REPLACE, default_hpars, get_preset_hpars, hpars, merge_hpars, presets, split_hpars

__all__ = [
    "CHECKPOINT_STEPS",
    "REPLACE",
    "default_hpars",
    "get_preset_hpars",
    "hpars",
    "merge_hpars",
    "presets",
    "parse_args",
    "main",
]

EXIT_ERROR, EXIT_USAGE, EXIT_OUT_OF_MEMORY = 1, 2, 3
USAGE = "usage: python job.py preset=NAME [seed=N] [name=value ...]"


class UsageError(ValueError):
    """A bad command line."""


def _int(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise UsageError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def _float(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"expected a number, got {text!r}") from None
        if not value >= minimum or value == float("inf"):
            raise UsageError(f"expected a finite number >= {minimum}, got {text}")
        return value

    return parse


def _bool(text: str) -> bool:
    values = {"true": True, "false": False}
    if text.lower() not in values:
        raise UsageError(f"expected True or False, got {text!r}")
    return values[text.lower()]


def _text(text: str) -> str:
    if not text:
        raise UsageError("expected a non-empty value")
    return text


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: None if text == "None" else parse(text)


def _int_list(text: str) -> list[int]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise UsageError(f"expected a list of integers like [1,2,3], got {text!r}")
    if any(v < 0 for v in value):
        raise UsageError(f"expected non-negative integers, got {text}")
    return value


def _image_shape(text: str) -> list[int]:
    shape = _int_list(text)
    if len(shape) != 3 or shape[0] != 3 or min(shape) < 1:
        raise UsageError(f"expected [3,height,width] with positive sizes, got {text!r}")
    return shape


def _batch_size(text: str) -> int | str:
    return "max" if text == "max" else _int(1)(text)


def _preset(text: str) -> str:
    if text not in presets:
        raise UsageError(f"unknown preset {text!r}; choose one of {', '.join(presets)}")
    return text


PARSERS: dict[str, Callable[[str], Any]] = {
    "preset": _preset,
    "seed": _int(0),
    "resume_checkpoint": _optional(_int(-1)),
    "folder": _text,
    "train_data_path": _text,
    "test_data_path": _text,
    "train_steps": _int(0),
    "batch_size": _batch_size,
    "protect_existing": _bool,
    "save": _bool,
    "checkpoint_steps": _int_list,
    "timing_filename": _optional(_text),
    "inference_steps": _optional(_int(1)),
    "inference_data_path": _optional(_text),
    "cooldown": _float(0.0),
    "image_shape": _image_shape,
    "test_image_save_interval": _int(0),
}


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``name=value`` arguments -> ``{name: value}``; ``UsageError`` for anything malformed."""
    values: dict[str, Any] = {}
    for arg in argv:
        name, sep, text = arg.partition("=")
        if not sep:
            raise UsageError(f"argument {arg!r} is not of the form name=value")
        if name not in PARSERS:
            raise UsageError(f"unknown name {name!r}; accepted: {', '.join(PARSERS)}")
        if name in values:
            raise UsageError(f"{name} given twice")
        try:
            values[name] = PARSERS[name](text)
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None
    if "preset" not in values:
        raise UsageError("missing preset=NAME")
    return values


def job_hpars(args: dict[str, Any], paths: dict | None = None) -> dict:
    """The hyperparameters of a parsed command line; folders from ``paths`` (default: the
    default folders; ``main`` passes ``paths_config.get_paths()``)."""
    args = dict(args)
    job = get_preset_hpars(args.pop("preset"), args.pop("seed", None), paths=paths)
    job.update(args)
    return job


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or "RESOURCE_EXHAUSTED" in str(error) or "out of memory" in str(error).lower()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    import paths_config  # the environment (LPPAD_*) is read here, at the command line only

    try:
        job = job_hpars(parse_args(argv), paths_config.get_paths())
    except UsageError as e:
        print(f"job.py: error: {e} ({USAGE})", file=sys.stderr)
        return EXIT_USAGE
    import train_utils  # heavy (JAX); imported only to run a job

    try:
        train_utils.run_job(*split_hpars(job))
    except train_utils.JobError as e:
        print(f"job.py: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except train_utils.TrainingInterrupted as e:
        # The shell convention for a process ended by a signal, which Slurm scripts test for.
        print(f"job.py: {e}; checkpoint written", file=sys.stderr)
        return 128 + e.signum
    except Exception as e:
        if not _is_out_of_memory(e):
            raise
        print(f"job.py: out of memory: {_one_line(e)[:300]}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    return 0


if __name__ == "__main__":
    sys.exit(main())
