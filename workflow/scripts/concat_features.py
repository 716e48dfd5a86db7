"""The features of a concatenated model: its members' features, each block L2-normalised, side by side."""
from ssl_challenge.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.concat import concatenate_model_features

    concatenate_model_features(list(snakemake.input.members), snakemake.output.features, None, log)
