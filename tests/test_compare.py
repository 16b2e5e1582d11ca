"""Held-out likelihood comparison: folds, scoring, and a model that is missing
a real structure losing to one that has it."""

import numpy as np
import pytest

from streammix.compare import ComparisonResult, compare, fold_labels
from streammix.config import Config
from streammix.data import StarTable
from streammix.errors import InputError
from streammix.mock import MockConfig, generate_mock
from streammix.pipeline import demo_config, mock_columns


@pytest.fixture(scope="module")
def tiny():
    table, truth = generate_mock(MockConfig(n_stream=400, n_background=4000), seed=5)
    stars = StarTable.from_table(table, mock_columns(["true_component"]))
    return table, truth, stars


def tiny_config(truth, **model):
    cfg = demo_config(truth, ensemble=1, photometry=False)
    data = cfg.model_dump(mode="json", exclude={"source"})
    data["model"]["background"]["flow"].update({"epochs": 15, "hidden": 16, "transforms": 2})
    data["model"]["grid_size"] = 64
    data["model"].update(model)
    data["fit"].update({"steps": 250, "warm_start_steps": 100, "eval_every": 25, "patience": 100})
    return Config.from_dict(data)


def test_folds_depend_on_source_id_only():
    ids = np.random.default_rng(0).permutation(1000) + 10_000
    labels = fold_labels(ids, 4, seed=2)
    order = np.argsort(ids)
    np.testing.assert_array_equal(fold_labels(ids[order], 4, seed=2), labels[order])
    assert np.bincount(labels).tolist() == [250] * 4
    assert not np.array_equal(fold_labels(ids, 4, seed=3), labels)
    with pytest.raises(InputError, match="at least 2"):
        fold_labels(ids, 1)
    with pytest.raises(InputError, match="source_id"):
        fold_labels(np.array([1, 1, 2]), 2)


def test_a_model_without_the_stream_loses_on_held_out_stars(tiny):
    """The mock has a stream; a config whose only stream-like component is
    confined to a phi1 range the stream barely covers must lose, star by star,
    by many standard errors; the same config twice (once as a cross-fitted ensemble, which
    compare fits as one member) gives a zero difference."""
    _, truth, stars = tiny
    right = tiny_config(truth)
    comp = right.model.components[0].model_copy(update={"phi1_range": (-89.0, -80.0)})
    wrong = right.model_copy(update={"model": right.model.model_copy(update={"components": [comp]})})
    # a cross-fitted ensemble compares as one member: fitted exactly as ``right``
    again = right.model_copy(update={"fit": right.fit.model_copy(update={"ensemble": 2, "cross_fit": True})})
    result = compare([right, wrong, again], stars, folds=2, names=["right", "confined", "again"])
    table = result.summary()
    assert list(table["config"]) == ["right", "confined", "again"]
    assert table["n_stars"][0] == len(stars)
    delta, err = table["delta_total"][1], table["delta_total_err"][1]
    assert delta < -5 * err and delta < -50, (delta, err)
    # the same config, the same folds and seeds: the same fits
    assert abs(table["delta_total"][2]) < 1e-6
    per_star = result.per_star()
    assert set(per_star.colnames) == {"source_id", "fold", "loglike_right", "loglike_confined", "loglike_again"}
    assert np.isfinite(per_star["loglike_right"]).all()


def test_summary_errors_are_paired():
    rng = np.random.default_rng(1)
    common = rng.normal(-5, 2, 400)
    ll = np.stack([common, common + 0.01 + rng.normal(0, 0.001, 400)])
    table = ComparisonResult(["a", "b"], np.arange(400), np.arange(400) % 2, ll, [["phi2"], ["phi2"]]).summary()
    # the means differ by far less than their own errors, the paired difference by many of its own
    assert abs(table["mean_loglike"][1] - table["mean_loglike"][0]) < table["mean_loglike_err"][0]
    assert table["delta_mean"][1] > 50 * table["delta_mean_err"][1]


def test_configs_of_other_coordinates_are_refused(tiny):
    _, truth, stars = tiny
    a = tiny_config(truth)
    b = tiny_config(truth, coordinates=["parallax", "pm_phi1_cosphi2", "pm_phi2"])
    with pytest.raises(InputError, match="different coordinates"):
        compare([a, b], stars, names=["all", "no_phi2"])
    with pytest.raises(InputError, match="names"):
        compare([a, a], stars)


def test_configs_must_read_the_same_measurements(tiny, tmp_path):
    """Each config reads the stars itself (its own modelled errors); other measured
    values are refused before anything is fitted, naming what differs."""
    table, truth, _ = tiny
    first, second = tmp_path / "a.fits", tmp_path / "b.fits"
    table.write(first)
    shifted = table.copy()
    shifted["phi2"] = shifted["phi2"] * 0.999
    shifted.write(second)
    configs = []
    for path in (first, second):
        data = tiny_config(truth).model_dump(mode="json", exclude={"source"})
        data["data"].update(path=str(path), columns=mock_columns([]).model_dump())
        configs.append(Config.from_dict(data))
    with pytest.raises(InputError, match=r"config 'b' reads other stars than 'a' \(phi2\)"):
        compare(configs, names=["a", "b"])


def test_errors_may_differ_but_not_extinctions():
    from streammix.compare import _measurement_difference

    mags = {"g": np.array([18.0, 19.0])}
    first = StarTable(phi1=np.array([0.0, 1.0]), mags=mags, mag_errs={"g": np.array([0.01, 0.02])})
    second = StarTable(phi1=np.array([0.0, 1.0]), mags=mags, mag_errs={"g": np.array([0.03, 0.04])})
    assert _measurement_difference(first, second, {"g"}) == ""
    third = StarTable(phi1=np.array([0.0, 1.0]), mags=mags, extinction={"g": np.array([0.1, 0.1])})
    assert _measurement_difference(first, third, {"g"}) == "A_g"
