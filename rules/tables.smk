# Leaderboard (one row per model, one column per track), stage wall times, and plots.


rule leaderboard:
    input:
        evaluations=all_evaluation_files,
        benchmarks=pretrain_benchmarks,
    output:
        tables=multiext(f"{RESULTS}/tables/leaderboard", ".csv", ".md", ".tex"),
        stage_times=f"{RESULTS}/tables/stage_times.csv",
        lowshot_plot=f"{RESULTS}/plots/lowshot.png",
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        "../envs/pipeline.yaml"
    params:
        evaluations=evaluation_outputs(),
        benchmark_dir=f"{RESULTS}/benchmarks",
        code=code_digest("tables"),
    script:
        "../workflow/scripts/leaderboard.py"
