from skill_neurons.stages.label_words import draw_label_words

draw_label_words(snakemake)  # noqa: F821
