"""Honest evaluation of IterMask models (METHOD.md's rules): nothing here picks a threshold with labels.

- :mod:`.metrics`: segmentation, voxel ranking, reconstruction and scan-level detection metrics.
- :mod:`.methods`: IterMask runs, one-shot methods (AE, DAE, frequency-only ablation), the intensity threshold.
- :mod:`.artifacts`: synthetic artifacts and lesions (exact masks) on real scans.
- :mod:`.cases`, :mod:`.report`, :mod:`.figures`: labelled cases in, ``results.md`` / ``results.csv`` / figures out.
- :mod:`.detection`: scan-level artifact detection; :mod:`.benchmark`: the project's benchmark report.
- :mod:`.cli`: ``itermask evaluate``.
"""
