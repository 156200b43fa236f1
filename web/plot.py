"""The τ(t) plot as an SVG string: the same columns the desktop's plot chart shows (:mod:`IterMaskSlicerLib.plots`),
drawn in the browser without a plotting library: τ of each iteration (dots), the fitted a·tan(b·t) (line) and
τ_stop (dashed)."""
from __future__ import annotations

import math

WIDTH, HEIGHT, MARGIN = 320, 150, 28
COLORS = {"tau": "#8c33cc", "fit": "#e61a1a", "tau_stop": "#ff8c00"}  # as the desktop's series


def tau_plot_svg(columns: dict[str, list]) -> str:
    """``columns``: ``t``, ``tau``, ``fit``, ``tau_stop`` (NaN or None where a value is unknown)."""
    def finite(values):
        return [v for v in values if v is not None and math.isfinite(v)]

    t = columns.get("t", [])
    ys = finite(columns.get("tau", []) + columns.get("fit", []) + columns.get("tau_stop", []))
    frame = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" class="im-plot">'
             f'<rect x="{MARGIN}" y="4" width="{WIDTH - MARGIN - 4}" height="{HEIGHT - MARGIN - 4}" fill="none" '
             'stroke="#888"/>')
    if not t or not ys:
        return frame + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" fill="#aaa" font-size="11" text-anchor="middle">' \
                       'τ per iteration appears after the first step</text></svg>'
    low, high = min(ys), max(ys)
    high = high if high > low else low + 1.0
    last = max(t[-1], 1.0)

    def x(v):
        return MARGIN + (WIDTH - MARGIN - 4) * v / last

    def y(v):
        return 4 + (HEIGHT - MARGIN - 4) * (1.0 - (v - low) / (high - low))

    parts = [frame]
    for column, dash in (("fit", ""), ("tau_stop", ' stroke-dasharray="4 3"')):
        points = " ".join(f"{x(ti):.1f},{y(v):.1f}" for ti, v in zip(t, columns[column])
                          if v is not None and math.isfinite(v))
        if points:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{COLORS[column]}" '
                         f'stroke-width="1.5"{dash}/>')
    parts += [f'<circle cx="{x(ti):.1f}" cy="{y(v):.1f}" r="2.2" fill="{COLORS["tau"]}"/>'
              for ti, v in zip(t, columns["tau"]) if v is not None and math.isfinite(v)]
    parts.append(f'<text x="{MARGIN}" y="{HEIGHT - 10}" fill="#aaa" font-size="10">0</text>'
                 f'<text x="{WIDTH - 4}" y="{HEIGHT - 10}" fill="#aaa" font-size="10" text-anchor="end">'
                 f'iteration {last:g}</text>'
                 f'<text x="2" y="12" fill="#aaa" font-size="10">{high:.3g}</text>'
                 f'<text x="2" y="{HEIGHT - MARGIN}" fill="#aaa" font-size="10">{low:.3g}</text></svg>')
    return "".join(parts)
