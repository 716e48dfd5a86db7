"""Leaderboard tables (CSV, Markdown, LaTeX), stage wall times and the low-shot plot."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.reporting.leaderboard import write_leaderboard

    write_leaderboard(
        evaluations=snakemake.params.evaluations,
        benchmark_dir=snakemake.params.benchmark_dir,
        table_outputs=list(snakemake.output.tables),
        stage_times_output=snakemake.output.stage_times,
        lowshot_plot=snakemake.output.lowshot_plot,
        log=log,
    )
    from ssl_challenge.reporting.cell_provenance import leaderboard_cells, write_sidecar

    write_sidecar(snakemake.output.provenance, "leaderboard", leaderboard_cells(
        snakemake.output.tables[0], snakemake.params.evaluations, snakemake.params.concatenations, snakemake.config))
