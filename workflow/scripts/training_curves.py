"""One model's training curves (loss, label changes, small clusters, NMI, cluster sizes) for the report."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.reporting.training_curves import plot_training_curves

    series = plot_training_curves(snakemake.input.metrics, snakemake.wildcards.model, snakemake.output.plot)
    log.info("plotted %s", {key: len(value) for key, value in series.items()})
