"""internvl.cli.run_main: one line for a user's error, a traceback for a bug, both in the log file."""
import logging

import pytest

from internvl.cli import DEBUG_ENV, run_main
from internvl.errors import ConfigError, DataError, MissingFileError, UserError
from internvl.train.distributed import setup_logging


def _raise(err):
    def main():
        raise err
    return main


def test_user_error_is_one_line_and_exit_status_1(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert run_main(_raise(DataError("data.jsonl:3: 'conversations' is missing"))) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: data.jsonl:3: 'conversations' is missing"]


def test_debug_switch_adds_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert run_main(_raise(ConfigError("unknown key TRAIN.EPOHCS"))) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().endswith("error: unknown key TRAIN.EPOHCS")


def test_bug_shows_its_traceback(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert run_main(_raise(ZeroDivisionError("division by zero"))) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "a bug" in err and "ZeroDivisionError" in err


def test_both_kinds_reach_the_log_file(tmp_path, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    log_file = tmp_path / "log_rank0.txt"
    setup_logging(0, log_file=log_file)
    run_main(_raise(MissingFileError("pretrained/x does not exist")))
    run_main(_raise(KeyError("oops")))
    text = log_file.read_text()
    assert "error: pretrained/x does not exist" in text
    assert "Traceback" in text and "KeyError: 'oops'" in text
    assert text.count("Traceback") == 1  # the user error came without one


def test_status_and_exit_codes_pass_through():
    assert run_main(lambda: None) == 0
    assert run_main(lambda: 3) == 3
    with pytest.raises(SystemExit):  # argparse's own usage errors keep their status
        run_main(_raise(SystemExit(2)))


def test_user_errors_are_also_the_builtin_kind():
    assert issubclass(ConfigError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, UserError)
