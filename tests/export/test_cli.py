"""`cae export`'s flags reach the export: the refining step counts the test split is scored at."""
import argparse

import pytest

import export.exporter
from cae.cli import main
from export.cli import step_counts


def test_step_counts_are_positive_sorted_and_each_once():
    assert step_counts("50,10,25,10") == (10, 25, 50)
    for bad in ("0,25", "10,x", "", "-5"):
        with pytest.raises(argparse.ArgumentTypeError):
            step_counts(bad)


def test_bad_step_counts_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--dry-run", "--refine-steps", "10,zero"])
    assert exit_.value.code == 2 and "--refine-steps" in capsys.readouterr().err


@pytest.mark.parametrize("flags, expected", [([], export.exporter.ExportOptions.refine_steps),
                                             (["--refine-steps", "50,10,25"], (10, 25, 50))])
def test_the_step_counts_reach_the_export(tiny_runs, tmp_path, monkeypatch, flags, expected):
    seen = {}

    def export_models(autoencoders, colorizer, out, options, **kwargs):
        seen["options"] = options
        return {"models": {}}

    monkeypatch.setattr(export.exporter, "export_models", export_models)
    assert main(["export", "--autoencoder", str(tiny_runs["residual"]), "--out", str(tmp_path / "m"), *flags]) == 0
    assert seen["options"].refine_steps == expected
