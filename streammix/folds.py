"""Each star's fold from its ``source_id`` alone, for cross-fitted memberships.

With ``fit.cross_fit`` the ensemble's member ``m`` trains on every star whose
fold is not ``m`` (``m`` mod ``fit.cross_fit_folds`` when set) and holds that fold
out; a star's membership is then that of the member that never saw it, or the mean
of those that never did (see :func:`~streammix.membership.membership_table`).
A star's fold is a hash of its ``source_id`` and the seed, so the same star
lands in the same fold whatever the rows it is fitted or scored with.
"""

from __future__ import annotations

import numpy as np

from streammix.errors import InputError

__all__ = ["fold_of"]

# splitmix64 (Steele, Lea & Flood 2014): a bijective mix of 64-bit integers
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def fold_of(source_id: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """The fold (0 .. ``folds`` - 1) of each star: splitmix64 of its ``source_id``
    and ``seed``, modulo ``folds``. The folds are balanced in expectation, not
    exactly; unlike :func:`~streammix.compare.fold_labels`, a star's fold does
    not depend on the other stars.

    Arguments:
        source_id: The stars' integer identifiers.
        folds: The number of folds (at least 2).
        seed: Changes every star's fold.

    Returns:
        An int64 array of folds, one per star.

    Example:
        >>> import numpy as np
        >>> ids = np.arange(100_000)
        >>> folds = fold_of(ids, 4, seed=0)
        >>> bool((fold_of(ids[::-7], 4, seed=0) == folds[::-7]).all())
        True
        >>> np.round(np.bincount(folds) / len(ids), 2).tolist()
        [0.25, 0.25, 0.25, 0.25]
    """
    if folds < 2:
        raise InputError(f"folds: {folds}; cross-fitting needs at least 2")
    source_id = np.asarray(source_id)
    if source_id.dtype.kind not in "iu":
        raise InputError(f"source_id: folds need integer identifiers, got {source_id.dtype}")
    with np.errstate(over="ignore"):
        z = source_id.astype(np.int64).view(np.uint64) + np.uint64(seed % 2**64) * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(folds)).astype(np.int64)
