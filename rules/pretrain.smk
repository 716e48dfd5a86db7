# Pretraining of every model of config["models"] (resumable: see workflow/scripts/pretrain.py), and the
# intermediate backbones kept for time-to-accuracy curves (models named {model}@e{epoch}).


rule pretrain:
    input:
        data=data_input,
        method_inputs=pretrain_method_inputs,  # the files the method declares (CLS labels, a checkpoint)
    output:
        model=model_file("{model}"),
        metrics=training_metrics_file("{model}"),
        snapshots=directory(snapshots_dir("{model}")),
    log:
        log_file("pretrain", "{model}"),
    benchmark:
        benchmark_file("pretrain", "{model}")
    wildcard_constraints:
        model=planning.names_regex(planning.configured_models(CONFIG)),
    conda:
        conda_environment()
    threads: CONFIG["resources"]["torch_threads"]
    params:
        model=pretrain_model_config,
        pretrain_data=CONFIG["pretrain_data"],
        roots=roots("imagenet"),
        code=pretrain_code,
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/pretrain.py"


rule snapshot_model:
    input:
        snapshots=snapshots_dir("{model}"),
    output:
        model=model_file(SNAPSHOT_MODEL),
    log:
        log_file("pretrain", SNAPSHOT_MODEL),
    wildcard_constraints:
        model=planning.names_regex(planning.configured_models(CONFIG)),
        epoch="[0-9]+",
    conda:
        conda_environment()
    params:
        source=lambda wildcards: run_files.snapshot_name(wildcards.epoch),
    shell:
        "(cp {input.snapshots}/{params.source} {output.model}.tmp && mv {output.model}.tmp {output.model}) 2> {log}"
