from skill_neurons.stages.plots import plot_importance

plot_importance(snakemake)  # noqa: F821
