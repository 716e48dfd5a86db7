"""k-means pseudo-labels of the pretraining images from some models' concatenated features (CLS, CODC rounds)."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.pseudo_labels import make_pseudo_labels

    options = snakemake.params.labels
    make_pseudo_labels(
        model_paths=list(snakemake.input.models),
        pretrain_data=snakemake.params.pretrain_data,
        imagenet_root=snakemake.params.roots["imagenet"],
        num_clusters=options["num_clusters"],
        pca_dims=options["pca_dims"],
        seed=options["seed"],
        output=snakemake.output.labels,
        threads=snakemake.threads,
        log=log,
        data_workers=snakemake.config["resources"].get("data_workers", 0),  # run-time only: results do not depend on it
        metadata={"target": snakemake.params.target, "models": list(snakemake.params.label_models)},
    )
