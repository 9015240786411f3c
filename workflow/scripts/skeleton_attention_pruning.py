from skill_neurons.stages.pruning import skeleton_attention_pruning

skeleton_attention_pruning(snakemake)  # noqa: F821
