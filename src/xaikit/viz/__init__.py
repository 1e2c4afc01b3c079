"""Visualisation: heatmaps (positive red, negative blue, zero white), overlays, grids, curves, score plots and
the HTML report."""
from .heatmap import (
    colourise,
    heatmap,
    normalise,
    normalise_unsigned,
    overlay,
    plot_curves,
    plot_features,
    plot_grid,
    plot_scores,
    relevance_cmap,
    relevance_map,
    save_figure,
    save_png,
    to_rgb,
)
from .concepts import concepts_section, plot_composition, plot_embedding, plot_references
from .examples import examples_section
from .report import Scores, Section, html_section, image_section, note_section, scores_section, write_report
from .tabular import plot_bar, plot_beeswarm
from .waterfall import plot_force, plot_waterfall
from .image import plot_image
from .interactions import plot_interaction_heatmap, plot_interaction_matrix, plot_interaction_network, plot_walks
from .signals import plot_signal_relevance
from .contrastive import counterfactuals_section, rules_section

__all__ = [
    "relevance_map", "normalise", "normalise_unsigned", "colourise", "heatmap", "relevance_cmap", "to_rgb", "overlay",
    "save_png", "plot_grid", "plot_features", "plot_curves", "plot_scores", "save_figure", "plot_bar", "plot_beeswarm",
    "Section", "Scores", "examples_section", "image_section", "scores_section", "html_section", "note_section",
    "write_report",
    "concepts_section", "plot_composition", "plot_references", "plot_embedding",
    "plot_waterfall", "plot_force", "plot_image",
    "plot_interaction_matrix", "plot_interaction_network", "plot_interaction_heatmap", "plot_walks",
    "plot_signal_relevance",
    "rules_section", "counterfactuals_section",
]
