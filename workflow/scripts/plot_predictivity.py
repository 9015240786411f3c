from skill_neurons.stages.plots import plot_predictivity

plot_predictivity(snakemake)  # noqa: F821
