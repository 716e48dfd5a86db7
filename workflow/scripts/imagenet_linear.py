"""The legacy ImageNet linear classification track (the Places205 probe on ImageNet train/val) of one model."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.imagenet_track import evaluate_imagenet_linear

    evaluate_imagenet_linear(
        model_path=snakemake.input.model,
        probe_config=snakemake.params.probe,
        features_config=snakemake.params.features,
        imagenet_root=snakemake.params.roots["imagenet"],
        output=snakemake.output.result,
        metrics_output=snakemake.output.metrics,
        threads=snakemake.threads,
        log=log,
        data_workers=snakemake.config["resources"].get("data_workers", 0),
        checkpoint_every=snakemake.config["resources"].get("probe_checkpoint_every", 500),
    )
