from skill_neurons import plots, stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
plots.perturbation_curves(list(s.input), s.output[0], style=s.params.style, dpi=s.params.dpi)
