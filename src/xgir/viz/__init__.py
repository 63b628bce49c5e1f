"""One visualisation module behind every figure: the CLI's, the benchmarks', the demo's and the
app's PNGs.

- :mod:`xgir.viz.normalize`: maps to colours as Captum's ``visualize_image_attr`` does
  (percentile clipping, signs ``all`` / ``positive`` / ``absolute_value`` / ``negative``,
  methods ``heat_map`` / ``blended_heat_map`` / ``original_image`` / ``masked_image`` /
  ``alpha_scaling``), diverging colours for signed maps, sequential ones otherwise;
- :mod:`xgir.viz.figures`: grids of maps with titles and colour bars, sample grids;
- :mod:`xgir.viz.labels`: names and titles that fit their panels.
"""

from xgir.viz.figures import bare, colorbar, heatmap_grid, legend_outside, sample_grid, show_image, to_display
from xgir.viz.labels import shorten, wrap
from xgir.viz.normalize import (
    DIVERGING,
    METHODS,
    PERCENTILE,
    SEQUENTIAL,
    SIGNS,
    attribution_rgb,
    kwargs_for,
    normalize_map,
    sign_for,
)

__all__ = ["DIVERGING", "METHODS", "PERCENTILE", "SEQUENTIAL", "SIGNS", "attribution_rgb", "bare", "colorbar",
           "heatmap_grid", "kwargs_for", "legend_outside", "normalize_map", "sample_grid", "shorten", "show_image",
           "sign_for", "to_display", "wrap"]
