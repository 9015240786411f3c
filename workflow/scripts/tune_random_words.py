from skill_neurons.stages.label_words import tune_random_words

tune_random_words(snakemake)  # noqa: F821
