"""bench_padding.py runs and prints every table it promises (its timings are not checked)."""

import pytest

import bench_padding


@pytest.mark.slow
def test_quick_run_prints_every_table(capsys):
    status = bench_padding.main(
        ["--quick", "--methods", "repl,lp1x1cs,lp2x3", "--presets", "repl,lp1x1cs", "--repeats", "1"]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "UNIT = eqx.nn.Conv2d(16, 16, 3, padding=1)" in out
    lines = out.splitlines()
    floors = lines.index(next(line for line in lines if line.startswith("Floors on")))
    rvsr = lines.index(next(line for line in lines if line.startswith("RVSR inference form")))
    # every method in the padding table, only lp methods in the floors, every preset in the RVSR table
    for method in ("repl", "lp1x1cs", "lp2x3"):
        assert any(line.startswith(f"{method} ") for line in lines[:floors])
    assert [line.split()[0] for line in lines[floors + 4 : rvsr - 1]] == ["lp1x1cs", "lp2x3"]
    assert any(line.startswith("lp1x1cs") and "x repl" in line for line in lines[rvsr:])


def test_unknown_method_is_a_usage_error(capsys):
    assert bench_padding.main(["--methods", "lp9x9"]) == 2
    assert "lp9x9" in capsys.readouterr().err
