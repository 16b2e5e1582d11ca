"""The folder a fitted model is saved in: its files and their format.

A fitted model is a folder holding

- ``config.yaml``: the configuration it was fitted with;
- ``member<i>.pt``: the state dict of each ensemble member's mixture
  (:func:`torch.save`, plain tensors);
- ``background/block<j>.pt``: each block of the background
  (:meth:`~streammix.background.BackgroundFlows.save`), when the model has any,
  holding its ``kind`` (``flow``, ``gaussian_mixture``...), its settings and
  its tensors; a file without a kind (written before blocks had kinds) is a
  flow block;
- ``model.json``: the format version, the number of members and of background
  blocks, each block's kind and coordinates, the stars per degree on the phi1
  grid, every stream-like component's parameter bounds (:func:`mixture_bounds`)
  and the fit's summary.

:func:`write_model` writes such a folder from a :class:`SavedModel`, and
:func:`read_model` reads one back. Rebuilding the mixtures from their state
dicts needs the model's construction, so it is :func:`streammix.fit.load`'s;
:meth:`streammix.fit.FittedModel.save` and :func:`streammix.fit.load` are the
entry points most code wants.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .background import BackgroundFlows, background_view
from .config import Config
from .errors import InputError
from .mixture import Mixture
from .output import atomic_path

__all__ = ["FORMAT", "SavedModel", "mixture_bounds", "read_model", "write_model"]

FORMAT = 1
"""Version of the folder's layout, written to ``model.json``."""


@dataclass
class SavedModel:
    """What a fitted-model folder holds, before the mixtures are rebuilt.

    Arguments:
        config: The configuration the model was fitted with.
        members: Each ensemble member's mixture state dict.
        bounds: Every stream-like component's parameter bounds
            (:func:`mixture_bounds`), which rebuild the mixtures.
        background: The frozen background flows, or None.
        phi1_density: Stars per degree of the fitted data on the phi1 grid.
        summary: What happened during the fit.

    Example:
        >>> saved = SavedModel(Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}}),
        ...                    [], {}, None, np.zeros(3))
        >>> saved.summary
        {}
    """

    config: Config
    members: list[dict[str, torch.Tensor]]
    bounds: dict[str, dict[str, list[float]]]
    background: BackgroundFlows | None
    phi1_density: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)


def mixture_bounds(mixture: Mixture) -> dict[str, dict[str, list[float]]]:
    """Every stream-like component's parameter bounds, ``{component: {parameter: [low, high]}}``,
    to rebuild the mixture (:func:`streammix.fit.build_mixture`).

    Arguments:
        mixture: A mixture.

    Example:
        >>> from astropy.table import Table
        >>> from streammix.data import StarTable
        >>> from streammix.fit import build_mixture
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}})
        >>> stars = StarTable.from_table(Table({"source_id": [1, 2], "phi1": [0.0, 1.0], "phi2": [0.0, 0.5]}))
        >>> bounds = mixture_bounds(build_mixture(cfg, stars))
        >>> {name: bounds[name]["phi2"] for name in bounds}
        {'stream': [-2.0, 2.0]}
    """
    return {c.name: {p.name: [p.low, p.high] for p in c.parameter_specs} for c in mixture.components}


def write_model(folder: str | Path, saved: SavedModel, *, overwrite: bool = False) -> Path:
    """Write a fitted-model folder (see the module).

    Arguments:
        folder: The folder; created if needed.
        saved: What to write.
        overwrite: Replace a model already in ``folder``; without it that is an
            :class:`~streammix.errors.InputError`.

    Returns:
        The folder.

    Example:
        >>> import tempfile
        >>> cfg = Config.from_dict({"field": {"phi1": [-10, 10], "phi2": [-2, 2]}})
        >>> folder = write_model(Path(tempfile.mkdtemp()) / "model", SavedModel(cfg, [], {}, None, np.zeros(3)))
        >>> sorted(p.name for p in folder.iterdir())
        ['config.yaml', 'model.json']
        >>> read_model(folder).phi1_density
        array([0., 0., 0.])
    """
    folder = Path(folder)
    if (folder / "model.json").exists() and not overwrite:
        raise InputError(f"output '{folder}' already holds a fitted model; pass --overwrite to replace it")
    folder.mkdir(parents=True, exist_ok=True)
    for i, state in enumerate(saved.members):
        with atomic_path(folder / f"member{i}.pt", overwrite=True) as tmp:
            torch.save(state, tmp)
    if saved.background is not None:
        saved.background.save(folder / "background")
    with atomic_path(folder / "config.yaml", overwrite=True) as tmp:
        tmp.write_text(saved.config.to_yaml())
    meta = {
        "format": FORMAT,
        "members": len(saved.members),
        "background_blocks": len(saved.background.blocks) if saved.background is not None else 0,
        "blocks": [
            {"kind": getattr(block, "kind", "flow"), "coordinates": list(block.names)}
            for block in (saved.background.blocks if saved.background is not None else ())
        ],
        "phi1_density": [float(x) for x in saved.phi1_density],
        "bounds": saved.bounds,
        "summary": saved.summary,
    }
    with atomic_path(folder / "model.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=1, default=float))
    return folder


def read_model(folder: str | Path) -> SavedModel:
    """Read a folder :func:`write_model` wrote; tensors go to the config's ``fit.device``.

    Arguments:
        folder: The folder.

    Returns:
        Its contents; a missing or unreadable file is an
        :class:`~streammix.errors.InputError` naming it.

    Example:
        >>> read_model("no/such/folder")
        Traceback (most recent call last):
        ...
        streammix.errors.InputError: model 'no/such/folder': no model.json (not a fitted-model folder)
    """
    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.is_file():
        raise InputError(f"model '{folder}': no model.json (not a fitted-model folder)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise InputError(f"model '{meta_path}': not valid JSON") from None
    config_path = folder / "config.yaml"
    needed = [config_path, *(folder / f"member{i}.pt" for i in range(meta.get("members", 0)))]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise InputError(f"model '{folder}': missing {', '.join(missing)} (an incomplete model folder)")
    config = Config.from_dict(yaml.safe_load(config_path.read_text()), source=f"config '{config_path}'")
    device = config.fit.device
    background = None
    if meta["background_blocks"]:
        view = background_view(config)[0]
        background = BackgroundFlows.load(folder / "background", meta["background_blocks"], view, device=device)
        recorded = [entry["kind"] for entry in meta.get("blocks", [])]  # absent in folders written before kinds
        found = [getattr(block, "kind", "flow") for block in background.blocks]
        if recorded and recorded != found:
            raise InputError(f"model '{folder}': model.json records blocks of kinds {recorded}, the files hold {found}")
    members = [
        torch.load(folder / f"member{i}.pt", map_location=device, weights_only=True) for i in range(meta["members"])
    ]
    return SavedModel(config, members, meta["bounds"], background, np.asarray(meta["phi1_density"]), meta["summary"])
