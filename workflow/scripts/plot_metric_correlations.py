from skill_neurons.stages.aux_metrics import plot_metric_correlations

plot_metric_correlations(snakemake)  # noqa: F821
