"""Cross-track profiles of stream-like components, chosen by name.

A config chooses a component's profile with ``profile:`` (default
``gaussian``). To add one, write a :class:`CrossTrackProfile` subclass in a
file of this package, add it to :data:`PROFILES` below, and add it to the
list in ``tests/test_profiles.py``, which checks its normalisation, its CDF
and its draws against its density. See the documentation's "Add your own
component" for the Student-t as the worked example.

Example:
    >>> sorted(PROFILES)
    ['core_wings', 'gaussian', 'student_t']
    >>> get_profile("student_t").parameters[0].name
    'phi2_dof'
"""

from __future__ import annotations

from types import MappingProxyType

from .base import CrossTrackProfile, ProfileParameter
from .core_wings import CoreWings
from .gaussian import Gaussian
from .student_t import StudentT

__all__ = [
    "PROFILES",
    "CoreWings",
    "CrossTrackProfile",
    "Gaussian",
    "ProfileParameter",
    "StudentT",
    "get_profile",
    "shape_values",
]

#: The registry: a profile's name in a config -> its class.
PROFILES: MappingProxyType[str, type[CrossTrackProfile]] = MappingProxyType(
    {profile.name: profile for profile in (Gaussian, StudentT, CoreWings)}
)


def get_profile(name: str) -> CrossTrackProfile:
    """The profile called ``name`` (a key of :data:`PROFILES`).

    Arguments:
        name: The profile's name, e.g. ``"gaussian"``.

    Example:
        >>> get_profile("gaussian").name
        'gaussian'
        >>> get_profile("lorentzian")
        Traceback (most recent call last):
        ...
        ValueError: unknown cross-track profile 'lorentzian'; choose from core_wings, gaussian, student_t
    """
    try:
        return PROFILES[name]()
    except KeyError:
        raise ValueError(f"unknown cross-track profile {name!r}; choose from {', '.join(sorted(PROFILES))}") from None


def shape_values(name: str, given: dict[str, float]) -> dict[str, float]:
    """Constant values of profile ``name``'s shape parameters: ``given``, checked
    against its parameters and their default bounds, the defaults for the rest.

    Arguments:
        name: The profile's name.
        given: ``{parameter: value}``; may be empty.

    Example:
        >>> shape_values("student_t", {})
        {'phi2_dof': 4.0}
        >>> shape_values("gaussian", {"phi2_dof": 3.0})
        Traceback (most recent call last):
        ...
        ValueError: 'phi2_dof' is not a parameter of the gaussian profile
    """
    parameters = {p.name: p for p in get_profile(name).parameters}
    values = {}
    for key, value in given.items():
        if key not in parameters:
            raise ValueError(f"{key!r} is not a parameter of the {name} profile")
        spec = parameters[key]
        if not spec.low <= float(value) <= spec.high:
            raise ValueError(f"{key} {value} is outside [{spec.low}, {spec.high}]")
        values[key] = float(value)
    return {key: values.get(key, spec.init) for key, spec in parameters.items()}
