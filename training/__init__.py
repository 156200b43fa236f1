"""Offline training and evaluation of IterMask model bundles. Imports the core (``itermask``), never the reverse."""
