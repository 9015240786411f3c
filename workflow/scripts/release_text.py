from skill_neurons.stages.text import release_text

release_text(snakemake)  # noqa: F821
