# The embedded data set: Fashion-MNIST laid out as ImageNet (pretraining), VOC07 (SVM tracks) and Places205.


rule prepare_data:
    output:
        manifest=embedded_manifest(),
    log:
        log_file("prepare_data"),
    benchmark:
        benchmark_file("prepare_data")
    conda:
        conda_environment()
    params:
        embedded=CONFIG["data"]["embedded"],
        code=code_digest("prepare_data.py"),
    script:
        "../workflow/scripts/prepare_data.py"
