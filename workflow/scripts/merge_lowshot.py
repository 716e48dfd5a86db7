"""Track 2: one layer's low-shot result and test scores, merged from its per-k files (no torch: seconds)."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.lowshot_track import merge_voc07_lowshot

    merge_voc07_lowshot(
        results=snakemake.input.results,
        scores=snakemake.input.scores,
        k_values=snakemake.params.k_values,
        output=snakemake.output.result,
        scores_output=snakemake.output.scores,
        log=log,
    )
