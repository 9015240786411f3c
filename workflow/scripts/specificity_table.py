from skill_neurons.stages.ranking import specificity_table

specificity_table(snakemake)  # noqa: F821
