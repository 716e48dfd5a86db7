# The seed's own contribution: CLS (mixup classification on pseudo-labels from other models' features), CODC
# collaborative rounds (each member: its pretext loss + online clustering started from its peers' k-means labels)
# and feature concatenation (a model of its own on every track). The ablation table is in tables.smk.


rule pseudo_labels:
    input:
        models=lambda wildcards: [
            model_file(model) for model in planning.pseudo_label_models(CONFIG, wildcards.model)
        ],
        data=data_input,
    output:
        labels=pseudo_labels_file("{model}"),
    log:
        log_file("labels", "{model}"),
    benchmark:
        benchmark_file("labels", "{model}")
    wildcard_constraints:
        model=planning.names_regex(planning.models_with_pseudo_labels(CONFIG)),
    conda:
        conda_environment()
    threads: CONFIG["resources"]["torch_threads"]
    params:
        labels=lambda wildcards: planning.pseudo_label_options(CONFIG, wildcards.model),
        label_models=lambda wildcards: planning.pseudo_label_models(CONFIG, wildcards.model),
        target=lambda wildcards: wildcards.model,
        pretrain_data=CONFIG["pretrain_data"],
        roots=roots("imagenet"),
        code=code_digest("pseudo_labels.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/pseudo_labels.py"


rule codc_labels:
    input:
        models=lambda wildcards: [
            model_file(model)
            for model in planning.codc_label_models(
                CONFIG, wildcards.experiment, wildcards.member, int(wildcards.round)
            )
        ],
        data=data_input,
    output:
        labels=codc_labels_file("{experiment}", "{member}", "{round}"),
    log:
        log_file("labels", CODC_MEMBER_MODEL),
    benchmark:
        benchmark_file("labels", CODC_MEMBER_MODEL)
    wildcard_constraints:
        experiment=planning.names_regex(CONFIG["codc"]),
        member=planning.names_regex(planning.configured_models(CONFIG)),
        round="[1-9][0-9]*",
    conda:
        conda_environment()
    threads: CONFIG["resources"]["torch_threads"]
    params:
        labels=lambda wildcards: planning.codc_label_options(
            CONFIG, wildcards.experiment, int(wildcards.round)
        ),
        label_models=lambda wildcards: planning.codc_label_models(
            CONFIG, wildcards.experiment, wildcards.member, int(wildcards.round)
        ),
        target=lambda wildcards: planning.codc_member_model(
            CONFIG, wildcards.experiment, wildcards.member, int(wildcards.round)
        ),
        pretrain_data=CONFIG["pretrain_data"],
        roots=roots("imagenet"),
        code=code_digest("pseudo_labels.py"),
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/pseudo_labels.py"


rule codc_round:
    input:
        unpack(codc_round_inputs),
        data=data_input,
    output:
        model=model_file(CODC_MEMBER_MODEL),
        metrics=training_metrics_file(CODC_MEMBER_MODEL),
    log:
        log_file("pretrain", CODC_MEMBER_MODEL),
    benchmark:
        benchmark_file("pretrain", CODC_MEMBER_MODEL)
    wildcard_constraints:
        experiment=planning.names_regex(CONFIG["codc"]),
        member=planning.names_regex(planning.configured_models(CONFIG)),
        round="[1-9][0-9]*",
    conda:
        conda_environment()
    threads: CONFIG["resources"]["torch_threads"]
    params:
        model=codc_model_config,
        pretrain_data=CONFIG["pretrain_data"],
        roots=roots("imagenet"),
        code=codc_round_code,
        numerics=numerics_mode(),
    script:
        "../workflow/scripts/pretrain.py"


ruleorder: concat_voc07_features > extract_voc07_features
ruleorder: concat_places205_features > extract_places205_features


rule concat_voc07_features:
    input:
        members=lambda wildcards: concatenation_member_features(wildcards.model, "voc07"),
    output:
        features=[features_file("{model}", split) for split in DATASET_SPLITS["voc07"]],
    log:
        log_file("features", "{model}", "voc07"),
    benchmark:
        benchmark_file("features", "{model}", "voc07")
    wildcard_constraints:
        model=planning.names_regex(planning.concatenations(CONFIG)),
    conda:
        conda_environment()
    params:
        splits=DATASET_SPLITS["voc07"],
        code=code_digest("concat_features.py"),
    script:
        "../workflow/scripts/concat_features.py"


use rule concat_voc07_features as concat_places205_features with:
    input:
        members=lambda wildcards: concatenation_member_features(wildcards.model, "places205"),
    output:
        features=[features_file("{model}", split) for split in DATASET_SPLITS["places205"]],
    log:
        log_file("features", "{model}", "places205"),
    benchmark:
        benchmark_file("features", "{model}", "places205")
    params:
        splits=DATASET_SPLITS["places205"],
        code=code_digest("concat_features.py"),
