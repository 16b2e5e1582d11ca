"""``--set KEY=VALUE`` (streammix.overrides) through Config.from_yaml: entries of lists by
name or index, relative paths from the working directory, errors that name the key."""

from pathlib import Path

import pytest
import yaml

from streammix.config import Config
from streammix.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def test_overrides_reach_named_and_indexed_entries():
    config = Config.from_yaml(
        ROOT / "configs" / "gd1_dr2.yaml",
        overrides=["model.components.spur.phi1_range=[-36, -25]", "model.components.0.bounds.distmod=[13.5, 16]", "fit.ensemble=2"],
    )
    spur = next(c for c in config.model.components if c.name == "spur")
    assert tuple(spur.phi1_range) == (-36.0, -25.0)
    assert tuple(config.model.components[0].bounds["distmod"]) == (13.5, 16.0) and config.fit.ensemble == 2
    # the file's other settings stay
    assert config.model.components[0].bounds["phi2_width"] == Config.from_yaml(ROOT / "configs" / "gd1_dr2.yaml").model.components[0].bounds["phi2_width"]


def test_a_relative_path_given_by_set_is_the_working_directorys(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "stream.yaml").write_text(yaml.safe_dump({"data": {"path": "stars.fits"}, "field": {"phi1": [-10, 10], "phi2": [-2, 2]}}))
    monkeypatch.chdir(tmp_path)
    assert Path(Config.from_yaml(folder / "stream.yaml").data.path) == folder / "stars.fits"
    assert Path(Config.from_yaml(folder / "stream.yaml", overrides=["data.path=other.fits"]).data.path) == tmp_path / "other.fits"


@pytest.mark.parametrize(
    "setting, message",
    [
        ("fit.seed=one", "with --set: fit.seed"),
        ("model.background.blocks.7.kind=flow", "has 2 entries, no index 7"),
        ("model.components.stream=null", "model.components.0"),
    ],
)
def test_errors_name_the_key_and_say_set_was_given(setting, message):
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        Config.from_yaml(ROOT / "configs" / "gd1_dr2_photometry.yaml", overrides=[setting])
