"""The features of a concatenated model on the splits of one data set: its members' features, each block
L2-normalised, side by side."""
from ssl_challenge.core.jobs import job_logging

with job_logging(snakemake) as log:
    from ssl_challenge.stages.concat import concatenate_model_features

    splits = list(snakemake.params.splits)
    members = list(snakemake.input.members)  # member by member, and each member's files in the order of splits
    for index, output in enumerate(snakemake.output.features):
        concatenate_model_features(members[index :: len(splits)], output, None, log)
