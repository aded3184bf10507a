"""``leanconv winograd M R`` (registered on a local app until cli/main.py wires it)."""

from __future__ import annotations

import json
import time

import pytest
import typer
from typer.testing import CliRunner

from leanconv.cli import winograd

app = typer.Typer()
winograd.register(app)


@app.command("noop")
def _noop() -> None:  # a second command keeps typer from flattening the app
    pass


runner = CliRunner()


def test_json_output():
    result = runner.invoke(app, ["winograd", "4", "3", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["points"] == ["0", "-1", "1", "1/2", "-2"]
    assert info["m"] == 4 and info["r"] == 3
    assert info["G"][1] == ["1/6", "-1/6", "1/6"]
    assert len(info["AT"]) == 4 and len(info["BT"]) == 6
    mul = info["multiplications"]
    assert mul["per_tile"] == 6 and mul["per_output"] == "3/2" and mul["direct_per_output"] == "3"
    assert mul["2d"]["per_output"] == "9/4" and mul["2d"]["reduction"] == "4"


def test_user_points_and_table():
    result = runner.invoke(app, ["winograd", "2", "3", "--points=0,1,-1"])
    assert result.exit_code == 0, result.output
    assert "F(2x2,3x3)" in result.output and "2.25x" in result.output
    assert "1/2" in result.output


def test_bad_points_is_a_one_line_error():
    result = runner.invoke(app, ["winograd", "2", "3", "--points=0,1,1"])
    assert result.exit_code == 2
    assert "distinct" in result.output
    result = runner.invoke(app, ["winograd", "0", "3"])
    assert result.exit_code == 2 and "m=0" in result.output


@pytest.mark.parametrize("m, r", [(1, 1), (1, 3), (2, 3), (6, 3), (3, 1), (2, 2), (4, 5)])
def test_matrix_titles_print_whole(m, r):
    result = runner.invoke(app, ["winograd", str(m), str(r)])
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    for title in ("A^T", "G", "B^T"):
        assert title in lines, result.stdout
    assert "^" not in lines and "A" not in lines  # no title broken one letter per line


@pytest.mark.parametrize("m, r", [(100, 100), (31, 3), (1, 33), (200, 1)])
def test_sizes_beyond_the_bound_are_refused_at_once(m, r):
    start = time.perf_counter()
    result = runner.invoke(app, ["winograd", str(m), str(r)])
    assert time.perf_counter() - start < 5
    assert result.exit_code == 2, result.output
    assert f"F({m},{r})" in result.output and f"m + r = {m + r}" in result.output
    assert str(winograd.MAX_M_PLUS_R) in result.output and "float" in result.output
    assert "Traceback" not in result.output


def test_largest_size_within_the_bound_is_quick():
    m = winograd.MAX_M_PLUS_R - 3
    start = time.perf_counter()
    result = runner.invoke(app, ["winograd", str(m), "3", "--json"])
    assert result.exit_code == 0, result.output
    assert time.perf_counter() - start < 5
    assert json.loads(result.stdout)["verified"] is True


def test_progress_shows_on_a_terminal(monkeypatch):
    shown = []
    monkeypatch.setattr(winograd, "_stderr_is_tty", lambda: True)
    monkeypatch.setattr(winograd.err_console, "status", lambda text: _Record(shown, text))
    result = runner.invoke(app, ["winograd", "4", "3"])
    assert result.exit_code == 0, result.output
    assert shown == ["deriving F(4,3) ..."]
    shown.clear()
    monkeypatch.setattr(winograd, "_stderr_is_tty", lambda: False)
    assert runner.invoke(app, ["winograd", "4", "3"]).exit_code == 0 and shown == []


class _Record:
    def __init__(self, shown, text):
        self.shown, self.text = shown, text

    def __enter__(self):
        self.shown.append(self.text)

    def __exit__(self, *exc):
        return False
