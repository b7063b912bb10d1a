"""Feature-map padding NMSE per layer (SPEC 8).

Models trained as ``zero_oc5`` and ``lp2x3_oc5`` are loaded as output crop 10 models (no
padding anywhere, every value valid). For the four corner windows of each test image and each
feature map (#0 the input, #1..9 the head and body intermediates, #10 the output), the
centered 28x28 square is padded by 1 pixel with zero, repl, lp2x3 (direct) and extr3, and the
padded ring is compared with the true ring of the centered 30x30 square. NMSE = sum of squared
ring errors / sum of squared deviations of the true ring from each image-channel ring mean,
accumulated over the test set. Stored in ``results/layer_nmse.json`` as
``{train_preset: {padding: {seed: [11 floats]}}}``, one model at a time.

Resumable: stored models are skipped. Smaller targets (smoke runs, ``--target-size 96``) pad a
centered square of ``T / 4 - 20`` pixels instead of 28.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import eval_common as ec
import rvsr


def print_summary(nmse: dict) -> None:
    """Per train preset and padding: the mean NMSE over seeds of each feature map."""
    rows = []
    for preset, by_padding in nmse.items():
        for padding, by_seed in by_padding.items():
            rows.append([preset, padding, len(by_seed), *(float(v) for v in np.mean(list(by_seed.values()), axis=0))])
    print("Feature-map padding NMSE (#0 input ... #10 output), mean over seeds:")
    ec.print_table(["train preset", "padding", "seeds", *(f"#{i}" for i in range(ec.NUM_FEATURE_MAPS))], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ec.add_model_eval_arguments(parser, default_presets=ec.LAYER_NMSE_PRESETS)
    args = parser.parse_args(argv)
    path = Path(args.results_folder) / ec.LAYER_NMSE_FILENAME

    def body() -> None:
        models = ec.find_trained_models(args.models_folder, args.presets, args.seeds)
        if not models:
            raise ec.EvalError(f"no trained models of {', '.join(args.presets)} in {args.models_folder}")
        images, target_size = ec.test_images_and_target_size(args, ec.sr_rate_of(models[0].preset))
        ec.layer_nmse_center_size(target_size, ec.sr_rate_of(models[0].preset))  # too small: fail before any work

        def is_done(model: ec.TrainedModel) -> bool:
            stored = ec.read_json(path)
            return all(ec.nested_get(stored, (model.preset, p, str(model.seed))) is not None for p in ec.LAYER_NMSE_PADDINGS)

        def run(model: ec.TrainedModel) -> None:
            net, state = ec.load_trained_model(model, output_crop=rvsr.MAX_OUTPUT_CROP)
            nmse = ec.layer_nmse(net, state, images, target_size, ec.sr_rate_of(model.preset), args.batch_size, model.name)
            ec.update_json(path, {(model.preset, p, str(model.seed)): nmse[i].tolist() for i, p in enumerate(ec.LAYER_NMSE_PADDINGS)})

        ec.run_units(ec.model_units(models, is_done, run), "eval_layer_nmse", args.overwrite)
        print_summary(ec.read_json(path))

    return ec.run_script("eval_layer_nmse.py", body)


if __name__ == "__main__":
    sys.exit(main())
