"""Track 3: the Places205 linear probe (one BatchNorm + fc head per layer) of one model."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.places205_track import evaluate_places205_linear

    evaluate_places205_linear(
        inputs=dict(snakemake.input.items()),
        probe_config=snakemake.params.probe,
        features_config=snakemake.params.features,
        places205_root=snakemake.params.roots["places205"],
        output=snakemake.output.result,
        metrics_output=snakemake.output.metrics,
        predictions_output=snakemake.output.predictions,
        threads=snakemake.threads,
        log=log,
        data_workers=snakemake.config["resources"].get("data_workers", 0),
        checkpoint_every=snakemake.config["resources"].get("probe_checkpoint_every", 500),
    )
