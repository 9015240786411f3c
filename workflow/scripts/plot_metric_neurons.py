from skill_neurons.stages.aux_metrics import plot_metric_neurons

plot_metric_neurons(snakemake)  # noqa: F821
