"""Background block kinds (streammix.config.BLOCK_KINDS): each trains, is a
normalised density with exact handling of missing values, and round-trips
through its saved state; configs in the old list-of-lists form still validate."""

import numpy as np
import pytest
import torch
from scipy import integrate

from streammix.background import BackgroundFlows, check_background, load_block
from streammix.blocks import BlockModel
from streammix.config import BLOCK_KINDS, Config
from streammix.errors import InputError
from streammix.settings import FlowConfig

# One entry per block kind: the config entry (small, fast settings).
KINDS = [
    {"kind": "flow", "flow": {"transforms": 1, "hidden": 8, "epochs": 4}},
    {"kind": "gaussian_mixture", "components": 3, "flow": {"hidden": 8, "layers": 1, "epochs": 40, "learning_rate": 1e-2}},
]
FIELD = {"phi1": [-10, 10], "phi2": [-2, 2]}


def test_every_block_kind_is_tested():
    assert sorted(entry["kind"] for entry in KINDS) == sorted(BLOCK_KINDS)


def _data(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    phi1 = rng.uniform(-10, 10, n)
    values = np.stack([rng.normal(0.05 * phi1, 1.0), rng.normal(-2.0, 0.5, n)], axis=1)
    values[: n // 4, 1] = np.nan  # the second coordinate missing for a quarter of the stars
    return values, phi1


@pytest.mark.parametrize("entry", KINDS, ids=[e["kind"] for e in KINDS])
def test_block_kind_is_a_normalised_density_that_round_trips(entry, tmp_path):
    cfg = Config.from_dict({"field": FIELD, "model": {"coordinates": ["parallax", "pm_phi2"],
                            "background": {"blocks": [{**entry, "coordinates": ["parallax", "pm_phi2"]}]}}})
    block_cfg = cfg.model.background.blocks[0]
    assert block_cfg.kind == entry["kind"]
    values, phi1 = _data()
    block = block_cfg.train(values, phi1, cfg.model.background.flow, seed=1)
    assert isinstance(block, BlockModel) and block.kind == entry["kind"]
    assert block.settings == block_cfg.settings(cfg.model.background.flow)

    # the marginal of the first coordinate, for stars without the second, integrates to one
    grid = np.linspace(-8.0, 8.0, 801)
    one = block.log_prob(np.stack([grid, np.full_like(grid, np.nan)], axis=1), np.full_like(grid, 3.0))
    assert integrate.trapezoid(np.exp(one), grid) == pytest.approx(1.0, abs=0.02)
    # and the joint density over both does too
    g1, g2 = np.meshgrid(np.linspace(-7, 7, 141), np.linspace(-6, 2, 161), indexing="ij")
    both = block.log_prob(np.stack([g1.ravel(), g2.ravel()], axis=1), np.full(g1.size, -3.0)).reshape(g1.shape)
    mass = integrate.trapezoid(integrate.trapezoid(np.exp(both), g2[0], axis=1), g1[:, 0])
    assert mass == pytest.approx(1.0, abs=0.03)
    # a star with none of the block's coordinates gets 0
    assert block.log_prob(np.full((1, 2), np.nan), np.zeros(1))[0] == 0.0

    # the saved state records the kind and reads back to the same density
    path = block.save(tmp_path / "block0.pt")
    assert torch.load(path, weights_only=True)["kind"] == entry["kind"]
    again = load_block(path)
    probe = values[:200]
    np.testing.assert_array_equal(again.log_prob(probe, phi1[:200]), block.log_prob(probe, phi1[:200]))


def test_old_blocks_lists_and_kindless_files_are_flow_blocks(tmp_path):
    old = Config.from_dict({"field": FIELD, "model": {"background": {"blocks": [["parallax", "pm_phi2"]]}}})
    new = Config.from_dict({"field": FIELD, "model": {"background": {"blocks": [
        {"kind": "flow", "coordinates": ["parallax", "pm_phi2"]}]}}})
    assert old.model.background == new.model.background
    assert Config.from_dict({"field": FIELD}).model.background.blocks[0].coordinates == [
        "parallax", "pm_phi1_cosphi2", "pm_phi2"]
    values, phi1 = _data(400)
    block = old.model.background.blocks[0].train(values, phi1, FlowConfig(transforms=1, hidden=8, epochs=1))
    state = block.state_dict()
    del state["kind"]  # a file written before blocks had kinds
    torch.save(state, tmp_path / "old.pt")
    assert load_block(tmp_path / "old.pt").kind == "flow"


def test_a_block_may_override_the_shared_flow_settings():
    cfg = Config.from_dict({"field": FIELD, "model": {"background": {
        "flow": {"transforms": 2}, "blocks": [["parallax"], {"coordinates": ["pm_phi2"], "flow": {"transforms": 5}}]}}})
    shared = cfg.model.background.flow
    assert [b.settings(shared).transforms for b in cfg.model.background.blocks] == [2, 5]


@pytest.mark.parametrize(
    "update, message",
    [
        ({"model": {"background": {"blocks": [{"kind": "spline_forest", "coordinates": ["parallax"]}]}}},
         "config: model.background.blocks.0: kind 'spline_forest': not a background block kind; choose from flow, gaussian_mixture"),
        ({"model": {"background": {"blocks": [{"kind": "gaussian_mixture", "coordinates": ["parallax"], "bins": 4}]}}},
         "config: model.background.blocks.0.bins: Extra inputs are not permitted"),
        ({"model": {"background": {"blocks": [{"kind": "gaussian_mixture", "coordinates": ["parallax"]}],
                                   "limits": {"parallax": [None, 1.0]}}}},
         "config: model: background.blocks.0: a gaussian_mixture block cannot honour limits"),
        ({"data": {"selection": {"parallax": [None, 1.0]}},
          "model": {"background": {"blocks": [{"kind": "gaussian_mixture", "coordinates": ["parallax"]}]}}},
         "config: (top level): model.background.blocks.0: a gaussian_mixture block cannot honour data.selection's cuts on ['parallax']"),
        ({"model": {"components": [{"kind": "cloud", "name": "x"}]}},
         "config: model.components.0: kind 'cloud': not a component kind; choose from stream, field"),
    ],
)
def test_kind_errors_are_one_line_naming_the_key(update, message):
    with pytest.raises(InputError) as error:
        Config.from_dict({"field": FIELD, **update})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_background_of_mixed_kinds_fits_saves_and_is_checked(tmp_path):
    from streammix.mock import MockConfig, generate_mock
    from streammix.data import StarTable

    table, _ = generate_mock(MockConfig(n_stream=50, n_background=1500), seed=2)
    stars = StarTable.from_table(table)
    cfg = Config.from_dict({"field": {"phi1": [-90, 10], "phi2": [-5, 5]}, "model": {"background": {
        "flow": {"transforms": 1, "hidden": 8, "epochs": 2},
        "blocks": [["parallax"], {**KINDS[1], "coordinates": ["pm_phi1_cosphi2", "pm_phi2"]}]}}})
    background = BackgroundFlows.fit(stars, cfg.model.background.blocks, cfg.model.background.flow, errors=False)
    assert [b.kind for b in background.blocks] == ["flow", "gaussian_mixture"]
    check_background(background, cfg)
    background.save(tmp_path / "bg")
    again = BackgroundFlows.load(tmp_path / "bg")
    np.testing.assert_array_equal(again.log_prob(stars), background.log_prob(stars))
    swapped = Config.from_dict({**cfg.model_dump(mode="json", exclude={"source"}), "model": {
        **cfg.model_dump(mode="json")["model"], "background": {
            **cfg.model_dump(mode="json")["model"]["background"],
            "blocks": [["parallax"], ["pm_phi1_cosphi2", "pm_phi2"]]}}})
    with pytest.raises(InputError, match=r"model.background.blocks.1.kind: 'flow', but the given background's block"):
        check_background(again, swapped)
