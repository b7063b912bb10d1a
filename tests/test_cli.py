"""cli.py: the entry wrapper every script shares (exit statuses, one-line errors, Ctrl-C),
its argparse types, and that every script's expected failures are ``cli.UserError``."""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import cli
import download_dataset
import make_dataset_npys
import presets
import reproduce
import run_layout
import slurm_train

REPO = Path(__file__).resolve().parent.parent


def raising(error: BaseException):
    def body() -> None:
        raise error

    return body


def test_body_status_is_the_exit_status(capsys):
    assert cli.run_script("x.py", lambda: None) == 0
    assert cli.run_script("x.py", lambda: 0) == 0
    assert cli.run_script("x.py", lambda: 137) == 137
    assert capsys.readouterr().err == ""


def test_user_error_is_one_line_and_status_1(capsys):
    assert cli.run_script("x.py", raising(cli.UserError("no such\n\tfile:   a.npy\n"))) == cli.EXIT_ERROR == 1
    assert capsys.readouterr().err == "x.py: error: no such file: a.npy\n"


def test_usage_error_is_status_2(capsys):
    assert cli.run_script("x.py", raising(cli.UsageError("--frob takes a number"))) == cli.EXIT_USAGE == 2
    assert capsys.readouterr().err == "x.py: error: --frob takes a number\n"


def test_argument_parser_errors_are_usage_errors(capsys):
    parser = cli.ArgumentParser(prog="x.py")
    parser.add_argument("--count", type=cli.positive_int)
    with pytest.raises(cli.UsageError, match="argument --count: expected an integer >= 1, got 0"):
        parser.parse_args(["--count", "0"])
    assert cli.run_script("x.py", lambda: parser.parse_args(["--bogus"]) and None) == 2
    err = capsys.readouterr().err
    assert err.startswith("x.py: error: unrecognized arguments: --bogus") and err.count("\n") == 1


def test_run_main_parses_inside_the_error_wrapper(capsys):
    parser = cli.ArgumentParser(prog="x.py")
    parser.add_argument("--count", type=cli.positive_int, default=1)
    assert cli.run_main(parser, lambda args: args.count + 2, ["--count", "3"]) == 5
    assert cli.run_main(parser, lambda args: None, ["--count", "0"]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == "x.py: error: argument --count: expected an integer >= 1, got 0\n"
    with pytest.raises(TypeError, match="cli.ArgumentParser"):
        cli.run_main(argparse.ArgumentParser(), lambda args: None, [])


SCRIPTS = [
    "bilinear_test",
    "download_dataset",
    "eval_inference_time",
    "eval_layer_nmse",
    "eval_mse",
    "eval_train_time",
    "export_trained_models",
    "make_dataset_npys",
    "make_synthetic_dataset",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_reports_a_bad_option_in_one_line(script, capsys):
    # The one convention (cli.run_main): exit status 2 and one line, never argparse's usage text.
    module = importlib.import_module(script)
    assert module.main(["--no-such-option"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err == f"{script}.py: error: unrecognized arguments: --no-such-option\n"


def test_statuses_add_classes_and_the_most_specific_class_decides(capsys):
    class OutOfQuota(cli.UserError):
        pass

    class OutOfQuotaToday(OutOfQuota):
        pass

    statuses = {OSError: 4, OutOfQuota: 3}
    assert cli.run_script("x.py", raising(OSError(28, "No space left on device")), statuses=statuses) == 4
    assert capsys.readouterr().err == "x.py: error: [Errno 28] No space left on device\n"
    assert cli.run_script("x.py", raising(FileNotFoundError("gone")), statuses=statuses) == 4  # a subclass
    assert cli.run_script("x.py", raising(OutOfQuota("quota")), statuses=statuses) == 3
    assert cli.run_script("x.py", raising(OutOfQuotaToday("quota")), statuses=statuses) == 3
    # The defaults stay for what statuses does not name; a class there overrides them.
    assert cli.run_script("x.py", raising(cli.UserError("u")), statuses=statuses) == 1
    assert cli.run_script("x.py", raising(cli.UsageError("u")), statuses=statuses) == 2
    assert cli.run_script("x.py", raising(cli.UsageError("u")), statuses={cli.UserError: 5}) == 2
    assert cli.run_script("x.py", raising(cli.UserError("u")), statuses={cli.UserError: 5}) == 5
    capsys.readouterr()
    with pytest.raises(ValueError):  # not named: a bug
        cli.run_script("x.py", raising(ValueError("v")), statuses=statuses)
    assert capsys.readouterr().err == ""


def test_keyboard_interrupt(capsys):
    message = "interrupted; rerun the same command to continue"
    assert cli.run_script("x.py", raising(KeyboardInterrupt()), interrupted=message) == cli.EXIT_INTERRUPTED == 130
    assert capsys.readouterr().err == f"x.py: {message}\n"
    with pytest.raises(KeyboardInterrupt):  # a script that does not ask for it keeps Python's handling
        cli.run_script("x.py", raising(KeyboardInterrupt()))
    # interrupted= does not make other exceptions expected.
    with pytest.raises(RuntimeError):
        cli.run_script("x.py", raising(RuntimeError("bug")), interrupted=message)


def test_bugs_keep_their_traceback():
    with pytest.raises(KeyError):
        cli.run_script("x.py", raising(KeyError("k")))
    code = "import sys, cli; sys.exit(cli.run_script('x.py', lambda: 1 / 0, interrupted='stopped'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1  # Python's own status for an uncaught exception
    assert "Traceback" in done.stderr and "ZeroDivisionError" in done.stderr and "x.py: error" not in done.stderr


def test_one_line():
    assert cli.one_line(ValueError("a\n  b\tc \r\n")) == "a b c"
    assert cli.one_line(KeyError()) == "KeyError"  # no message: the class name
    assert cli.one_line("  several\n\nlines ") == "several lines"
    assert cli.one_line("") == ""


def test_every_scripts_expected_failures_are_user_errors():
    for error in (
        run_layout.LayoutError,
        presets.PlanError,
        download_dataset.DownloadError,
        make_dataset_npys.ConversionError,
        slurm_train.SlurmError,
        reproduce.StepFailed,
    ):
        assert issubclass(error, cli.UserError), error
    # ValueError too, as before, for code that caught them as such.
    assert issubclass(run_layout.LayoutError, ValueError) and issubclass(presets.PlanError, ValueError)
    # A transient download failure is retried inside download_dataset, not reported.
    assert not issubclass(download_dataset.TransientError, cli.UserError)


def test_cli_imports_no_project_module():
    """run_layout and presets import cli at the top; cli must not import them back."""
    code = "import sys, cli; print(sorted(m for m in ('presets', 'run_layout', 'padding', 'paths_config') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_int_and_float_types():
    assert cli.positive_int("3") == 3 and cli.non_negative_int("0") == 0 and cli.int_at_least("-1", -1) == -1
    for parse, bad, complaint in [
        (cli.positive_int, "0", "expected an integer >= 1, got 0"),
        (cli.non_negative_int, "-2", "expected an integer >= 0, got -2"),
        (cli.non_negative_int, "1.5", "expected an integer, got '1.5'"),
        (cli.non_negative_float, "-0.5", "expected a finite number >= 0, got -0.5"),
        (cli.non_negative_float, "nan", "expected a finite number >= 0"),
        (cli.non_negative_float, "inf", "expected a finite number >= 0"),
        (cli.non_negative_float, "x", "expected a number, got 'x'"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=complaint):
            parse(bad)
    assert cli.non_negative_float("0") == 0.0 and cli.non_negative_float("2.5") == 2.5


def test_preset_and_seed_lists():
    assert presets.preset_name("lp2x3") == "lp2x3"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown preset 'nope'"):
        presets.preset_name("nope")
    assert presets.seed_list("0-11") == list(range(12))
    assert presets.seed_list("3, 0-2,7") == [0, 1, 2, 3, 7]
    assert presets.seed_list("5") == [5]
    for bad in ("", "x", "3-1", "-1", "1-", "1,,2", "0.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            presets.seed_list(bad)
    assert presets.preset_list("lp2x3,repl") == ["lp2x3", "repl"]
    assert len(presets.preset_list("all")) == 22
    for bad in ("lp2x3,nope", "repl,repl", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            presets.preset_list(bad)
