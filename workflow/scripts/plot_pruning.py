from skill_neurons.stages.plots import plot_pruning

plot_pruning(snakemake)  # noqa: F821
