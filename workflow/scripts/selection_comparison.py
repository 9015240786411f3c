from skill_neurons.stages.pruning import selection_comparison

selection_comparison(snakemake)  # noqa: F821
