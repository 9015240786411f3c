rule plot_predictivity:
    """Histogram of neuron predictivity, prompt positions vs input Avg/Max, error bars over seeds."""
    input:
        expand(out("{{model}}/scores/{{task}}/seed{seed}.parquet"), seed=SEEDS),
    output:
        report_figure("predictivity", "predictivity", "Skill neurons", "predictivity", per_task=True),
    log:
        out("logs/{model}/plot_predictivity/{task}.log"),
    benchmark:
        out("benchmarks/{model}/plot_predictivity/{task}.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
        seeds=SEEDS,
        bins=config["plots"]["bins"],
    script:
        "../scripts/plot_predictivity.py"


rule plot_top_neuron:
    """Test activations of the top skill neuron by label, with its baseline (Wang et al. Fig. 1/2)."""
    input:
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
        scores=out(f"{{model}}/scores/{{task}}/seed{SEEDS[0]}.parquet"),
        run=out(f"{{model}}/activations/{{task}}/seed{SEEDS[0]}"),
    output:
        report_figure("top_neuron", "top_neuron", "Skill neurons", "top neuron", per_task=True),
    log:
        out("logs/{model}/plot_top_neuron/{task}.log"),
    benchmark:
        out("benchmarks/{model}/plot_top_neuron/{task}.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
        label_words=task_leaf("label_words"),
    script:
        "../scripts/plot_top_neuron.py"


rule plot_perturbation:
    """Accuracy vs share of perturbed neurons per neuron order, error bars over seeds (Wang et al. Fig. 4)."""
    input:
        expand(out("{{model}}/perturbation/{{task}}/seed{seed}.parquet"), seed=SWEEP_SEEDS),
    output:
        report_figure("perturbation", "perturbation", "Perturbation", "sweep", per_task=True),
    log:
        out("logs/{model}/plot_perturbation/{task}.log"),
    benchmark:
        out("benchmarks/{model}/plot_perturbation/{task}.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
    script:
        "../scripts/plot_perturbation.py"


rule plot_importance:
    """Neuronal importance matrix, z-scored per evaluation task (Wang et al. Fig. 6)."""
    input:
        out("{model}/tables/importance.parquet"),
    output:
        report_figure("importance", "importance", "Perturbation", "neuronal importance"),
    log:
        out("logs/{model}/plot_importance.log"),
    benchmark:
        out("benchmarks/{model}/plot_importance.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
    script:
        "../scripts/plot_importance.py"


rule plot_specificity:
    """Task specificity: Spearman correlation of the tasks' orders, all layers and per layer (Fig. 5, 14)."""
    input:
        out("{model}/tables/specificity.parquet"),
    output:
        report_figure("specificity", "specificity", "Skill neurons", "task specificity"),
    log:
        out("logs/{model}/plot_specificity.log"),
    benchmark:
        out("benchmarks/{model}/plot_specificity.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
    script:
        "../scripts/plot_specificity.py"


rule plot_pruning:
    """Accuracy vs keep ratio per selection method, SKELETON's search, speedup vs batch size and length."""
    input:
        selection=out("{model}/pruning/{task}/selection.parquet"),
        search=out("{model}/pruning/{task}/skeleton/search.parquet"),
        speed=out("{model}/pruning/{task}/speed.parquet"),
    output:
        report_figure("pruning", "pruning", "Pruning", "pruning", per_task=True),
    log:
        out("logs/{model}/plot_pruning/{task}.log"),
    benchmark:
        out("benchmarks/{model}/plot_pruning/{task}.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        **PLOT_STYLE,
    script:
        "../scripts/plot_pruning.py"
