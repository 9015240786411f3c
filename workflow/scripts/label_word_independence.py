from skill_neurons import stages

p, s = snakemake.params, snakemake  # noqa: F821
stages.setup_logging(s.log[0])
draws, words = list(s.input.draws), list(s.input.words)
per_task = [slice(i * p.draws, (i + 1) * p.draws) for i in range(len(p.tasks))]
stages.label_word_independence(p.tasks, p.seed, list(s.input.original), [draws[t] for t in per_task],
                               [words[t] for t in per_task], dict(s.output))
