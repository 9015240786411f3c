"""One module per rules file, one function per rule, named like it: `stages.prompt.tune_prompt(job)`.

Each function takes the Snakemake job (`snakemake` in the rule's script), reads its inputs, params and
outputs, calls the library and writes the outputs atomically.
"""
