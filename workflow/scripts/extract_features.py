"""Extract the multi-layer features of one model on the splits of one data set."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.features import extract_split_features

    extract_split_features(
        model_path=snakemake.input.model,
        outputs=dict(zip(snakemake.params.splits, snakemake.output.features)),
        features_config=snakemake.params.features,
        roots=snakemake.params.roots,
        classes=snakemake.params.classes,
        threads=snakemake.threads,
        log=log,
        data_workers=snakemake.config["resources"].get("data_workers", 0),  # run-time only: no result depends on it
    )
