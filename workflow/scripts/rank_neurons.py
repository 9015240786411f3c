from skill_neurons.stages.ranking import rank_neurons

rank_neurons(snakemake)  # noqa: F821
