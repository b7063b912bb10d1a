"""Train one preset and seed: ``python job.py preset=lp2x3 seed=0 [name=value ...]``.

Names (those of the paper's code; docs/training.md): seed, resume_checkpoint, folder,
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

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import cli
from cli import UsageError
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

EXIT_ERROR, EXIT_USAGE, EXIT_OUT_OF_MEMORY = cli.EXIT_ERROR, cli.EXIT_USAGE, 3
USAGE = "usage: python job.py preset=NAME [seed=N] [name=value ...]"
# UsageError (a bad command line; exit status 2) is cli's, imported above: slurm_train.py and
# reproduce.py catch it from job.parse_args as job.UsageError.


def _checked(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A ``cli`` argparse type whose complaint is a ``UsageError``."""

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except argparse.ArgumentTypeError as e:
            raise UsageError(str(e)) from None

    return checked


def _int(minimum: int) -> Callable[[str], int]:
    return _checked(lambda text: cli.int_at_least(text, minimum))


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


PARSERS: dict[str, Callable[[str], Any]] = {
    "preset": _checked(cli.preset_name),
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
    "cooldown": _checked(cli.non_negative_float),
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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    import paths_config  # the environment (LPPAD_*) is read here, at the command line only

    def body() -> int:
        try:
            job = job_hpars(parse_args(argv), paths_config.get_paths())
        except UsageError as e:
            raise UsageError(f"{e} ({USAGE})") from None
        import train_utils  # heavy (JAX); imported only to run a job

        try:
            train_utils.run_job(*split_hpars(job))
        except train_utils.TrainingInterrupted as e:
            # The shell convention for a process ended by a signal, which Slurm scripts test for.
            print(f"job.py: {e}; checkpoint written", file=sys.stderr)
            return 128 + e.signum
        except Exception as e:
            if isinstance(e, cli.UserError) or not _is_out_of_memory(e):
                raise  # run_script: a UserError (JobError, ...) is one line and status 1; the rest a bug
            print(f"job.py: out of memory: {cli.one_line(e)[:300]}", file=sys.stderr)
            return EXIT_OUT_OF_MEMORY
        return 0

    return cli.run_script("job.py", body)


if __name__ == "__main__":
    sys.exit(main())
