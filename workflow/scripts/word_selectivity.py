from skill_neurons.stages.words import word_selectivity

word_selectivity(snakemake)  # noqa: F821
