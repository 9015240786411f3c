from skill_neurons.stages.text import encode_text

encode_text(snakemake)  # noqa: F821
