"""Largest inference batch size and inference step times per preset (arXiv:2502.12300, the
inference columns of its main table).

Per preset, with the inference-form model (``job.py ... inference_steps=N`` on uniform random
inputs): the largest batch size that runs (from ``--start-batch-size`` doubling until the first
out-of-memory failure, then bisecting), then ``--steps`` timed batches after a ``--cooldown``,
retrying with one less if the timed run runs out of memory. Stored in ``results/timing.json``
under ``largest_inference_batch_sizes`` and ``inference_step_times``, per preset as soon as
known, so a rerun skips presets done. Inference throughput = batch x (192 - 8 oc)^2 / mean
time (output pixels of one channel; the first batch excluded). Any failure other than out of
memory (job.py exit 3) stops with its message.

Defaults are the paper's (start 8192, 1000 batches, 30 s cooldown). A CPU smoke run needs
caps; with the start size equal to the maximum there is no search, only the timed run::

    python eval_inference_time.py --presets repl lp2x3 --start-batch-size 8 --max-batch-size 8 \\
        --steps 5 --cooldown 0 --target-size 32 --memory-limit-gb 8
"""

import argparse
import sys
from collections.abc import Sequence

import timing_search
from cli import ArgumentParser, run_main


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="eval_inference_time.py", description=__doc__.split("\n\n")[0])
    timing_search.add_timing_arguments(parser, start=8192, steps=1000, cooldown=30.0)

    def body(args: argparse.Namespace) -> None:
        options = timing_search.TimingOptions("inference", args.start_batch_size, args.max_batch_size, args.steps,
                                              args.cooldown, args.target_size, args.seed)  # fmt: skip
        timing_search.run_timing(options, args)

    return run_main(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
