"""The τ(t) plot: thresholds of the iterations, the fitted a·tan(b·t) curve and τ_stop, as a Slicer plot chart.

The columns are computed in the worker (:func:`.worker.tau_curves`); this side only shows them."""
from __future__ import annotations

import numpy as np
import slicer

COLUMNS = ("t", "tau", "fit", "tau_stop")


class TauPlot:
    """A table, three series (τ points, fitted line, τ_stop line) and a chart, kept up to date with a session."""

    def __init__(self, scene, name: str):
        self.table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} IterMask tau table")
        self.chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} IterMask tau plot")
        self.chart.SetTitle("IterMask: threshold per iteration")
        self.chart.SetXAxisTitle("iteration t")
        self.chart.SetYAxisTitle("tau (squared error)")
        self.series = []
        styles = (("tau", "tau(t)", (0.55, 0.2, 0.8), "scatter"), ("fit", "a tan(b t)", (0.9, 0.1, 0.1), "line"),
                  ("tau_stop", "tau_stop", (1.0, 0.55, 0.0), "line"))
        for column, label, color, kind in styles:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} IterMask {label}")
            series.SetAndObserveTableNodeID(self.table.GetID())
            series.SetXColumnName("t")
            series.SetYColumnName(column)
            series.SetColor(*color)
            if kind == "scatter":
                series.SetPlotType(series.PlotTypeScatter)
                series.SetLineStyle(series.LineStyleNone)
                series.SetMarkerStyle(series.MarkerStyleCircle)
            else:
                series.SetPlotType(series.PlotTypeLine)
                series.SetMarkerStyle(series.MarkerStyleNone)
            self.chart.AddAndObservePlotSeriesNodeID(series.GetID())
            self.series.append(series)
        self.update_columns({c: np.zeros(0) for c in COLUMNS})

    def nodes(self) -> list:
        return [self.chart, *self.series, self.table]

    def update_columns(self, columns: dict[str, np.ndarray]) -> None:
        slicer.util.updateTableFromArray(self.table, [columns[c].astype(np.float64) for c in COLUMNS], list(COLUMNS))
