"""``leanconv winograd M R`` (registered on a local app until cli/main.py wires it)."""

from __future__ import annotations

import json

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
