from skill_neurons import plots, stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
plots.predictivity_histogram(list(s.input), s.params.seeds, s.output[0], bins=s.params.bins,
                             style=s.params.style, dpi=s.params.dpi)
