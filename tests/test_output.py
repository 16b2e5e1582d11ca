import pytest
from astropy.table import Table

from streammix.errors import InputError
from streammix.output import atomic_path, write_json, write_table


def test_existing_file_is_not_overwritten(tmp_path):
    target = tmp_path / "members.ecsv"
    write_table(Table({"a": [1]}), target)
    with pytest.raises(InputError, match="already exists"):
        write_table(Table({"a": [2]}), target)
    assert Table.read(target)["a"][0] == 1
    write_table(Table({"a": [3]}), target, overwrite=True)
    assert Table.read(target)["a"][0] == 3


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".ecsv", ".fits", ".parquet", ".csv"])
def test_round_trip_formats(tmp_path, suffix):
    table = Table({"source_id": [1, 2], "p_stream": [0.1, 0.9]})
    path = write_table(table, tmp_path / f"m{suffix}")
    back = Table.read(path)
    assert list(back["p_stream"]) == [0.1, 0.9]


def test_unknown_suffix_names_the_file(tmp_path):
    with pytest.raises(InputError, match="out.xyz"):
        write_table(Table({"a": [1]}), tmp_path / "out.xyz")


def test_write_json(tmp_path):
    import json

    write_json({"n": 3}, tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == {"n": 3}
