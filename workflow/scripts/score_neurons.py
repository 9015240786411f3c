from skill_neurons.stages.ranking import score_neurons

score_neurons(snakemake)  # noqa: F821
