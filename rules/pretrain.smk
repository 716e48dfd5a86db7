# Pretraining of every model of config["models"] (resumable: see workflow/scripts/pretrain.py), and the
# intermediate backbones kept for time-to-accuracy curves (models named {model}@e{epoch}).


rule pretrain:
    input:
        data=data_input,
        labels=pretrain_extra_inputs,
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
        "../envs/pipeline.yaml"
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
        "../envs/pipeline.yaml"
    params:
        source=lambda wildcards: run_files.snapshot_name(wildcards.epoch),
    shell:
        "(cp {input.snapshots}/{params.source} {output.model}.tmp && mv {output.model}.tmp {output.model}) 2> {log}"
