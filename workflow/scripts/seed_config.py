"""The configuration of one seed's run of the seeds study: the workflow's config with every training seed set."""
from pathlib import Path

from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    import yaml

    from ssl_challenge.core.io import write_text_atomic
    from ssl_challenge.plan.seed_configs import seeded_config

    seeded = seeded_config(snakemake.params.config, int(snakemake.wildcards.seed), str(Path.cwd()))
    write_text_atomic(snakemake.output.config, yaml.safe_dump(seeded, sort_keys=False))
    log.info("seed %s: %s", snakemake.wildcards.seed, snakemake.output.config)
