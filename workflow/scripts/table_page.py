"""A table of the results (and its per-cell provenance, when it has one) as an HTML page for the report."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.reporting.report_pages import write_table_page

    write_table_page(snakemake.params.title, snakemake.input.table, snakemake.output.page,
                     snakemake.input.get("provenance"))
    log.info("wrote %s", snakemake.output.page)
