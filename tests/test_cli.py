"""The command line: every subcommand has --help; mistakes exit 2 with one clear line."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, timeout=60):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("command", ["run", "history", "backtest", "train", "report"])
def test_subcommand_help(command):
    result = run("-m", "sniper", command, "--help")
    assert result.returncode == 0 and f"sniper {command}" in result.stdout


def test_sim_help_is_the_simulators():
    result = run("-m", "sniper", "sim", "--help")
    assert result.returncode == 0 and "--port" in result.stdout


def test_unknown_subcommand_exits_2():
    result = run("-m", "sniper", "fly")
    assert result.returncode == 2 and "invalid choice: 'fly'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2():
    for argv in (("-m", "sniper", "run", "--config", "no/such.yaml"), ("run_sniper.py", "--config", "no/such.yaml")):
        result = run(*argv)
        assert result.returncode == 2, result.stderr
        assert "no/such.yaml" in result.stderr and "not found" in result.stderr
        assert "Traceback" not in result.stderr


def test_run_requires_config():
    result = run("run_sniper.py")
    assert result.returncode == 2 and "--config" in result.stderr
