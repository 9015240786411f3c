from skill_neurons.stages.aux_metrics import causal_test

causal_test(snakemake)  # noqa: F821
