# Leaderboard (one row per model, one column per track), stage wall times, plots, the DC vs ODC table and the
# CODC ablation table (the seed's Table 2).


rule leaderboard:
    input:
        evaluations=all_evaluation_files,
        benchmarks=pretrain_benchmarks,
    output:
        tables=table_files("leaderboard", ".csv", ".md", ".tex"),
        stage_times=table_file("stage_times", ".csv"),
        lowshot_plot=report(plot_file("lowshot"), caption="../report/lowshot.rst", category="Tables"),
        provenance=table_file("leaderboard", ".provenance.json"),
    log:
        log_file("leaderboard"),
    conda:
        conda_environment()
    params:
        evaluations=evaluation_outputs(),
        concatenations=planning.concatenations(CONFIG),
        benchmark_dir=benchmarks_dir(),
        code=code_digest("leaderboard.py"),
    script:
        "../workflow/scripts/leaderboard.py"


rule dc_vs_odc:
    input:
        lambda wildcards: planning.dc_vs_odc_files(dc_vs_odc_spec()),
    output:
        tables=table_files("dc_vs_odc", ".csv", ".md"),
        plot=report(plot_file("dc_vs_odc"), caption="../report/dc_vs_odc.rst", category="Tables"),
    log:
        log_file("dc_vs_odc"),
    conda:
        conda_environment()
    params:
        spec=dc_vs_odc_spec(),
        code=code_digest("dc_vs_odc.py"),
    script:
        "../workflow/scripts/dc_vs_odc.py"


rule ablation_tables:
    input:
        lambda wildcards: [path for entry in ablation_entries() for path in entry[3]],
    output:
        tables=table_files("codc_ablation", ".csv", ".md", ".tex"),
        provenance=table_file("codc_ablation", ".provenance.json"),
    log:
        log_file("ablation_tables"),
    conda:
        conda_environment()
    params:
        entries=ablation_entries(),
        concatenations=planning.concatenations(CONFIG),
        code=code_digest("ablation_tables.py"),
    script:
        "../workflow/scripts/ablation_tables.py"
