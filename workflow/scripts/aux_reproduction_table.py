from skill_neurons.stages.aux_metrics import aux_reproduction_table

aux_reproduction_table(snakemake)  # noqa: F821
