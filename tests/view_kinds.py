"""Which spatial augmentation made a pretraining view, read off the view of an all-ones skeleton.

Crop-resize leaves a constant skeleton as it is, so only the spatial step changes it:
- joint corruption changes exactly the corrupted joints (zeroed, or all mapped by one matrix) and
  leaves the others at 1;
- shear maps every joint's (1, 1, 1) to the same point S @ (1, 1, 1), so all joints change, equally;
- both would change every joint, but not equally; neither would change nothing.
"""
import numpy as np

KINDS = ("corruption", "shear", "both", "neither")


def spatial_kind(view, num_corrupt):
    """The kind (one of KINDS) of one view (3, T, V, M) of an all-ones sample, frame 0, person 0."""
    points = np.asarray(view)[:, 0, :, 0].T  # (V, 3)
    changed = ~np.all(points == 1.0, axis=1)
    if not changed.any():
        return "neither"
    if changed.sum() == num_corrupt:
        return "corruption"
    if changed.all() and np.allclose(points, points[0]):
        return "shear"
    return "both"


def kind_fractions(views, num_corrupt):
    """{kind: fraction of the views} over an iterable of views."""
    kinds = [spatial_kind(view, num_corrupt) for view in views]
    return {kind: kinds.count(kind) / len(kinds) for kind in KINDS}


def zeroed_fraction(views):
    """Fraction of the views whose frame 0, person 0 has at least one joint at exactly (0, 0, 0)."""
    return float(np.mean([np.any(np.all(np.asarray(v)[:, 0, :, 0] == 0.0, axis=0)) for v in views]))
