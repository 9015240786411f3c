from skill_neurons.stages.aux_metrics import aux_metrics_table

aux_metrics_table(snakemake)  # noqa: F821
