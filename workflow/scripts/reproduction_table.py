from skill_neurons.stages.reproduction import reproduction_table

reproduction_table(snakemake)  # noqa: F821
