from skill_neurons.stages.label_words import dump_random_words

dump_random_words(snakemake)  # noqa: F821
