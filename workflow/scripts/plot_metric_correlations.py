from skill_neurons.stages.plots import plot_metric_correlations

plot_metric_correlations(snakemake)  # noqa: F821
