"""``itermask web``: the Slicer module's twin in the browser, on trame-slicer (``pip install "itermask-slicer[web]"``).

The page drives the same :mod:`IterMaskSlicerLib` workflow, logic and worker process as the desktop module; this
package holds only the trame side: the page (:mod:`.app`, :mod:`.ui`), files in and out (:mod:`.files`), the τ(t)
plot (:mod:`.plot`), one tab at a time (:mod:`.tabs`) and the command (:mod:`.cli`).
"""
