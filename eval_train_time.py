"""Largest training batch size and training step times per preset (arXiv:2502.12300, the
training columns of its main table).

Per preset: the largest batch size that trains (``job.py ... save=False train_steps=5`` on the
test set as training data; from ``--start-batch-size`` doubling until the first out-of-memory
failure, then bisecting), then ``--steps`` timed steps at that size, retrying with one less if
the timed run runs out of memory. Stored in ``results/timing.json`` under
``largest_train_batch_sizes`` and ``train_step_times`` (all steps; averages exclude the first),
per preset as soon as known, so a rerun skips presets done. Training throughput = batch /
mean step time. Any failure other than out of memory (job.py exit 3) stops with its message.

Defaults are the paper's (start 512, 100 steps). A CPU smoke run needs caps; with the start
size equal to the maximum there is no search, only the timed run (two job.py runs less)::

    python eval_train_time.py --presets repl lp2x3 --start-batch-size 4 --max-batch-size 4 \\
        --steps 3 --target-size 32 --memory-limit-gb 8 --test-data smoke/dataset/test_data.npy
"""

import argparse
import sys
from collections.abc import Sequence

import paths_config
import timing_search
from cli import ArgumentParser, run_main
from eval_models import load_test_images


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="eval_train_time.py", description=__doc__.split("\n\n")[0])
    timing_search.add_timing_arguments(parser, start=512, steps=100, cooldown=0.0)
    parser.add_argument(
        "--test-data",
        default=paths_config.test_data_path(),
        help="images to train on, the test set (default: %(default)s)",
    )

    def body(args: argparse.Namespace) -> None:
        images = load_test_images(args.test_data)
        # Each training batch draws distinct images, so the data caps the batch size.
        max_batch_size = min(args.max_batch_size, len(images))
        if max_batch_size < args.max_batch_size:
            print(f"Batch sizes capped at the {len(images)} images of {args.test_data}")
        options = timing_search.TimingOptions("train", args.start_batch_size, max_batch_size, args.steps, args.cooldown,
                                              args.target_size, args.seed, str(args.test_data))  # fmt: skip
        timing_search.run_timing(options, args)

    return run_main(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
