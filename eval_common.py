"""Compatibility names for scripts written against the former single evaluation module.

The evaluation code now lives in small modules, one idea each:

- ``cli``: ``UserError``, ``run_script`` and the argparse types of every script;
- ``eval_geometry``: corner windows, output-crop masks and the MSEs over them;
- ``eval_models``: published models and test images, and the per-model computations;
- ``results_store``: the results files, their metadata and the units of work;
- ``timing_search``: job.py subprocesses, the batch-size search and the throughput formulas;
- ``run_layout`` / ``presets``: model stems, published files, results paths, table order.

Import from those. The names below are re-exported only until export_trained_models.py and
reproduce.py have moved to them; nothing in the evaluation scripts uses this module.
"""

from cli import UserError as EvalError
from cli import non_negative_int, positive_int, preset_name, run_script
from eval_models import load_trained_model
from presets import table_order
from results_store import load_output_crop_sumsqs
from run_layout import (
    LayoutError,
    TrainedModel,
    find_trained_models,
    model_stem,
    parse_model_stem,
    read_loss_history,
    write_loss_history,
)

__all__ = [
    "EvalError",
    "LayoutError",
    "TrainedModel",
    "find_trained_models",
    "load_output_crop_sumsqs",
    "load_trained_model",
    "model_stem",
    "non_negative_int",
    "parse_model_stem",
    "positive_int",
    "preset_name",
    "read_loss_history",
    "run_script",
    "table_order",
    "write_loss_history",
]
