"""Test MSE of every trained model, per output-crop mask (arXiv:2502.12300, its test MSE per
output crop and per shell).

For each model ``results/trained_models/{preset}_s{seed}.eqx``: build it with output crop 0
(every layer padded, whatever crop it was trained with), predict the four corner windows of
each test image, average the squared error over channels and windows, and store its sum over
each mask k = 0..10 (the target region ``[4k, 192 - 4k)``) in
``results/output_crop_sumsqs/{preset}_s{seed}.npy``, float64 ``(11, N_test)``, with
``{preset}_s{seed}.json`` beside it: ``target_size``, ``sr_rate``, ``num_images`` and
``output_crops`` (the k of the rows), which the figures read. Then print per preset the mean
over seeds of the mean over images of ``sum_k / (192 - 8k)^2``.

Resumable: stored models are skipped (a stored result of other options is an error unless
``--overwrite``). Example (smoke run)::

    python eval_mse.py --test-data smoke/dataset/test_data.npy --num-images 8 --presets repl lp2x3
"""

import argparse
import sys
from collections.abc import Sequence

import numpy as np

import eval_models
import published_models
import results_store
import results_tables
from cli import print_table, run_script
from eval_geometry import NUM_MASKS, crop_and_shell_mse
from run_layout import TrainedModel


def evaluate_model(model: TrainedModel, images: np.ndarray, metadata: results_store.SumsqsMetadata,
                   batch_size: int, results_folder: str) -> None:  # fmt: skip
    """Compute and store one model's ``(11, N)`` mask sums and their metadata."""
    net, state = published_models.load_trained_model(model, output_crop=0)
    sums = eval_models.output_crop_sumsqs(net, state, images, metadata.target_size, metadata.sr_rate, batch_size,
                                          desc=model.name)  # fmt: skip
    results_store.save_sumsqs(results_folder, model.preset, model.seed, sums, metadata)


def print_summary(results_folder: str, test_data: str, preset_names: Sequence[str]) -> None:
    """Per preset: the mean over seeds of the per-image mean MSE in each mask, each result
    with its own geometry (inferred, with a note, for older results without metadata)."""
    by_preset: dict[str, list[np.ndarray]] = {}
    for (preset, _), result in results_tables.load_sumsqs(results_folder, test_data).items():
        if preset in preset_names:
            crop_mse, _ = crop_and_shell_mse(result.sumsqs, result.metadata.target_size, result.metadata.sr_rate)
            by_preset.setdefault(preset, []).append(crop_mse)
    rows = [[preset, len(mses), *(float(v) for v in np.mean(mses, axis=0))] for preset, mses in by_preset.items()]
    print("Test MSE per mask k (the target region [4k, T - 4k)), mean over seeds:")
    print_table(["preset", "seeds", *(f"k={k}" for k in range(NUM_MASKS))], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    eval_models.add_model_eval_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        chosen = eval_models.select_models_and_images(args)
        metadata = results_store.SumsqsMetadata(chosen.target_size, chosen.sr_rate, len(chosen.images))

        def is_done(model: TrainedModel) -> bool:
            return results_store.is_sumsqs_stored(args.results_folder, model.preset, model.seed, metadata)

        def run(model: TrainedModel) -> None:
            evaluate_model(model, chosen.images, metadata, args.batch_size, args.results_folder)

        results_store.run_units(results_store.model_units(chosen.models, is_done, run), "eval_mse", args.overwrite)
        print_summary(args.results_folder, args.test_data, sorted({m.preset for m in chosen.models}))

    return run_script("eval_mse.py", body)


if __name__ == "__main__":
    sys.exit(main())
