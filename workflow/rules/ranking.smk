rule score_neurons:
    """One seed: predictivity, Avg/Max baselines and auxiliary-metric correlations of every neuron."""
    input:
        out("{model}/activations/{task}/seed{seed}"),
    output:
        out("{model}/scores/{task}/seed{seed}.parquet"),
    log:
        out("logs/{model}/score_neurons/{task}/seed{seed}.log"),
    benchmark:
        out("benchmarks/{model}/score_neurons/{task}/seed{seed}.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        **TASK,
    script:
        "../scripts/score_neurons.py"


rule rank_neurons:
    """Seeds merged: the skill-neuron ranking, the correlation ranking and a Table-1 row."""
    input:
        scores=expand(out("{{model}}/scores/{{task}}/seed{seed}.parquet"), seed=SEEDS),
        runs=expand(out("{{model}}/activations/{{task}}/seed{seed}"), seed=SEEDS),
        metrics=expand(out("{{model}}/prompts/{{task}}/seed{seed}/metrics.json"), seed=SEEDS),
    output:
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
        correlation=out("{model}/ranking/{task}/correlation.parquet"),
        selectivity=out("{model}/ranking/{task}/selectivity.parquet"),
        summary=out("{model}/ranking/{task}/summary.json"),
    log:
        out("logs/{model}/rank_neurons/{task}.log"),
    benchmark:
        out("benchmarks/{model}/rank_neurons/{task}.tsv")
    priority: PRIORITY["LONGEST_PATH"]
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        **TASK,
        seeds=SEEDS,
        min_subtask_examples=config["ranking"]["min_subtask_examples"],
    script:
        "../scripts/rank_neurons.py"


rule table1:
    """Prompt-tuning accuracy next to the top skill neuron's accuracy, per task (Wang et al. Table 1)."""
    input:
        expand(out("{{model}}/ranking/{task}/summary.json"), task=TASKS),
    output:
        **results_table("table1", "table1", "Skill neurons", "Table 1"),
    log:
        out("logs/{model}/table1.log"),
    benchmark:
        out("benchmarks/{model}/table1.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/table1.py"


rule chance_table:
    """Per task: is the tuned prompt above a random guess? Tasks at chance stay out of task-similarity claims."""
    input:
        summaries=expand(out("{{model}}/ranking/{task}/summary.json"), task=TASKS),
        tests=expand(out("data/{task}/test.parquet"), task=TASKS),
    output:
        **results_table("chance", "chance", "Skill neurons", "tasks at chance"),
    log:
        out("logs/{model}/chance_table.log"),
    benchmark:
        out("benchmarks/{model}/chance_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        alpha=config["ranking"]["chance_alpha"],
    script:
        "../scripts/chance_table.py"


rule task_specificity:
    """Spearman correlation of the predictivity orders of every pair of tasks, all layers and per layer."""
    input:
        expand(out("{{model}}/ranking/{task}/ranking.parquet"), task=TASKS),
    output:
        out("{model}/tables/specificity.parquet"),
    log:
        out("logs/{model}/task_specificity.log"),
    benchmark:
        out("benchmarks/{model}/task_specificity.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        tasks=TASKS,
    script:
        "../scripts/task_specificity.py"


rule specificity_table:
    """Task similarity per pair of tasks: per-layer Spearman averaged over layers (Fig. 5), and pooled."""
    input:
        specificity=out("{model}/tables/specificity.parquet"),
        chance=out("{model}/tables/chance.parquet"),
    output:
        **results_table("specificity_summary", "specificity_table", "Skill neurons", "task specificity table"),
    log:
        out("logs/{model}/specificity_table.log"),
    benchmark:
        out("benchmarks/{model}/specificity_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tasks=TASKS,
        types=[config["tasks"][task]["type"] for task in TASKS],
    script:
        "../scripts/specificity_table.py"
