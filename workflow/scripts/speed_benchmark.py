from skill_neurons.stages.pruning import speed_benchmark

speed_benchmark(snakemake)  # noqa: F821
