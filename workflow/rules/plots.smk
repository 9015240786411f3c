rule plot_predictivity:
    """Histogram of neuron predictivity, prompt positions vs input Avg/Max, error bars over seeds."""
    input:
        expand(out("{{model}}/scores/{{task}}/seed{seed}.parquet"), seed=SEEDS),
    output:
        out("{model}/plots/{task}/predictivity.png"),
    params:
        seeds=SEEDS,
        bins=config["plots"]["bins"],
        style=config["plots"]["style"],
        dpi=config["plots"]["dpi"],
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/plots/{task}/predictivity.log"),
    benchmark:
        out("benchmarks/{model}/plots/{task}/predictivity.tsv")
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_predictivity.py"


rule plot_top_neuron:
    """Test activations of the top skill neuron by label, with its baseline (Wang et al. Fig. 1/2)."""
    input:
        ranking=out("{model}/ranking/{task}/ranking.parquet"),
        scores=out(f"{{model}}/scores/{{task}}/seed{SEEDS[0]}.parquet"),
        run=out(f"{{model}}/activations/{{task}}/seed{SEEDS[0]}"),
    output:
        out("{model}/plots/{task}/top_neuron.png"),
    params:
        label_words=task_leaf("label_words"),
        style=config["plots"]["style"],
        dpi=config["plots"]["dpi"],
    conda:
        "../../envs/skill_neurons.yaml"
    log:
        out("logs/{model}/plots/{task}/top_neuron.log"),
    benchmark:
        out("benchmarks/{model}/plots/{task}/top_neuron.tsv")
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_top_neuron.py"
