"""Run the paper's whole workflow in order, skipping what is already done.

    python reproduce.py [--presets lp2x3,repl] [--seeds 0-11] [--train-steps N]
                        [--only STEP,...] [--skip STEP,...] [--dry-run] [--yes] [-- name=value ...]
    python reproduce.py --smoke [--fast] [--smoke-root smoke]

Steps, in order (each a script of this repository, run as a subprocess):

1. ``download``: the dataset via Metax (``download_dataset.py``),
2. ``convert``: ``.nc`` files to ``train_data.npy`` / ``test_data.npy`` (``make_dataset_npys.py``),
3. ``train``: ``job.py preset=P seed=S resume_checkpoint=-1`` for every preset and seed,
4. ``export``: final weights and loss histories to ``results/trained_models`` (``export_trained_models.py``),
5. ``eval_mse``, ``eval_train_time``, ``eval_inference_time``, ``eval_layer_nmse``: the evaluations,
6. ``bilinear_test``: the check that bilinear upscaling pads by replication,
7. ``notebook``: ``make_figures_and_tables.ipynb``, executed headless; figures and tables in ``plots/``.

Finished work is skipped: download and conversion when the .npy files exist, a training run
that has its final checkpoint, an exported model or a diverged loss (a diverged run is a
result, shown in the success table); the exports and evaluations skip what they stored
before, and an interrupted step continues where it stopped. Without ``--presets`` /
``--seeds`` the paper's plan runs: every preset with seeds 0..11 (0..2 for extr1, extr2 and
lp6x7). Names after ``--`` go to every ``job.py`` training run (e.g. ``batch_size=32``).
Folders come from ``paths_config`` (``LPPAD_*`` environment variables move them), read once
in ``main``; the steps get them as the workflow's paths and the scripts as their environment.

``--smoke`` runs everything offline on a CPU at toy scale in its own folder tree
(``smoke/``): synthetic .nc files served by a local Metax stand-in, a small split of small
images, short training of six presets with two seeds, every evaluation with small caps, and
the notebook, which must write every figure. ``--fast`` shrinks it to two presets, one seed
and ten steps (CI). At full scale, a run that would download the dataset or train first says
so and asks (at a terminal) or needs ``--yes``. Exit status: 0 done, 1 a step failed, 2 a bad
command line or an unconfirmed full-scale run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import catalog
import cli
import paths_config
import presets
import run_layout
from presets import LAYER_NMSE_PRESETS

REPO = Path(__file__).resolve().parent
NOTEBOOK = REPO / "make_figures_and_tables.ipynb"
STEPS = (
    "download",
    "convert",
    "train",
    "export",
    "eval_mse",
    "eval_train_time",
    "eval_inference_time",
    "eval_layer_nmse",
    "bilinear_test",
    "superresolve",
    "notebook",
)
# job.py names that this script sets itself.
RESERVED_JOB_NAMES = ("preset", "seed", "resume_checkpoint", "folder", "train_steps")
SMOKE_FOLDERS = {
    "temp_folder": "temp",
    "dataset_folder": "dataset",
    "train_runs_folder": "runs",
    "results_folder": "results",
    "graphs_folder": "plots",
}
FOLDER_KEYS = (*SMOKE_FOLDERS, "trained_models_folder")


@dataclasses.dataclass(frozen=True)
class Scale:
    """Everything that differs between the paper's workflow and a toy run of it."""

    presets: tuple[str, ...] | None = None  # None: the paper's plan
    seeds: tuple[int, ...] | None = None
    train_steps: int | None = None  # None: the paper's 1.5M
    job_args: tuple[str, ...] = ()
    synthetic_files: int = 0  # > 0: make this many synthetic .nc files and serve them locally
    synthetic_size: int = 128  # their height and width
    convert_args: tuple[str, ...] = ()
    model_eval_args: tuple[str, ...] = ()
    train_time_args: tuple[str, ...] = ()
    inference_time_args: tuple[str, ...] = ()


PAPER = Scale()
# Toy scale: 128x128 images, 64x64 training crops (16x16 inputs, so oc 5 still leaves 24x24
# outputs), batch 4. Timing uses the training shape and batch size, so its job.py runs find
# their compiled steps in the compilation cache that the training runs filled.
_SMOKE_TRAINING = ("image_shape=[3,64,64]", "batch_size=4")
_SMOKE_SIZE = 128
SMOKE = Scale(
    presets=("lp1x1cs", "lp2x3", "repl", "zero-repl", "zero_oc1", "lp2x3_oc5"),
    seeds=(0, 1),
    train_steps=30,
    job_args=_SMOKE_TRAINING + ("test_image_save_interval=10", "checkpoint_steps=[10,20,30]"),
    synthetic_files=48,
    synthetic_size=_SMOKE_SIZE,
    convert_args=("--num-train", "40", "--num-test", "8", "--image-size", str(_SMOKE_SIZE), "--no-progress"),
    model_eval_args=("--num-images", "8", "--batch-size", "8"),
    train_time_args=("--start-batch-size", "4", "--max-batch-size", "4", "--steps", "3", "--target-size", "64"),
    inference_time_args=(
        "--start-batch-size",
        "4",
        "--max-batch-size",
        "4",
        "--steps",
        "3",
        "--cooldown",
        "0",
        "--target-size",
        "64",
    ),
)
FAST_SMOKE = dataclasses.replace(
    SMOKE,
    presets=("zero-repl", "lp2x3_oc5"),
    seeds=(0,),
    train_steps=10,
    job_args=_SMOKE_TRAINING + ("test_image_save_interval=5", "checkpoint_steps=[5,10]"),
)


class StepFailed(cli.UserError):
    """A step of the workflow failed; the message says which and why (exit status 1)."""


@dataclasses.dataclass
class Workflow:
    """What to run, and how."""

    scale: Scale
    runs: list[tuple[str, int]]
    presets: list[str]
    seeds: list[int] | None  # None: whatever each step finds
    train_steps: int
    job_args: list[str]
    env: dict[str, str]
    dry_run: bool = False
    confirmed: bool = False  # --yes: download and train at full scale without asking

    @property
    def paths(self) -> dict[str, str]:
        return paths_config.get_paths(self.env)


# ----------------------------------------------------------------------------------------------
# Running commands


def run_command(workflow: Workflow, args: Sequence[str | Path]) -> int:
    """Run ``args`` with the workflow's environment (printed first); its exit status."""
    print("$ " + shlex.join(str(a) for a in args), flush=True)
    if workflow.dry_run:
        return 0
    return subprocess.run([str(a) for a in args], env=workflow.env).returncode


def run_script(workflow: Workflow, script: str, *args: str) -> None:
    """Run one of this repository's scripts; ``StepFailed`` if it fails."""
    status = run_command(workflow, [sys.executable, REPO / script, *args])
    if status != 0:
        raise StepFailed(f"{script} failed with exit status {status}")


# ----------------------------------------------------------------------------------------------
# Steps


def data_files(workflow: Workflow) -> list[Path]:
    return [Path(paths_config.train_data_path(workflow.paths)), Path(paths_config.test_data_path(workflow.paths))]


@contextlib.contextmanager
def metax_source(workflow: Workflow) -> Iterator[list[str]]:
    """The ``download_dataset.py`` options for the workflow's source: the real Metax, or for
    toy runs a local stand-in serving synthetic .nc files (made once, in two zips)."""
    if not workflow.scale.synthetic_files:
        yield []
        return
    import make_synthetic_dataset
    from metax_stand_in import serve_stand_in

    source = Path(workflow.paths["temp_folder"]) / "synthetic_source"
    count = workflow.scale.synthetic_files
    halves = {f"part{i + 1}.zip": range(i * count // 2, (i + 1) * count // 2) for i in range(2)}
    if not all((source / name).exists() for name in halves):
        print(f"making {count} synthetic .nc files in {source}")
        if not workflow.dry_run:
            files = make_synthetic_dataset.make_synthetic_dataset(
                source / "nc", count, workflow.scale.synthetic_size, seed=0, progress=False
            )
            for name, numbers in halves.items():
                make_synthetic_dataset.zip_files([files[n] for n in numbers], source / name)
    if workflow.dry_run:
        yield ["--metax-url", "http://127.0.0.1:PORT"]
        return
    with serve_stand_in({name: source / name for name in halves}) as stand_in:
        yield ["--metax-url", stand_in.metax_url, "--retry-wait", "0.1"]


def step_download(workflow: Workflow) -> None:
    if all(path.exists() for path in data_files(workflow)):
        print("skipped: the converted dataset exists")
        return
    with metax_source(workflow) as source_args:
        run_script(workflow, "download_dataset.py", *source_args)


def step_convert(workflow: Workflow) -> None:
    if all(path.exists() for path in data_files(workflow)):
        print("skipped: the converted dataset exists")
        return
    run_script(workflow, "make_dataset_npys.py", *workflow.scale.convert_args)


def training_skip_reason(workflow: Workflow, preset: str, seed: int) -> str | None:
    """Why a training run needs no work, or None. A run folder decides; without one, a model
    in the trained-models folder (a published one) counts as done. A run whose trainer
    recorded the outcome "diverged" is done too (a result); any other outcome is retried."""
    runs_folder = workflow.paths["train_runs_folder"]
    folders = catalog.run_folder_candidates(runs_folder, preset, seed)
    if not any(folder.is_dir() for folder in folders):
        exported = run_layout.TrainedModel(preset, seed, Path(workflow.paths["trained_models_folder"])).weights_path
        return "exported model exists" if exported.exists() else None
    if catalog.is_run_finished(runs_folder, preset, seed, workflow.train_steps):
        return "finished"
    for folder in folders:
        outcome = run_layout.read_outcome(folder)
        if outcome is not None and outcome.kind == "diverged":
            return f"diverged earlier ({outcome.message})"
    return None


def step_train(workflow: Workflow) -> None:
    for number, (preset, seed) in enumerate(workflow.runs, 1):
        label = f"[{number}/{len(workflow.runs)}] {preset} seed {seed}"
        reason = training_skip_reason(workflow, preset, seed)
        if reason:
            print(f"{label}: skipped, {reason}")
            continue
        print(f"{label}: training", flush=True)
        args = [
            f"preset={preset}",
            f"seed={seed}",
            "resume_checkpoint=-1",
            f"train_steps={workflow.train_steps}",
            *workflow.job_args,
        ]
        status = run_command(workflow, [sys.executable, REPO / "job.py", *args])
        if status != 0 and not training_skip_reason(workflow, preset, seed):
            raise StepFailed(f"job.py {preset} seed {seed} failed with exit status {status}")
        if status != 0:
            print(f"{label}: diverged; its histories are exported and it counts as a failed run")


def _selection_args(workflow: Workflow, presets_: Sequence[str] | None = None) -> list[str]:
    args = ["--presets", *(workflow.presets if presets_ is None else presets_)]
    return args + (["--seeds", *map(str, workflow.seeds)] if workflow.seeds is not None else [])


def step_export(workflow: Workflow) -> None:
    run_script(workflow, "export_trained_models.py", *_selection_args(workflow))


def step_eval_mse(workflow: Workflow) -> None:
    run_script(workflow, "eval_mse.py", *_selection_args(workflow), *workflow.scale.model_eval_args)


def step_eval_train_time(workflow: Workflow) -> None:
    run_script(workflow, "eval_train_time.py", "--presets", *workflow.presets, *workflow.scale.train_time_args)


def step_eval_inference_time(workflow: Workflow) -> None:
    run_script(workflow, "eval_inference_time.py", "--presets", *workflow.presets, *workflow.scale.inference_time_args)


def step_eval_layer_nmse(workflow: Workflow) -> None:
    chosen = [p for p in LAYER_NMSE_PRESETS if p in workflow.presets]
    if not chosen:
        print(f"skipped: needs models of {' or '.join(LAYER_NMSE_PRESETS)}")
        return
    run_script(workflow, "eval_layer_nmse.py", *_selection_args(workflow, chosen), *workflow.scale.model_eval_args)


def step_bilinear_test(workflow: Workflow) -> None:
    run_script(workflow, "bilinear_test.py")


def step_superresolve(workflow: Workflow, presets_: Sequence[str] = ("zero-repl", "repl", "lp2x3")) -> None:
    """superresolve.py on a synthetic georeferenced 96x96 scene in 32x32 tiles with each of
    ``presets_``'s models (lowest seed), then the figure of |tiled − untiled| with the seam deviations."""
    chosen = [p for p in presets_ if p in workflow.presets]
    if not chosen:
        print(f"skipped: needs models of {' or '.join(presets_)}")
        return
    folder, models = (
        Path(workflow.paths["results_folder"]) / "superresolve",
        Path(workflow.paths["trained_models_folder"]),
    )
    if not workflow.dry_run:
        import make_synthetic_dataset

        folder.mkdir(parents=True, exist_ok=True)
        make_synthetic_dataset.make_scene(folder / "scene.tif", 96)
    for preset in chosen:
        run_script(
            workflow,
            "superresolve.py",
            str(folder / "scene.tif"),
            str(folder / f"{preset}.tif"),
            "--model",
            str(run_layout.TrainedModel(preset, min(workflow.seeds or [0]), models).weights_path),
            "--tile-size",
            "32",
            "--overwrite",
            "--no-progress",
            "--compare-untiled",
            "--compare-output",
            str(folder / f"{preset}_seams.npz"),
        )
    if not workflow.dry_run:
        import figures

        figures.setup_matplotlib()
        written = figures.draw_superresolve_seams(
            [folder / f"{p}_seams.npz" for p in chosen], Path(workflow.paths["graphs_folder"])
        )
        print(f"wrote {', '.join(map(str, written))}")


def step_notebook(workflow: Workflow) -> None:
    """Execute the notebook headless; its executed copy goes next to the figures."""
    graphs = Path(workflow.paths["graphs_folder"])
    status = run_command(
        workflow,
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--execute",
            "--to",
            "notebook",
            "--ExecutePreprocessor.timeout=-1",
            "--output-dir",
            graphs,
            NOTEBOOK,
        ],
    )
    if status != 0:
        raise StepFailed(f"executing {NOTEBOOK.name} failed with exit status {status}")
    if workflow.dry_run:
        return
    # The reasons are in the executed copy only; say them here too, where the run is watched.
    skipped = notebook_skips(graphs / NOTEBOOK.name)
    for line in skipped:
        print(f"notebook: {line}")
    if skipped and workflow.scale.synthetic_files:
        raise StepFailed("the smoke run must make every figure and table, but the notebook " + "; ".join(skipped))
    print(
        f"notebook: {'all figures and tables made' if not skipped else f'{len(skipped)} skipped'}; "
        f"the executed copy is {graphs / NOTEBOOK.name}"
    )


def notebook_skips(executed: Path) -> list[str]:
    """The "skipped ..." lines that an executed notebook printed."""
    notebook = json.loads(executed.read_text(encoding="utf-8"))
    lines = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            lines += [
                line
                for line in ("".join(text) if isinstance(text, list) else text).splitlines()
                if line.startswith("skipped")
            ]
    return lines


STEP_FUNCTIONS: dict[str, Callable[[Workflow], None]] = {
    "download": step_download,
    "convert": step_convert,
    "train": step_train,
    "export": step_export,
    "eval_mse": step_eval_mse,
    "eval_train_time": step_eval_train_time,
    "eval_inference_time": step_eval_inference_time,
    "eval_layer_nmse": step_eval_layer_nmse,
    "bilinear_test": step_bilinear_test,
    "superresolve": step_superresolve,
    "notebook": step_notebook,
}


# ----------------------------------------------------------------------------------------------
# Command line


def smoke_env(root: Path) -> dict[str, str]:
    """The environment of a smoke run: every folder under ``root``, a persistent compilation
    cache (the runs of a preset share their compiled steps), the CPU, and Jupyter's and
    matplotlib's state files under ``root`` too (CI may have no writable home folder)."""
    env = {f"{paths_config.ENV_PREFIX}{key.upper()}": str(root / name) for key, name in SMOKE_FOLDERS.items()}
    env.update(
        {
            "JAX_PLATFORMS": "cpu",
            "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
            "JUPYTER_RUNTIME_DIR": str(root / "jupyter_runtime"),
            "IPYTHONDIR": str(root / "ipython"),
            "MPLCONFIGDIR": str(root / "matplotlib"),
        }
    )
    return env


def _step_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STEPS]
    if unknown or not names:
        raise cli.UsageError(f"unknown step(s) {', '.join(unknown) or repr(text)}; steps: {', '.join(STEPS)}")
    return names


def make_parser() -> argparse.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="reproduce.py",
        description="Run the paper's workflow in order, skipping finished work.",
        epilog=f"Steps: {', '.join(STEPS)}. Names after -- go to every job.py training run, e.g. -- batch_size=32.",
    )
    parser.add_argument("--presets", type=presets.preset_list, help="comma-separated presets, or 'all' (default: all)")
    parser.add_argument(
        "--seeds", type=presets.seed_list, help="seeds like 0-11 or 0,3,5 (default: 0-11; 0-2 for extr1, extr2, lp6x7)"
    )
    parser.add_argument(
        "--train-steps", type=cli.positive_int, help="training steps per run (default: the paper's 1,500,000)"
    )
    parser.add_argument("--only", help="comma-separated steps to run (default: all)")
    parser.add_argument("--skip", help="comma-separated steps to leave out")
    parser.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    parser.add_argument(
        "--yes",
        action="store_true",
        help="download the dataset and train at full scale without asking (needed without a terminal)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a toy run of everything, offline on a CPU, in --smoke-root"
    )
    parser.add_argument("--fast", action="store_true", help="with --smoke: two presets, one seed, ten steps")
    parser.add_argument("--smoke-root", default="smoke", help="folder of the smoke run (default: %(default)s)")
    return parser


def parse_command_line(argv: Sequence[str]) -> tuple[Workflow, list[str]]:
    """The workflow and the steps to run; ``UsageError`` for a bad command line."""
    argv = list(argv)
    job_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, job_args = argv[:split], argv[split + 1 :]
    args = make_parser().parse_args(argv)
    if args.fast and not args.smoke:
        raise cli.UsageError("--fast needs --smoke")
    scale = (FAST_SMOKE if args.fast else SMOKE) if args.smoke else PAPER
    chosen_presets = args.presets or scale.presets
    chosen_seeds = args.seeds or scale.seeds
    train_steps = args.train_steps if args.train_steps is not None else scale.train_steps
    if train_steps is None:
        train_steps = presets.hpars["train_steps"]
    for arg in job_args:
        if arg.partition("=")[0] in RESERVED_JOB_NAMES:
            raise cli.UsageError(f"{arg!r} after --: reproduce.py sets {', '.join(RESERVED_JOB_NAMES)} itself")
    import job  # no side effects; its parser checks the names and values

    try:
        job.parse_args(["preset=repl", *scale.job_args, *job_args])
    except cli.UsageError as e:
        raise cli.UsageError(f"after --: {e}") from None
    steps = _step_list(args.only) if args.only else list(STEPS)
    skipped = _step_list(args.skip) if args.skip else []
    steps = [s for s in STEPS if s in steps and s not in skipped]
    env = dict(os.environ)
    if args.smoke:
        env.update(smoke_env(Path(args.smoke_root).resolve()))
    # Absolute folders: the notebook runs in the repository folder, the scripts where we are.
    paths = paths_config.get_paths(env)
    env.update({f"{paths_config.ENV_PREFIX}{key.upper()}": os.path.abspath(paths[key]) for key in FOLDER_KEYS})
    runs = presets.plan(chosen_presets, chosen_seeds)
    workflow = Workflow(
        scale,
        runs,
        list(dict.fromkeys(p for p, _ in runs)),
        None if chosen_seeds is None else list(chosen_seeds),
        train_steps,
        [*scale.job_args, *job_args],
        env,
        args.dry_run,
        args.yes,
    )
    return workflow, steps


def full_scale_work(workflow: Workflow, steps: Sequence[str]) -> list[str]:
    """What of ``steps`` would download the real dataset or train, one line each; nothing for
    toy runs (--smoke), dry runs and work that is done already."""
    if workflow.dry_run or workflow.scale.synthetic_files:
        return []
    work = []
    if "download" in steps and not all(path.exists() for path in data_files(workflow)):
        work.append(
            f"download the paper's dataset from Metax (about 30 GB) into {workflow.paths['dataset_folder']} "
            "and convert it"
        )
    if "train" in steps:
        todo = [run for run in workflow.runs if not training_skip_reason(workflow, *run)]
        if todo:
            work.append(
                f"train {len(todo)} runs ({len({p for p, _ in todo})} presets) of {workflow.train_steps:,} steps each into "
                f"{workflow.paths['train_runs_folder']} (the paper's runs took about a day or more each on one GPU)"
            )
    return work


def confirm_full_scale(workflow: Workflow, steps: Sequence[str]) -> None:
    """Say what a full-scale run is about to do and go on only with --yes or a "y" typed at a
    terminal; ``UsageError`` otherwise (nothing has been started)."""
    work = full_scale_work(workflow, steps)
    if not work or workflow.confirmed:
        return
    print("reproduce.py is about to:\n" + "\n".join(f"  - {line}" for line in work))
    hint = "rerun with --yes to go ahead, --dry-run to list the commands, or --smoke for a toy run"
    if not sys.stdin.isatty():
        raise cli.UsageError(f"a full-scale run needs confirmation: {hint}")
    if input("Go ahead? [y/N] ").strip().lower() not in ("y", "yes"):
        raise cli.UsageError(f"not confirmed; {hint}")


def run_steps(workflow: Workflow, steps: Sequence[str]) -> int:
    """Run ``steps`` in order; the exit status."""
    confirm_full_scale(workflow, steps)
    start = time.monotonic()
    print(
        f"{len(workflow.runs)} training runs of {len(workflow.presets)} presets, {workflow.train_steps} steps each; "
        f"steps: {', '.join(steps)}"
    )
    for step in steps:
        print(f"\n=== {step} ({time.monotonic() - start:.0f} s)", flush=True)
        try:
            STEP_FUNCTIONS[step](workflow)
        except StepFailed as e:
            print(f"reproduce.py: error: step {step}: {cli.one_line(e)}", file=sys.stderr)
            return cli.EXIT_ERROR
    graphs = workflow.paths["graphs_folder"]
    print(f"\ndone in {time.monotonic() - start:.0f} s; figures and tables in {graphs}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    return cli.run_script(
        "reproduce.py",
        lambda: run_steps(*parse_command_line(argv)),
        interrupted="interrupted; rerun the same command to continue",
    )


if __name__ == "__main__":
    sys.exit(main())
