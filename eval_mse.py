"""Test MSE of every trained model, per output-crop mask (SPEC 8).

For each model ``results/trained_models/{preset}_s{seed}.eqx``: build it with output crop 0
(every layer padded, whatever crop it was trained with), predict the four corner windows of
each test image, average the squared error over channels and windows, and store its sum over
each mask k = 0..10 (the target region ``[4k, 192 - 4k)``) in
``results/output_crop_sumsqs/{preset}_s{seed}.npy``, float64 ``(11, N_test)``. Then print per
preset the mean over seeds of the mean over images of ``sum_k / (192 - 8k)^2``.

Resumable: stored models are skipped. Example (smoke run)::

    python eval_mse.py --test-data smoke/dataset/test_data.npy --num-images 8 --presets repl lp2x3
"""

import argparse
import sys
from collections.abc import Sequence

import numpy as np

import eval_common as ec


def evaluate_model(model: ec.TrainedModel, images: np.ndarray, target_size: int, batch_size: int, results_folder: str) -> None:
    """Compute and store one model's ``(11, N)`` mask sums."""
    sr_rate = ec.sr_rate_of(model.preset)
    net, state = ec.load_trained_model(model, output_crop=0)
    sums = ec.output_crop_sumsqs(net, state, images, target_size, sr_rate, batch_size, desc=model.name)
    ec.save_array(ec.output_crop_sumsqs_path(results_folder, model.preset, model.seed), sums)


def print_summary(results_folder: str, preset_names: Sequence[str], target_size: int) -> None:
    """Per preset: the mean over seeds of the per-image mean MSE in each mask."""
    rows = []
    for preset, by_seed in ec.load_output_crop_sumsqs(results_folder).items():
        if preset in preset_names:
            sr_rate = ec.sr_rate_of(preset)
            mse = np.mean([ec.mean_mse_per_mask(s, target_size, sr_rate) for s in by_seed.values()], axis=0)
            rows.append([preset, len(by_seed), *(float(v) for v in mse)])
    print(f"Test MSE per mask k (region [4k, {target_size} - 4k)), mean over seeds:")
    ec.print_table(["preset", "seeds", *(f"k={k}" for k in range(ec.NUM_MASKS))], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ec.add_model_eval_arguments(parser)
    args = parser.parse_args(argv)

    def body() -> None:
        models = ec.find_trained_models(args.models_folder, args.presets, args.seeds)
        if not models:
            raise ec.EvalError(f"no trained models of the requested presets / seeds in {args.models_folder}")
        images, target_size = ec.test_images_and_target_size(args, ec.sr_rate_of(models[0].preset))
        shape = (ec.NUM_MASKS, len(images))

        def is_done(model: ec.TrainedModel) -> bool:
            return ec.check_stored_shape(ec.output_crop_sumsqs_path(args.results_folder, model.preset, model.seed), shape)

        def run(model: ec.TrainedModel) -> None:
            evaluate_model(model, images, target_size, args.batch_size, args.results_folder)

        ec.run_units(ec.model_units(models, is_done, run), "eval_mse", args.overwrite)
        print_summary(args.results_folder, sorted({m.preset for m in models}), target_size)

    return ec.run_script("eval_mse.py", body)


if __name__ == "__main__":
    sys.exit(main())
