from skill_neurons.stages.prompt import encode_text

encode_text(snakemake)  # noqa: F821
