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


def test_repeat_spread_enters_the_errors():
    """With repeats, the paired difference's error adds the spread of its total over the fit seeds
    (standard deviation over sqrt(R)) to the stars' sampling error, in quadrature; with one fit the
    spread is not measured (NaN) and the error is the stars' alone."""
    rng = np.random.default_rng(2)
    ll = np.stack([rng.normal(-5, 2, 300), rng.normal(-5, 2, 300)])
    single = ComparisonResult(["a", "b"], np.arange(300), np.arange(300) % 3, ll, [["phi2"]] * 2).summary()
    star_err = float((ll[1] - ll[0]).std(ddof=1) * np.sqrt(300))
    assert single["delta_total_err"][1] == pytest.approx(star_err) == single["delta_total_star_err"][1]
    assert np.isnan(single["delta_total_fit_err"][1]) and single["repeats"][1] == 1
    totals = np.array([[-1500.0, -1510.0, -1490.0, -1500.0], [-1480.0, -1530.0, -1440.0, -1550.0]])
    repeated = ComparisonResult(["a", "b"], np.arange(300), np.arange(300) % 3, ll, [["phi2"]] * 2,
                                repeat_totals=totals).summary()
    fit_err = np.std([20.0, -20.0, 50.0, -50.0], ddof=1) / 2.0
    assert repeated["delta_total_fit_err"][1] == pytest.approx(fit_err)
    assert repeated["delta_total_err"][1] == pytest.approx(np.hypot(star_err, fit_err))
    assert repeated["delta_mean_err"][1] == pytest.approx(np.hypot(star_err, fit_err) / 300)
    assert repeated["delta_total_err"][0] == 0.0 and repeated.meta["repeats"] == 4


def test_repeats_fit_the_same_seeds_for_every_config(tiny):
    """Repeat r of a config fits with fit.seed + r: a config whose seed is one higher repeats, in its
    first repeat, the other's second fit exactly; other seeds give other fits; the per-star
    log-likelihood is the mean over the repeats."""
    _, truth, stars = tiny
    first = tiny_config(truth)
    later = first.model_copy(update={"fit": first.fit.model_copy(update={"seed": first.fit.seed + 1})})
    result = compare([first, later], stars, folds=2, repeats=2, names=["first", "later"])
    totals = result.repeat_totals
    assert totals.shape == (2, 2)
    assert totals[1, 0] == totals[0, 1]
    assert totals[0, 0] != totals[0, 1]
    np.testing.assert_allclose(result.log_likelihood.sum(axis=1), totals.mean(axis=1), rtol=1e-12)
    table = result.summary()
    assert np.isfinite(table["delta_total_fit_err"][1]) and table["delta_total_fit_err"][1] > 0
    with pytest.raises(InputError, match="repeats 0"):
        compare([first], stars, folds=2, repeats=0)


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
