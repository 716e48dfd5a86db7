# Leaderboard (one row per model, one column per track), stage wall times, and plots.


rule leaderboard:
    input:
        evaluations=all_evaluation_files,
        benchmarks=pretrain_benchmarks,
    output:
        tables=multiext(f"{RESULTS}/tables/leaderboard", ".csv", ".md", ".tex"),
        stage_times=f"{RESULTS}/tables/stage_times.csv",
        lowshot_plot=report(
            f"{RESULTS}/plots/lowshot.png", caption="../report/lowshot.rst", category="Tables"
        ),
        provenance=f"{RESULTS}/tables/leaderboard.provenance.json",
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        evaluations=evaluation_outputs(),
        concatenations=concatenations(),
        benchmark_dir=f"{RESULTS}/benchmarks",
        code=code_digest("leaderboard.py"),
    script:
        "../workflow/scripts/leaderboard.py"


rule dc_vs_odc:
    input:
        dc_vs_odc_inputs,
    output:
        tables=multiext(f"{RESULTS}/tables/dc_vs_odc", ".csv", ".md"),
        plot=report(f"{RESULTS}/plots/dc_vs_odc.png", caption="../report/dc_vs_odc.rst", category="Tables"),
    log:
        f"{RESULTS}/logs/dc_vs_odc.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        spec=dc_vs_odc_spec(),
        code=code_digest("dc_vs_odc.py"),
    script:
        "../workflow/scripts/dc_vs_odc.py"
