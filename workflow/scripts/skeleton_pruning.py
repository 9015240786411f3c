from skill_neurons.stages.pruning import skeleton_pruning

skeleton_pruning(snakemake)  # noqa: F821
