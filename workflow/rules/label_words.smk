# Label-word independence (Wang et al.): prompts tuned with random label words find the same neurons.
WORD_TASKS = sorted(config["label_words"]["tasks"])
WORD_DRAWS = list(range(config["label_words"]["draws"]))
WORD_SEED = config["label_words"]["seed"]
# Another seed with the original words: how far a new seed alone moves the order, the scale of the draws'.
OTHER_WORD_SEED = next((seed for seed in SEEDS if seed != WORD_SEED), None)


wildcard_constraints:
    draw=r"\d+",


rule draw_label_words:
    """Random label words of one draw: common one-token whole words of the task's training text."""
    input:
        model=out("{model}/model"),
        train=out("data/{task}/train.parquet"),
    output:
        out("{model}/label_words/{task}/draw{draw}/words.json"),
    log:
        out("logs/{model}/draw_label_words/{task}/draw{draw}.log"),
    benchmark:
        out("benchmarks/{model}/draw_label_words/{task}/draw{draw}.tsv")
    # Seconds long, and what its draw's text readers wait for: without it, they waited for the run's end.
    priority: PRIORITY["FREES_DISK"]
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        **TASK,
    script:
        "../scripts/draw_label_words.py"


rule tune_random_words:
    """Prompt tuning of the label-word seed with one draw of random label words."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        words=out("{model}/label_words/{task}/draw{draw}/words.json"),
        text=TEXT_TICKET,
    output:
        prompt=out("{model}/label_words/{task}/draw{draw}/prompt.safetensors"),
        curve=out("{model}/label_words/{task}/draw{draw}/curve.parquet"),
        metrics=out("{model}/label_words/{task}/draw{draw}/metrics.json"),
    log:
        out("logs/{model}/tune_random_words/{task}/draw{draw}.log"),
    benchmark:
        out("benchmarks/{model}/tune_random_words/{task}/draw{draw}.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(120, text=True),
    params:
        **TASK,
        **TUNING,
        seed=WORD_SEED,
    script:
        "../scripts/tune_random_words.py"


rule dump_random_words:
    """Activations through the prompt tuned with random label words."""
    input:
        unpack(split_files),
        model=out("{model}/model"),
        words=out("{model}/label_words/{task}/draw{draw}/words.json"),
        prompt=out("{model}/label_words/{task}/draw{draw}/prompt.safetensors"),
        text=TEXT_TICKET,
    output:
        scored_only(directory(out("{model}/label_words/{task}/draw{draw}/activations"))),
    log:
        out("logs/{model}/dump_random_words/{task}/draw{draw}.log"),
    benchmark:
        out("benchmarks/{model}/dump_random_words/{task}/draw{draw}.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    threads: config["model_threads"]
    resources:
        **model_resources(60, text=True),
    params:
        **TASK,
        **DUMP,
    script:
        "../scripts/dump_random_words.py"


rule score_random_words:
    """Neuron scores of one random-label-word draw."""
    input:
        out("{model}/label_words/{task}/draw{draw}/activations"),
    output:
        out("{model}/label_words/{task}/draw{draw}/scores.parquet"),
    log:
        out("logs/{model}/score_random_words/{task}/draw{draw}.log"),
    benchmark:
        out("benchmarks/{model}/score_random_words/{task}/draw{draw}.tsv")
    priority: PRIORITY["FREES_DISK"]
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        **TASK,
    script:
        "../scripts/score_random_words.py"


rule label_word_independence:
    """Spearman correlation between the orders of the random-label-word draws and of the original words."""
    input:
        original=expand(out(f"{{{{model}}}}/scores/{{task}}/seed{WORD_SEED}.parquet"), task=WORD_TASKS),
        other_seed=(
            expand(out(f"{{{{model}}}}/scores/{{task}}/seed{OTHER_WORD_SEED}.parquet"), task=WORD_TASKS)
            if OTHER_WORD_SEED is not None
            else []
        ),
        draws=expand(out("{{model}}/label_words/{task}/draw{draw}/scores.parquet"), task=WORD_TASKS, draw=WORD_DRAWS),
        words=expand(out("{{model}}/label_words/{task}/draw{draw}/words.json"), task=WORD_TASKS, draw=WORD_DRAWS),
    output:
        **results_table("label_words", "label_words", "Skill neurons", "label words"),
    log:
        out("logs/{model}/label_word_independence.log"),
    benchmark:
        out("benchmarks/{model}/label_word_independence.tsv")
    localrule: True
    conda:
        "../../envs/skill_neurons.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        tasks=WORD_TASKS,
        seed=WORD_SEED,
    script:
        "../scripts/label_word_independence.py"
