"""`mdp bench` options are typed per benchmark: each benchmark's keyword-only parameters are its
options, with their defaults; an option none of the chosen benchmarks takes is refused."""

from __future__ import annotations

import pytest

from mdp.bench import all_options, options_of, suites
from mdp.cli import main


def test_each_flag_is_an_option_of_some_benchmark_and_back(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = capsys.readouterr().out
    for option in all_options():
        assert f"--{option.replace('_', '-')}" in help_text
    assert options_of(suites()["capacity"]) == {"steps", "step_seconds", "simple"}
    assert options_of(suites()["lake"]) == set()


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["bench", "candles", "--rows", "5"], "--rows: not an option of candles"),
        (["bench", "capacity", "--simple", "--trades", "4"], "--trades: not an option of capacity"),
        (["bench", "lake", "--rate", "9"], "--rate: not an option of lake"),
    ],
)
def test_an_option_no_chosen_benchmark_takes_is_refused(
    argv: list[str], refused: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert refused in capsys.readouterr().err
