"""bench.py --quick runs every section and writes the JSON it promises (values checked for sanity,
not for speed)."""

import json
import math

import jax
import pytest

import bench


def _positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    argv = [
        "--quick",
        "--json",
        str(path),
        "--methods",
        "repl,lp1x1cs",
        "--presets",
        "zero-repl,lp1x1cs",
        "--repeats",
        "1",
    ]
    return bench.main(argv), json.loads(path.read_text())


@pytest.mark.slow
def test_quick_run_writes_every_section(quick_run):
    status, report = quick_run
    assert status == 0
    assert {"device", "padding", "rvsr_inference", "rvsr_training", "tiled", "paper"} <= set(report)
    device = report["device"]
    assert (
        device["platform"] == jax.default_backend()
        and device["versions"]["jax"]
        and len(device["load_average_at_start"]) == 3
    )
    assert "GLIBC_TUNABLES" in device["environment"] and "XLA_PYTHON_CLIENT_PREALLOCATE" in device["environment"]


@pytest.mark.slow
def test_padding_section(quick_run):
    padding = quick_run[1]["padding"]
    assert _positive(padding["unit_ms"]) and padding["batch"][1:] == [16, 48, 48]
    assert set(padding["methods"]) == {"repl", "lp1x1cs"}
    for row in padding["methods"].values():
        assert all(_positive(row[k]) for k in ("fwd_ms", "fb_ms", "fwd_per_unit", "fb_per_unit"))
        assert math.isclose(row["fwd_per_unit"], row["fwd_ms"] / padding["unit_ms"], rel_tol=1e-9)


@pytest.mark.slow
def test_rvsr_sections_are_ratios_to_zero_repl(quick_run):
    report = quick_run[1]
    inference, training = report["rvsr_inference"]["presets"], report["rvsr_training"]["presets"]
    assert set(inference) == set(training) == {"zero-repl", "lp1x1cs"}
    assert inference["zero-repl"]["per_zero_repl"] == training["zero-repl"]["per_zero_repl"] == 1.0
    for rows in (inference, training):
        assert all(_positive(v) for row in rows.values() for v in row.values())
    lp = inference["lp1x1cs"]
    assert math.isclose(lp["per_zero_repl"], lp["ms"] / inference["zero-repl"]["ms"], rel_tol=1e-9)
    assert _positive(lp["gradient_path_ms"]) and "gradient_path_ms" not in inference["zero-repl"]


@pytest.mark.slow
def test_tiled_section(quick_run):
    tiled = quick_run[1]["tiled"]
    assert tiled["size"] == 128 and tiled["tile_size"] == 64
    runs = [tiled["in_memory"]] + ([tiled["superresolve"]] if tiled["superresolve"] is not None else [])
    for run in runs:
        assert _positive(run["mpx_per_s"]) and 100 < run["peak_rss_mib"] < 20_000


@pytest.mark.slow
def test_paper_figures_and_ratios(quick_run):
    paper = quick_run[1]["paper"]
    assert paper["inference_mpx_per_s"]["lp2x3"] == 480 and paper["training_images_per_s"]["lp6x7"] == 432
    assert math.isclose(paper["inference_per_zero_repl"]["lp6x7"], 964 / 266)
    assert "lp2x1cs" not in paper["training_images_per_s"]  # the paper gives none: never invented


@pytest.mark.slow
def test_printed_table_has_every_section(quick_run, capsys):
    report = quick_run[1]
    bench.print_padding(report["padding"])
    bench.print_inference(report["rvsr_inference"])
    bench.print_training(report["rvsr_training"])
    bench.print_tiled(report["tiled"])
    out = capsys.readouterr().out
    for title in ("PADDING of", "RVSR INFERENCE FORM", "RVSR TRAINING STEP", "TILED:"):
        assert title in out
    inference_table, training_table = out.split("RVSR INFERENCE FORM")[1].split("RVSR TRAINING STEP")
    assert " 964 " in inference_table and " 722 " in inference_table  # the paper's figures beside ours
    assert " 472 " in training_table and " 464 " in training_table


@pytest.mark.parametrize(
    "argv", [["--sections", "padding,gpu"], ["--methods", "lp9x9"], ["--presets", "nope"], ["--repeats", "0"]]
)
def test_bad_arguments_are_usage_errors(argv, capsys):
    assert bench.main(argv) == 2
    assert capsys.readouterr().err.startswith("bench.py: error:")
