# skill-neurons: find the neurons of a pre-trained Transformer that encode task skills.
from skill_neurons.config import validate_config


# The embedded default, unless --configfile names another: Snakemake would otherwise merge the two
# (a config's tasks added to the default's). --config overrides apply on top of either.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


validate_config(config, workflow.source_path("workflow/schemas/config.schema.yaml"))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/prompt.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/ranking.smk"
include: "workflow/rules/perturbation.smk"
include: "workflow/rules/controls.smk"
include: "workflow/rules/label_words.smk"
include: "workflow/rules/pruning.smk"
include: "workflow/rules/plots.smk"


# Seconds of work on small files: on a cluster they run on the submit host instead of waiting in the queue.
localrules:
    all,
    table1,
    neuronal_importance,
    task_specificity,
    plot_predictivity,
    plot_top_neuron,
    plot_perturbation,
    plot_importance,
    plot_specificity,
    controls_table,
    draw_label_words,
    label_word_independence,
    pruning_table,
    plot_pruning,


rule all:
    input:
        all_outputs(),
    default_target: True
