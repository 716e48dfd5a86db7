"""One model's training curves (loss, label changes, small clusters, NMI, cluster sizes) for the report."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from ssl_challenge.jobs import job_logging  # noqa: E402

with job_logging(snakemake) as log:
    from ssl_challenge.training_curves import plot_training_curves

    series = plot_training_curves(snakemake.input.metrics, snakemake.wildcards.model, snakemake.output.plot)
    log.info("plotted %s", {key: len(value) for key, value in series.items()})
