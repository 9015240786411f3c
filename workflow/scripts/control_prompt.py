from skill_neurons.stages.controls import control_prompt

control_prompt(snakemake)  # noqa: F821
