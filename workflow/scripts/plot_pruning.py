from skill_neurons import plots, stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
plots.pruning_figure(s.input.selection, s.input.search, s.input.speed, s.output[0], style=s.params.style,
                     dpi=s.params.dpi)
