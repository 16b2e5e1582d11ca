"""``kind: field``: a wide, kinematically distinct population of the field.

A field often holds a population that is neither the thin stream nor the
smooth background the flows learnt off the stream: a dwarf galaxy's outskirts,
a thick-disc or halo substructure with its own mean proper motion. Left out of
the model, such stars fall to the stream (which widens) or to the background
(whose flows did learn them, since they are off the stream). A ``field``
component takes them: it is a stream-like component (tracks and widths that
are smooth functions of phi1, the same likelihood terms) with

- broad default bounds: a phi2 width up to the whole field, proper-motion
  widths of 0.3-10 mas/yr and a distance-modulus spread up to 1.5 mag;
- wide warm-start values and no track prior (control points stay possible);
- no isochrone term by default (``photometry: false``): a population of the
  field is not on the stream's isochrone;
- and it is not a member of the stream: ``p_member`` leaves it out unless
  ``model.member_components`` names it.

Example:
    >>> from streammix.config import Config
    >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]},
    ...                         "model": {"components": [{"name": "stream"}, {"kind": "field", "name": "halo"}]}})
    >>> [(c.kind, c.name, c.photometry) for c in cfg.model.components]
    [('stream', 'stream', True), ('field', 'halo', False)]
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from .components import ComponentConfig, StreamComponent

__all__ = ["FIELD_WIDTH_BOUNDS", "FieldComponent", "FieldComponentConfig"]

#: Default bounds of a field population's widths (the phi2 width's upper one is the field's extent).
FIELD_WIDTH_BOUNDS = {
    "pm_phi1_cosphi2_width": (0.3, 10.0),
    "pm_phi2_width": (0.3, 10.0),
    "distmod_width": (0.05, 1.5),
}
FIELD_INIT = {"phi2_width": 2.0, "pm_phi1_cosphi2_width": 2.0, "pm_phi2_width": 2.0, "distmod_width": 0.5}


class FieldComponent(StreamComponent):
    """A stream-like component whose kind is ``field`` (see the module).

    Example:
        >>> cfg = FieldComponentConfig(name="halo", network={"hidden": 8})
        >>> comp = cfg.build(["phi2", "pm_phi2"], cfg.default_bounds((-5.0, 5.0), None), (-5.0, 5.0))
        >>> comp.kind, [(p.name, p.low, p.high) for p in comp.parameter_specs][1:3]
        ('field', [('phi2_width', 0.1, 10.0), ('pm_phi2', -30.0, 30.0)])
    """

    kind = "field"


class FieldComponentConfig(ComponentConfig):
    """A wide population of the field, distinct in its kinematics: ``kind: field``.

    Example:
        >>> FieldComponentConfig(name="halo").default_init()["phi2_width"]
        2.0
    """

    member: ClassVar[bool] = False
    component_class: ClassVar[type] = FieldComponent

    kind: Literal["field"] = Field("field", description="field: a wide population, not a member of the stream")
    photometry: bool = Field(
        False,
        description="use the isochrone likelihood (the stream's isochrone) when the model has bands; off by default, "
        "a population of the field is not on it: its magnitudes then follow the background's colour-magnitude "
        "density given the astrometry",
    )

    def default_bounds(self, phi2_range: tuple[float, float], stars) -> dict[str, tuple[float, float]]:
        """The stream kind's bounds with :data:`FIELD_WIDTH_BOUNDS`, and a phi2
        width from 0.1 deg to the field's whole phi2 extent."""
        bounds = super().default_bounds(phi2_range, stars) | FIELD_WIDTH_BOUNDS
        bounds["phi2_width"] = (0.1, float(phi2_range[1] - phi2_range[0]))
        return bounds

    def default_init(self) -> dict[str, float]:
        return super().default_init() | FIELD_INIT
