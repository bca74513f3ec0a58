"""``register_datasets``, ``gym datasets`` and ``gym dataset make``: generators found per
environment, rows validated, files reproducible and written whole or not at all."""

from __future__ import annotations

import json
import random

import pytest

from gymcore import hookimpl
from gymcore.errors import GymError
from gymcore.generators import dataset_generators, find_generator, make_dataset, parse_options

from .conftest import run_gym


class Cities:
    """A test environment with two generators, one of which makes a bad row on request."""

    @hookimpl
    def register_datasets(self, register):
        def cities(size, seed, *, prefix="Weather in"):
            rng = random.Random(seed)
            for i in range(size):
                city = rng.choice(["Paris", "Oslo", "Lima"])
                yield {"id": i, "responses_create_params": {"input": f"{prefix} {city}?"},
                       "verifier_metadata": {"expected_city": city}}

        def broken(size, seed, bad_at=2):
            for i in range(size):
                yield {"responses_create_params": {"input": "x"}} if i != bad_at else {"no_params": True}

        register("cities", cities, "random cities")
        register("broken", broken, "a bad row at bad_at")


@pytest.fixture
def cities(bare_plugins):
    bare_plugins.register(Cities(), name="cities")
    return dataset_generators(bare_plugins)


def test_generators_are_named_by_their_environment(cities):
    assert sorted(cities) == ["cities:broken", "cities:cities"]
    assert find_generator(cities, "cities:cities").description == "random cities"
    with pytest.raises(GymError, match="offers 2 generators; name one"):
        find_generator(cities, "cities")
    with pytest.raises(GymError, match="unknown dataset generator 'nope'.*cities"):
        find_generator(cities, "nope")


def test_same_seed_same_bytes_and_options_reach_the_generator(cities, tmp_path):
    gen = cities["cities:cities"]
    paths = [tmp_path / f"{i}.jsonl" for i in range(3)]
    for path, seed in zip(paths, (5, 5, 6)):
        summary = make_dataset(gen, path, size=30, seed=seed, options=parse_options(["prefix=Forecast for"]),
                               progress=False)
        assert summary["rows"] == 30
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    rows = [json.loads(line) for line in paths[0].read_text().splitlines()]
    assert all(row["responses_create_params"]["input"].startswith("Forecast for ") for row in rows)


def test_a_bad_row_names_the_generator_and_row_and_writes_nothing(cities, tmp_path):
    out = tmp_path / "bad.jsonl"
    with pytest.raises(GymError, match=r"cities:broken:3: field 'responses_create_params': missing"):
        make_dataset(cities["cities:broken"], out, size=5, seed=0, options={}, progress=False)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


def test_an_unknown_option_and_an_existing_file_are_refused(cities, tmp_path):
    with pytest.raises(GymError, match="unexpected keyword argument 'colour'"):
        make_dataset(cities["cities:cities"], tmp_path / "x.jsonl", size=2, seed=0, options={"colour": 1},
                     progress=False)
    (tmp_path / "x.jsonl").write_text("keep me\n")
    with pytest.raises(GymError, match="already exists"):
        make_dataset(cities["cities:cities"], tmp_path / "x.jsonl", size=2, seed=0, options={}, progress=False)
    assert (tmp_path / "x.jsonl").read_text() == "keep me\n"


def test_options_are_yaml_scalars_and_malformed_ones_are_named():
    assert parse_options(["a=3", "b=0.5", "c=true", "d=[1, 2]", "e=hello world", "f="]) == \
        {"a": 3, "b": 0.5, "c": True, "d": [1, 2], "e": "hello world", "f": ""}
    with pytest.raises(GymError, match="'novalue': expected KEY=VALUE"):
        parse_options(["novalue"])


def test_the_weather_example_set_through_the_cli(tmp_path):
    listed = run_gym("datasets", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "weather:example" in {entry["name"] for entry in json.loads(listed.stdout)}
    out = tmp_path / "w.jsonl"
    made = run_gym("dataset", "make", "weather:example", "--size", "10", "--seed", "4", "-o", str(out), "-q")
    assert made.returncode == 0, made.stderr
    assert len(out.read_text().splitlines()) == 10
    too_many = run_gym("dataset", "make", "weather:example", "--size", "99", "-o", str(tmp_path / "y.jsonl"))
    assert too_many.returncode == 2 and "24 tasks" in too_many.stderr
