# The HTML report: `snakemake --report results/report.html report_items` (`make report`). Items are outputs marked
# report() with an rst caption in report/: the tables as pages with each figure's provenance, the low-shot and DC
# vs ODC plots (rules/tables.smk) and one training-curve figure per trained model.


report: "../report/workflow.rst"


rule report_items:
    input:
        report_items_inputs,


rule training_curves:
    input:
        metrics=training_metrics_file("{model}"),
    output:
        plot=report(
            training_curve_file("{model}"),
            caption="../report/training_curves.rst",
            category="Training curves",
            labels={"model": "{model}"},
        ),
    log:
        log_file("report", "training_curves", "{model}"),
    wildcard_constraints:
        model=planning.names_regex(training_curve_models()),
    conda:
        conda_environment()
    params:
        code=code_digest("training_curves.py"),
    script:
        "../workflow/scripts/training_curves.py"


rule leaderboard_page:
    input:
        table=table_file("leaderboard", ".csv"),
        provenance=table_file("leaderboard", ".provenance.json"),
    output:
        page=report(
            table_page("leaderboard"),
            caption="../report/leaderboard.rst",
            category="Tables",
            labels={"table": "leaderboard"},
        ),
    log:
        log_file("report", "leaderboard_page"),
    conda:
        conda_environment()
    params:
        title="Leaderboard",
        code=code_digest("table_page.py"),
    script:
        "../workflow/scripts/table_page.py"


rule codc_ablation_page:
    input:
        table=table_file("codc_ablation", ".csv"),
        provenance=table_file("codc_ablation", ".provenance.json"),
    output:
        page=report(
            table_page("codc_ablation"),
            caption="../report/codc_ablation.rst",
            category="Tables",
            labels={"table": "CODC ablation"},
        ),
    log:
        log_file("report", "codc_ablation_page"),
    conda:
        conda_environment()
    params:
        title="CODC ablation (VOC07 SVM mAP, best layer by test mAP)",
        code=code_digest("table_page.py"),
    script:
        "../workflow/scripts/table_page.py"


rule dc_vs_odc_page:
    input:
        table=table_file("dc_vs_odc", ".csv"),
    output:
        page=report(
            table_page("dc_vs_odc"),
            caption="../report/dc_vs_odc_table.rst",
            category="Tables",
            labels={"table": "DC vs ODC"},
        ),
    log:
        log_file("report", "dc_vs_odc_page"),
    conda:
        conda_environment()
    params:
        title="DC vs ODC",
        code=code_digest("table_page.py"),
    script:
        "../workflow/scripts/table_page.py"
