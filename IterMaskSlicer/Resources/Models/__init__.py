"""Default model bundles (``*.pt``) shipped with IterMask; see MODEL_CARD.md beside them."""
