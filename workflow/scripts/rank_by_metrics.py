from skill_neurons.stages.aux_metrics import rank_by_metrics

rank_by_metrics(snakemake)  # noqa: F821
