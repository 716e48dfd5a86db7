# The embedded data set: Fashion-MNIST laid out as ImageNet (pretraining), VOC07 (SVM tracks) and Places205.


rule prepare_data:
    output:
        manifest=embedded_manifest(),
    log:
        f"{RESULTS}/logs/prepare_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        embedded=config["data"]["embedded"],
        code=code_digest("prepare_data.py"),
    script:
        "../workflow/scripts/prepare_data.py"
