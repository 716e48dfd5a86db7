"""A bad config value stops snakemake before any job with a short message naming the key, not the whole schema."""
from __future__ import annotations

import yaml

from conftest import REPO, run_snakemake


def bad_config(path, edit):
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    return path


def assert_short_message(output: str, first_line: str, description: str):
    assert first_line in output and description in output
    # snakemake's validate printed the whole schema; none of it may appear.
    for schema_text in ("Failed validating", "On instance", "$schema", "Configuration of the self-supervision"):
        assert schema_text not in output
    assert len(output) < 3000, output


def test_a_nan_learning_rate_stops_the_workflow_naming_the_key(workflow_copy, tmp_path):
    def nan_learning_rate(config):
        config["models"]["rot"]["optimizer"]["lr"] = float("nan")  # dumped as .nan, as a user would write it

    config = bad_config(tmp_path / "bad.yaml", nan_learning_rate)
    assert ".nan" in config.read_text()
    result = run_snakemake(workflow_copy, "-n", "--configfile", str(config), check=False)
    assert result.returncode != 0
    assert_short_message(result.stdout + result.stderr,
                         "config key 'models.rot.optimizer.lr' = nan: expected a finite number",
                         "'models.rot.optimizer.lr': Base learning rate.")


def test_a_schema_violation_shows_the_key_value_and_description(workflow_copy, tmp_path):
    def wrong_type(config):
        config["models"]["rot"]["epochs"] = "three"

    result = run_snakemake(workflow_copy, "-n", "--configfile", str(bad_config(tmp_path / "bad.yaml", wrong_type)),
                           check=False)
    assert result.returncode != 0
    assert_short_message(result.stdout + result.stderr,
                         "config key 'models.rot.epochs' = 'three': 'three' is not of type 'integer'",
                         "'models.rot.epochs': Training epochs")


def test_snapshot_epochs_beyond_the_training_stop_the_dry_run(workflow_copy, tmp_path):
    def late_snapshot(config):
        config["models"]["rot"]["snapshot_epochs"] = [config["models"]["rot"]["epochs"] + 1]

    result = run_snakemake(workflow_copy, "-n", "--configfile", str(bad_config(tmp_path / "bad.yaml", late_snapshot)),
                           check=False)
    assert result.returncode != 0
    assert "config key 'models.rot.snapshot_epochs' = " in result.stdout + result.stderr
