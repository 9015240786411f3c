from skill_neurons.stages.plots import plot_specificity

plot_specificity(snakemake)  # noqa: F821
