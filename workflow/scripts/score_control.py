from skill_neurons.stages.controls import score_control

score_control(snakemake)  # noqa: F821
