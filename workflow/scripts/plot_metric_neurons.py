from skill_neurons.stages.plots import plot_metric_neurons

plot_metric_neurons(snakemake)  # noqa: F821
