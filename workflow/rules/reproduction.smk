# The papers' numbers beside ours: one row per claim of workflow/resources/paper_claims.yaml.


rule reproduction_table:
    """Each claim of the papers (kept as data with its table or figure) beside our number and what differs."""
    input:
        claims=workflow.source_path("../resources/paper_claims.yaml"),
        table1=expand(out("{{model}}/ranking/{task}/summary.json"), task=TASKS),
        chance=out("{model}/tables/chance.parquet"),
        controls=out("{model}/tables/controls.parquet"),
        perturbation=out("{model}/tables/perturbation.parquet"),
        specificity=out("{model}/tables/specificity.parquet"),
        label_words=out("{model}/tables/label_words.parquet") if WORD_TASKS else [],
        pruning=out("{model}/tables/pruning.parquet") if PRUNING_TASKS else [],
        skeleton=expand(out("{{model}}/pruning/{task}/skeleton/metrics.json"), task=PRUNING_TASKS),
        transferability=out("{model}/tables/transferability_spearman.parquet") if TRANSFER_PAIRS else [],
    output:
        **results_table("reproduction", "reproduction", "Reproduction", "papers beside ours"),
    log:
        out("logs/{model}/reproduction_table.log"),
    benchmark:
        out("benchmarks/{model}/reproduction_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tasks=TASKS,
        types=[config["tasks"][task]["type"] for task in TASKS],
        pruning_tasks=PRUNING_TASKS,
        seeds=len(SEEDS),
        control_seeds=len(CONTROL_SEEDS),
        n_tokens=config["prompt"]["n_tokens"],
        max_train=config["data"]["max_train"],
        max_dev=config["data"]["max_dev"],
        max_test=config["data"]["max_test"],
        positions=config["perturbation"]["positions"],
        scope=config["perturbation"]["scope"],
        sweep_examples=config["perturbation"]["max_examples"],
        draws=config["label_words"]["draws"],
        keep_share=config["pruning"]["skill_neurons"]["keep_share"],
        layer_share=config["pruning"]["skill_neurons"]["layer_share"],
        reference_batch=config["pruning"]["speed"]["reference"]["batch"],
        reference_length=config["pruning"]["speed"]["reference"]["length"],
        precision=config["prompt"]["precision"],
    script:
        "../scripts/reproduction_table.py"
