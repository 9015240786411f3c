from skill_neurons.stages.ranking import chance_table

chance_table(snakemake)  # noqa: F821
