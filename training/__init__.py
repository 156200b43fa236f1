"""Offline training and calibration of IterMask model bundles. Imports the core (``itermask``), never the reverse."""
