"""Pretrain one model, or one CODC member for one round; a killed or preempted job resumes from its checkpoint
when the rule runs again."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.pretraining import pretrain_model

    pretrain_model(
        model_config=snakemake.params.model,
        pretrain_data=snakemake.params.pretrain_data,
        imagenet_root=snakemake.params.roots["imagenet"],
        model_output=snakemake.output.model,
        metrics_output=snakemake.output.metrics,
        snapshots_output=snakemake.output.get("snapshots"),  # codc rounds keep none
        data_files=list(snakemake.input.data),  # the embedded data set's manifest (none for real roots)
        threads=snakemake.threads,
        log=log,
        processes=int(snakemake.resources.get("gpu", 0) or 0) or 1,  # one torchrun process per GPU, all nodes
        nodes=int(snakemake.resources.get("nodes", 1) or 1),  # a SLURM job of several nodes (profiles/slurm)
        gpus=bool(snakemake.resources.get("gpu", 0)),
        data_workers=snakemake.config["resources"].get("data_workers", 0),  # run-time only: no result depends on it
    )
