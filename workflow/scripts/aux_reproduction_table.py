from skill_neurons.stages.reproduction import aux_reproduction_table

aux_reproduction_table(snakemake)  # noqa: F821
