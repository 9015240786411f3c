from skill_neurons.stages.transfer import prompt_transfer

prompt_transfer(snakemake)  # noqa: F821
