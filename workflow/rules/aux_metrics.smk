# Auxiliary metrics (Zhao, Wang et al. 2025): a prompt tuned on instruction -> completion data, the neurons that
# correlate with a per-example metric, the examples that drive them, and (ours) whether they matter.
rule split_generation_data:
    """Train, dev and validation examples of one generation task."""
    input:
        aux_sources,
    output:
        **{split: out(f"{AUX_DATA}/{split}.parquet") for split in ("train", "dev", "validation")},
    log:
        out("logs/split_generation_data/{aux}.log"),
    benchmark:
        out("benchmarks/split_generation_data/{aux}.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        **AUX["data"],
        task=aux_task(DATA_KEYS),
        data_root=config["data_root"],
    script:
        "../scripts/split_generation_data.py"


rule tune_generation:
    """A soft prompt after the instruction, tuned on the completion's loss (AdamW), early-stopped on dev."""
    input:
        model=out("{model}/model"),
        train=out(f"{AUX_DATA}/train.parquet"),
        dev=out(f"{AUX_DATA}/dev.parquet"),
    output:
        prompt=out(f"{AUX_RUN}/prompt.safetensors"),
        curve=out(f"{AUX_RUN}/curve.parquet"),
        metrics=out(f"{AUX_RUN}/metrics.json"),
    log:
        out(f"logs/{AUX_RUN}/tune_generation.log"),
    benchmark:
        out(f"benchmarks/{AUX_RUN}/tune_generation.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60),
    params:
        **AUX_PROMPT,
        task=aux_task(RENDER_KEYS),
    script:
        "../scripts/tune_generation.py"


rule dump_generation:
    """Every neuron at every prompt position on the validation split, with each example's loss and confidence."""
    input:
        model=out("{model}/model"),
        prompt=out(f"{AUX_RUN}/prompt.safetensors"),
        validation=out(f"{AUX_DATA}/validation.parquet"),
    output:
        directory(out(f"{AUX_RUN}/activations")),
    log:
        out(f"logs/{AUX_RUN}/dump_generation.log"),
    benchmark:
        out(f"benchmarks/{AUX_RUN}/dump_generation.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(30),
    params:
        **AUX_RUNTIME,
        task=aux_task(RENDER_KEYS),
        eval_batch_size=AUX["prompt"]["eval_batch_size"],
        dtype=config["activations"]["dtype"],
    script:
        "../scripts/dump_generation.py"


rule rank_by_metrics:
    """Per metric: neurons by max-over-positions |r|, the top-k and its threshold, their extreme examples (§2.2)."""
    input:
        run=out(f"{AUX_RUN}/activations"),
        validation=out(f"{AUX_DATA}/validation.parquet"),
    output:
        ranking=out(f"{AUX_RUN}/ranking/ranking.parquet"),
        top=out(f"{AUX_RUN}/ranking/top.parquet"),
        thresholds=out(f"{AUX_RUN}/ranking/thresholds.json"),
        activations=out(f"{AUX_RUN}/ranking/activations.parquet"),
        examples=out(f"{AUX_RUN}/ranking/examples.parquet"),
        flags=out(f"{AUX_RUN}/ranking/flags.parquet"),
        interpretation=out(f"{AUX_RUN}/ranking/interpretation.parquet"),
        markdown=out(f"{AUX_RUN}/ranking/interpretation.md"),
        html=report(
            out(f"{AUX_RUN}/ranking/interpretation.html"),
            caption="../report/interpretation.rst",
            category="Auxiliary metrics",
            subcategory="{aux}",
            labels={"task": "{aux}", "seed": "{seed}", "figure": "interpretation"},
        ),
    log:
        out(f"logs/{AUX_RUN}/rank_by_metrics.log"),
    benchmark:
        out(f"benchmarks/{AUX_RUN}/rank_by_metrics.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        task=aux_task(PROBE_KEYS),
        top_k=AUX["top_k"],
        extremes=AUX["extremes"],
        permutation_draws=AUX["permutation_draws"],
    script:
        "../scripts/rank_by_metrics.py"


rule causal_test:
    """Ours: the loss per group with a metric's top-k neurons perturbed at the prompt positions, vs k random ones."""
    input:
        model=out("{model}/model"),
        prompt=out(f"{AUX_RUN}/prompt.safetensors"),
        validation=out(f"{AUX_DATA}/validation.parquet"),
        run=out(f"{AUX_RUN}/activations"),
        top=out(f"{AUX_RUN}/ranking/top.parquet"),
    output:
        out(f"{AUX_RUN}/causal.parquet"),
    log:
        out(f"logs/{AUX_RUN}/causal_test.log"),
    benchmark:
        out(f"benchmarks/{AUX_RUN}/causal_test.tsv")
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60),
    params:
        **AUX["causal"],
        **AUX_RUNTIME,
        task=aux_task(PROBE_KEYS),
        causal_metric=aux_leaf("causal_metric"),
        causal_groups=aux_leaf("causal_groups"),
        causal_accuracy=aux_leaf("causal_accuracy"),
        eval_batch_size=AUX["prompt"]["eval_batch_size"],
    script:
        "../scripts/causal_test.py"


rule plot_metric_correlations:
    """Every neuron's |r| with each metric, the top-k threshold marked (Zhao et al. Fig. 4, 6, 7)."""
    input:
        ranking=out(f"{AUX_RUN}/ranking/ranking.parquet"),
        thresholds=out(f"{AUX_RUN}/ranking/thresholds.json"),
    output:
        report(
            out(f"{AUX_RUN}/plots/correlations.png"),
            caption="../report/metric_correlations.rst",
            category="Auxiliary metrics",
            subcategory="{aux}",
            labels={"task": "{aux}", "seed": "{seed}", "figure": "correlations"},
        ),
    log:
        out(f"logs/{AUX_RUN}/plot_metric_correlations.log"),
    benchmark:
        out(f"benchmarks/{AUX_RUN}/plot_metric_correlations.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
        bins=config["plots"]["bins"],
    script:
        "../scripts/plot_metric_correlations.py"


rule plot_metric_neurons:
    """Each metric's top neuron: validation activation density per group (Zhao et al. Fig. 2, 3, 5)."""
    input:
        activations=out(f"{AUX_RUN}/ranking/activations.parquet"),
        examples=out(f"{AUX_RUN}/ranking/examples.parquet"),
    output:
        report(
            out(f"{AUX_RUN}/plots/top_neurons.png"),
            caption="../report/metric_neurons.rst",
            category="Auxiliary metrics",
            subcategory="{aux}",
            labels={"task": "{aux}", "seed": "{seed}", "figure": "top neurons"},
        ),
    log:
        out(f"logs/{AUX_RUN}/plot_metric_neurons.log"),
    benchmark:
        out(f"benchmarks/{AUX_RUN}/plot_metric_neurons.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
        groups=density_groups,
    script:
        "../scripts/plot_metric_neurons.py"


rule aux_metrics_table:
    """Per task: accuracy, thresholds next to the paper's, the flag among extreme examples, the causal test."""
    input:
        thresholds=aux_files("ranking/thresholds.json"),
        examples=aux_files("ranking/examples.parquet"),
        flags=aux_files("ranking/flags.parquet"),
        causal=aux_files("causal.parquet"),
    output:
        **results_table("aux_metrics", "aux_metrics", "Auxiliary metrics", "auxiliary metrics"),
        thresholds=out("{model}/tables/aux_thresholds.parquet"),
        flags=out("{model}/tables/aux_flags.parquet"),
        causal=out("{model}/tables/aux_causal.parquet"),
    log:
        out("logs/{model}/aux_metrics_table.log"),
    benchmark:
        out("benchmarks/{model}/aux_metrics_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tasks=AUX_TASKS,
        seeds=AUX_SEEDS,
    script:
        "../scripts/aux_metrics_table.py"


rule aux_reproduction_table:
    """The auxiliary-metric claims of the papers beside ours."""
    input:
        claims=workflow.source_path("../resources/paper_claims.yaml"),
        thresholds=out("{model}/tables/aux_thresholds.parquet"),
    output:
        **results_table("aux_reproduction", "reproduction", "Reproduction", "auxiliary metrics: papers beside ours"),
    log:
        out("logs/{model}/aux_reproduction_table.log"),
    benchmark:
        out("benchmarks/{model}/aux_reproduction_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        # [task, metric label, claim name]: a list, since Snakemake params are compared as plain values
        claims=[[task, metric, name] for task in AUX_TASKS for metric, name in AUX["tasks"][task]["claims"].items()],
        top_k=AUX["top_k"],
        seeds=len(AUX_SEEDS),
        n_tokens=AUX["prompt"]["n_tokens"],
        max_train=AUX["data"]["max_train"],
        max_validation=AUX["data"]["max_validation"],
        precision=config["prompt"]["precision"],
    script:
        "../scripts/aux_reproduction_table.py"
