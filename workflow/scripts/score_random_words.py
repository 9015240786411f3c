from skill_neurons.stages.label_words import score_random_words

score_random_words(snakemake)  # noqa: F821
