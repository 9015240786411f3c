"""Rules of plots.smk: every figure of the report."""

from __future__ import annotations

from .. import plots
from ..settings import PlotStyle
from .common import Job, stage


def style(job: Job) -> dict:
    """The plots' style and dpi as keyword arguments."""
    look = PlotStyle.from_params(job.params)
    return {"style": look.style, "dpi": look.dpi}


@stage
def plot_predictivity(job: Job) -> None:
    """Histogram of neuron predictivity, prompt positions vs input Avg/Max, error bars over seeds."""
    plots.predictivity_histogram(list(job.input), job.params.seeds, job.output[0], bins=job.params.bins, **style(job))


@stage
def plot_top_neuron(job: Job) -> None:
    """Test activations of the top skill neuron by label, with its baseline (Wang et al. Fig. 1/2)."""
    plots.top_neuron_distribution(
        job.input.ranking, job.input.scores, job.input.run, job.params.label_words, job.output[0], **style(job)
    )


@stage
def plot_perturbation(job: Job) -> None:
    """Accuracy vs share of perturbed neurons per neuron order, error bars over seeds (Wang et al. Fig. 4)."""
    plots.perturbation_curves(list(job.input), job.output[0], **style(job))


@stage
def plot_importance(job: Job) -> None:
    """Neuronal importance, z-scored per evaluation task (Wang et al. Fig. 6)."""
    plots.importance_heatmap(job.input[0], job.output[0], **style(job))


@stage
def plot_specificity(job: Job) -> None:
    """Task specificity: Spearman correlation of the tasks' orders, all layers and per layer (Fig. 5, 14)."""
    plots.specificity_figure(job.input[0], job.output[0], **style(job))


@stage
def plot_pruning(job: Job) -> None:
    """Accuracy vs keep ratio per selection method, SKELETON's search, speedup vs batch size and length."""
    plots.pruning_figure(job.input.selection, job.input.search, job.input.speed, job.output[0], **style(job))
