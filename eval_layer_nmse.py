"""Feature-map padding NMSE per layer (arXiv:2502.12300, its figure of padding NMSE per
feature map).

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

import numpy as np

import eval_models
import published_models
import rvsr
from cli import ArgumentParser, print_table, run_main
from eval_geometry import layer_nmse_center_size
from eval_models import LAYER_NMSE_PADDINGS, NUM_FEATURE_MAPS
from presets import LAYER_NMSE_PRESETS
from results_store import model_units, nested_get, read_json, run_units, update_json
from run_layout import TrainedModel, layer_nmse_path


def print_summary(nmse: dict) -> None:
    """Per train preset and padding: the mean NMSE over seeds of each feature map."""
    rows = []
    for preset, by_padding in nmse.items():
        for padding, by_seed in by_padding.items():
            rows.append([preset, padding, len(by_seed), *(float(v) for v in np.mean(list(by_seed.values()), axis=0))])
    print("Feature-map padding NMSE (#0 input ... #10 output), mean over seeds:")
    print_table(["train preset", "padding", "seeds", *(f"#{i}" for i in range(NUM_FEATURE_MAPS))], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="eval_layer_nmse.py", description=__doc__.split("\n\n")[0])
    eval_models.add_model_eval_arguments(parser, default_presets=LAYER_NMSE_PRESETS)

    def body(args: argparse.Namespace) -> None:
        path = layer_nmse_path(args.results_folder)
        chosen = eval_models.select_models_and_images(args)
        layer_nmse_center_size(chosen.target_size, chosen.sr_rate)  # too small: fail before any work

        def is_done(model: TrainedModel) -> bool:
            stored = read_json(path)
            return all(nested_get(stored, (model.preset, p, str(model.seed))) is not None for p in LAYER_NMSE_PADDINGS)

        def run(model: TrainedModel) -> None:
            net, state = published_models.load_trained_model(model, output_crop=rvsr.MAX_OUTPUT_CROP)
            nmse = eval_models.layer_nmse(net, state, chosen.images, chosen.target_size, chosen.sr_rate, args.batch_size,
                                          model.name)  # fmt: skip
            update_json(
                path, {(model.preset, p, str(model.seed)): nmse[i].tolist() for i, p in enumerate(LAYER_NMSE_PADDINGS)}
            )

        run_units(model_units(chosen.models, is_done, run), "eval_layer_nmse", args.overwrite)
        print_summary(read_json(path))

    return run_main(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
