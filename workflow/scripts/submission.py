"""The challenge's submission files of one model (results/submission/<model>/) and their manifest."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.reporting.submission_build import build_submission, config_digest

    build_submission(
        model=snakemake.wildcards.model,
        spec=snakemake.params.spec,
        roots=snakemake.params.roots,
        classes=snakemake.params.classes,
        # of the whole configuration this job ran under (not a param: a change elsewhere must not rebuild it)
        config_digest=config_digest(snakemake.config),
        manifest_output=snakemake.output.manifest,
        log=log,
    )
