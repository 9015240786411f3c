from skill_neurons.stages.label_words import label_word_independence

label_word_independence(snakemake)  # noqa: F821
