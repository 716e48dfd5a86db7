"""The seeds study's tables (mean +- std over the seeds) and the claims judged against run-to-run noise."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.reporting.seeds_study import write_seeds_study

    write_seeds_study(snakemake.params.seeds, snakemake.input.leaderboard, snakemake.input.get("ablation", []),
                      snakemake.input.get("dc_vs_odc", []), dict(snakemake.output.items()), log)
