"""Everything made from finished results: the leaderboard and ablation tables (and their per-cell provenance),
the report's pages and training curves, the seeds study, the challenge submission and its scorer."""
