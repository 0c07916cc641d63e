"""`cae export`'s flags reach the export: the refining step counts the test split is scored at, and the names
members are served by."""
import argparse

import pytest

import export.exporter
from cae.cli import main
from pathlib import Path

from export.cli import member, step_counts


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


def test_a_member_is_a_run_folder_and_optionally_the_name_it_is_served_by():
    assert member("runs/a/pae_k64_w16_l3") == (Path("runs/a/pae_k64_w16_l3"), None)
    assert member("runs/a/pae_k64_w16_l3=pae_k64_w16_l3_refine") == (Path("runs/a/pae_k64_w16_l3"), "pae_k64_w16_l3_refine")
    assert member("odd=dir/run=x-1") == (Path("odd=dir/run"), "x-1")  # the last = splits
    for bad in ("runs/a=", "runs/a=has space", "runs/a=no/slash"):
        with pytest.raises(argparse.ArgumentTypeError, match="RUN=NAME"):
            member(bad)


def test_member_names_reach_the_export(tiny_runs, tmp_path, monkeypatch):
    seen = {}

    def export_models(autoencoders, colorizer, out, options, **kwargs):
        seen.update(autoencoders=autoencoders, names=kwargs["names"])
        return {"models": {}}

    monkeypatch.setattr(export.exporter, "export_models", export_models)
    residual, study = tiny_runs["residual"], tiny_runs["study"]
    assert main(["export", "--autoencoder", f"{residual}=served_as", str(study), "--out", str(tmp_path / "m")]) == 0
    assert seen == {"autoencoders": [residual, study], "names": {residual: "served_as"}}
