from skill_neurons.stages.pruning import attention_attribution

attention_attribution(snakemake)  # noqa: F821
