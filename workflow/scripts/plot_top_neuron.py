from skill_neurons import plots, stages

s = snakemake  # noqa: F821
stages.setup_logging(s.log[0])
plots.top_neuron_distribution(s.input.ranking, s.input.scores, s.input.run, s.params.label_words, s.output[0],
                              style=s.params.style, dpi=s.params.dpi)
