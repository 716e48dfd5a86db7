# The seeds study (target seeds_study, outside all_tracks): the whole experiment of the current config rerun
# once per seed of config key seeds_study.seeds (every training seed set to it), each in its own working
# directory results/seeds/seed{seed}/; then its tables as mean +- std over the seeds and the seed's claims judged
# against that noise (results/tables/claims.md). Hours on the embedded default: run it on purpose.


rule seed_config:
    output:
        config=f"{RESULTS}/seeds/seed{{seed}}/config.yaml",
    log:
        f"{RESULTS}/logs/seeds/seed{{seed}}_config.log",
    wildcard_constraints:
        seed="[0-9]+",
    conda:
        conda_environment()
    params:
        config={section: value for section, value in CONFIG.items() if section != "seeds_study"},
        code=code_digest("seed_config.py"),
    script:
        "../workflow/scripts/seed_config.py"


# The run is this workflow itself in another working directory, started by the Snakemake that runs this rule: its
# environment is the pipeline's plus Snakemake.
rule seed_run:
    input:
        config=f"{RESULTS}/seeds/seed{{seed}}/config.yaml",
    output:
        **{kind: path.replace(seed_dir(0), seed_dir("{seed}")) for kind, path in seed_tables(0).items()},
    log:
        f"{RESULTS}/logs/seeds/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/seeds/seed{{seed}}.tsv"
    wildcard_constraints:
        seed="[0-9]+",
    conda:
        "../envs/seeds_study.yaml"
    threads: lambda wildcards: workflow.cores  # every core: the run schedules its own jobs
    params:
        directory=lambda wildcards: seed_dir(wildcards.seed),
    shell:
        f"{sys.executable} -m snakemake --snakefile {workflow.main_snakefile} --directory {{params.directory}}"
        " --configfile $(realpath {input.config}) --cores {threads} all_tracks > {log} 2>&1"


rule seeds_study:
    input:
        unpack(seeds_study_inputs),
    output:
        leaderboard_csv=f"{RESULTS}/tables/seeds/leaderboard.csv",
        leaderboard_md=f"{RESULTS}/tables/seeds/leaderboard.md",
        ablation_csv=f"{RESULTS}/tables/seeds/codc_ablation.csv",
        ablation_md=f"{RESULTS}/tables/seeds/codc_ablation.md",
        claims_csv=f"{RESULTS}/tables/claims.csv",
        claims_md=f"{RESULTS}/tables/claims.md",
    log:
        f"{RESULTS}/logs/seeds_study.log",
    conda:
        conda_environment()
    params:
        seeds=study_seeds(),
        code=code_digest("seeds_study.py"),
    script:
        "../workflow/scripts/seeds_study.py"
