from skill_neurons import plots, stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
plots.specificity_figure(s.input[0], s.output[0], style=s.params.style, dpi=s.params.dpi)
