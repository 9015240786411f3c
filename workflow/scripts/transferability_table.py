from skill_neurons.stages.transfer import transferability_table

transferability_table(snakemake)  # noqa: F821
