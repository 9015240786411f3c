from skill_neurons.stages.ranking import table1

table1(snakemake)  # noqa: F821
