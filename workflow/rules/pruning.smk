# Pruning (Wang et al. §6.1, SKELETON): every pruned model starts from one seed's tuned prompt.
PRUNING_SEED = config["pruning"]["seed"]
PRUNING_TASKS = sorted(config["pruning"]["tasks"])
PRUNING_PROMPT = out(f"{{model}}/prompts/{{task}}/seed{PRUNING_SEED}/prompt.safetensors")
# What Wang et al.'s pruning freezes the dropped neurons at; the first is the one the speed benchmark times.
FROZEN_CONSTANTS = config["pruning"]["skill_neurons"]["constants"]
# Wang et al.'s pruned models only feed the speed benchmark; SKELETON's is its method's result and stays.
PRUNED_MODELS_KEPT = config["pruning"]["skill_neurons"]["keep_models"]
# Only where it is not SKELETON's own (1), so that a run made before the option existed does not rerun.
WIDTH_MULTIPLE = config["pruning"]["skeleton"]["width_multiple"]
# Ours: attention key/value groups removed from SKELETON's pruned model by a second search.
ATTENTION_GROUPS = config["pruning"]["skeleton"]["attention_groups"]
# The speed benchmark times them all beside one dense model: SKELETON's, Wang et al.'s (and the attention variant).
TIMED_PRUNED_MODELS = len(PRUNING_TASKS) * (2 + ATTENTION_GROUPS)


wildcard_constraints:
    constant="|".join(FROZEN_CONSTANTS),


rule neuron_attribution:
    """SKELETON's scores of every FFN neuron, |h * dP(y)/dh| (with activation and gradient alone)."""
    input:
        model=out("{model}/model"),
        train=out("data/{task}/train.parquet"),
        prompt=PRUNING_PROMPT,
    output:
        out("{model}/pruning/{task}/attribution.parquet"),
    log:
        out("logs/{model}/neuron_attribution/{task}.log"),
    benchmark:
        out("benchmarks/{model}/neuron_attribution/{task}.tsv")
    priority: PRIORITY["LONG_JOB"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(10),
    params:
        **TASK,
        **PROMPTING,
        n_examples=config["pruning"]["skeleton"]["n_examples"],
        seed=PRUNING_SEED,
    script:
        "../scripts/neuron_attribution.py"


rule skeleton_pruning:
    """Binary search of the global keep ratio by attribution, the prompt re-tuned at every probe."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        # the dense model's text states: its accuracies are read, not run again
        text=TEXT_TICKET,
        prompt=PRUNING_PROMPT,
        scores=out("{model}/pruning/{task}/attribution.parquet"),
    output:
        model=directory(out("{model}/pruning/{task}/skeleton/model")),
        prompt=out("{model}/pruning/{task}/skeleton/prompt.safetensors"),
        search=out("{model}/pruning/{task}/skeleton/search.parquet"),
        metrics=out("{model}/pruning/{task}/skeleton/metrics.json"),
    log:
        out("logs/{model}/skeleton_pruning/{task}.log"),
    benchmark:
        out("benchmarks/{model}/skeleton_pruning/{task}.tsv")
    priority: PRIORITY["LONG_JOB"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(90, copies=2, text=True),
    params:
        **TASK,
        **RETUNING,
        **KEEP_RATIO_SEARCH,
        **({} if WIDTH_MULTIPLE == 1 else {"width_multiple": WIDTH_MULTIPLE}),
        seed=PRUNING_SEED,
    script:
        "../scripts/skeleton_pruning.py"


rule attention_attribution:
    """Ours: SKELETON's attribution of every attention key/value group, on its pruned model and prompt."""
    input:
        model=out("{model}/pruning/{task}/skeleton/model"),
        train=out("data/{task}/train.parquet"),
        prompt=out("{model}/pruning/{task}/skeleton/prompt.safetensors"),
    output:
        out("{model}/pruning/{task}/skeleton_attention/attribution.parquet"),
    log:
        out("logs/{model}/attention_attribution/{task}.log"),
    benchmark:
        out("benchmarks/{model}/attention_attribution/{task}.tsv")
    priority: PRIORITY["LONG_JOB"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(10),
    params:
        **TASK,
        **PROMPTING,
        n_examples=config["pruning"]["skeleton"]["n_examples"],
        seed=PRUNING_SEED,
    script:
        "../scripts/attention_attribution.py"


rule skeleton_attention_pruning:
    """Ours: the binary search again on SKELETON's pruned model, over the share of attention groups kept."""
    input:
        unpack(split_files),
        model=out("{model}/pruning/{task}/skeleton/model"),
        prompt=out("{model}/pruning/{task}/skeleton/prompt.safetensors"),
        metrics=out("{model}/pruning/{task}/skeleton/metrics.json"),
        scores=out("{model}/pruning/{task}/skeleton_attention/attribution.parquet"),
    output:
        model=directory(out("{model}/pruning/{task}/skeleton_attention/model")),
        prompt=out("{model}/pruning/{task}/skeleton_attention/prompt.safetensors"),
        search=out("{model}/pruning/{task}/skeleton_attention/search.parquet"),
        metrics=out("{model}/pruning/{task}/skeleton_attention/metrics.json"),
    log:
        out("logs/{model}/skeleton_attention_pruning/{task}.log"),
    benchmark:
        out("benchmarks/{model}/skeleton_attention_pruning/{task}.tsv")
    priority: PRIORITY["LONG_JOB"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60, copies=2),
    params:
        **TASK,
        **RETUNING,
        **KEEP_RATIO_SEARCH,
        seed=PRUNING_SEED,
    script:
        "../scripts/skeleton_attention_pruning.py"


rule skill_neuron_pruning:
    """Top skill neurons kept in the top layers, the rest folded at their baseline and removed; prompt re-tuned."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        # the dense model's text states: its accuracies are read, not run again
        text=TEXT_TICKET,
        prompt=PRUNING_PROMPT,
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
        run=out(f"{{model}}/activations/{{task}}/seed{PRUNING_SEED}"),
    output:
        model=kept_if(PRUNED_MODELS_KEPT, directory(out("{model}/pruning/{task}/skill_neurons/{constant}/model"))),
        prompt=out("{model}/pruning/{task}/skill_neurons/{constant}/prompt.safetensors"),
        metrics=out("{model}/pruning/{task}/skill_neurons/{constant}/metrics.json"),
    log:
        out("logs/{model}/skill_neuron_pruning/{task}/{constant}.log"),
    benchmark:
        out("benchmarks/{model}/skill_neuron_pruning/{task}/{constant}.tsv")
    priority: PRIORITY["LONG_JOB"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(30, copies=2, text=True),
    params:
        **TASK,
        **RETUNING,
        **SKILL_PRUNING,
        seed=PRUNING_SEED,
    script:
        "../scripts/skill_neuron_pruning.py"


rule selection_comparison:
    """Test accuracy at fixed keep ratios: attribution, activation, gradient, random, predictivity orders."""
    input:
        model=out("{model}/model"),
        # the dense model's text states: its accuracies are read, not run again
        text=TEXT_TICKET,
        test=out("data/{task}/test.parquet"),
        prompt=PRUNING_PROMPT,
        scores=out("{model}/pruning/{task}/attribution.parquet"),
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
    output:
        out("{model}/pruning/{task}/selection.parquet"),
    log:
        out("logs/{model}/selection_comparison/{task}.log"),
    benchmark:
        out("benchmarks/{model}/selection_comparison/{task}.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(30, copies=2, text=True),
    params:
        **TASK,
        **PROMPTING,
        keep_ratios=config["pruning"]["selection"]["keep_ratios"],
        seed=PRUNING_SEED,
    script:
        "../scripts/selection_comparison.py"


rule speed_benchmark:
    """Dense and every task's pruned models side by side (dense timed once): forward time over batches and lengths."""
    input:
        dense=out("{model}/model"),
        skeleton=expand(out("{{model}}/pruning/{task}/skeleton/model"), task=PRUNING_TASKS),
        skill_neurons=expand(
            out(f"{{{{model}}}}/pruning/{{task}}/skill_neurons/{FROZEN_CONSTANTS[0]}/model"), task=PRUNING_TASKS
        ),
        skeleton_attention=expand(
            out("{{model}}/pruning/{task}/skeleton_attention/model"),
            task=PRUNING_TASKS if ATTENTION_GROUPS else [],
        ),
    output:
        expand(out("{{model}}/pruning/{task}/speed.parquet"), task=PRUNING_TASKS),
    log:
        out("logs/{model}/speed_benchmark.log"),
    benchmark:
        out("benchmarks/{model}/speed_benchmark.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    # Holding this many cores keeps other jobs off them while the clock runs.
    threads: config["pruning"]["speed"]["threads"]
    resources:
        **model_resources(15 * TIMED_PRUNED_MODELS, copies=1 + TIMED_PRUNED_MODELS),
    params:
        **SPEED,
        tasks=PRUNING_TASKS,
    script:
        "../scripts/speed_benchmark.py"


rule pruning_table:
    """Accuracy, neurons and parameters kept, speedup per task (Wang et al. Table 4, SKELETON Table 1)."""
    input:
        skeleton=expand(out("{{model}}/pruning/{task}/skeleton/metrics.json"), task=PRUNING_TASKS),
        skill_neurons=expand(
            out("{{model}}/pruning/{task}/skill_neurons/{constant}/metrics.json"),
            task=PRUNING_TASKS,
            constant=FROZEN_CONSTANTS,
        ),
        speed=expand(out("{{model}}/pruning/{task}/speed.parquet"), task=PRUNING_TASKS),
        skeleton_attention=expand(
            out("{{model}}/pruning/{task}/skeleton_attention/metrics.json"),
            task=PRUNING_TASKS if ATTENTION_GROUPS else [],
        ),
    output:
        **results_table("pruning", "pruning_table", "Pruning", "pruning table"),
    log:
        out("logs/{model}/pruning_table.log"),
    benchmark:
        out("benchmarks/{model}/pruning_table.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        tasks=PRUNING_TASKS,
        constants=FROZEN_CONSTANTS,
    script:
        "../scripts/pruning_table.py"
