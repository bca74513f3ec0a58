"""Datasets made, not shipped: the task generators environments offer (``register_datasets``),
behind ``gym datasets`` and ``gym dataset make``.

A generated file is reproducible from its command line: the same generator, size, seed and
options give the same bytes. Every row is validated as ``gym collect`` would read it before
the file is in place, so a generator bug is an error naming the row, never a dataset that
fails later; the file appears whole or not at all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

import attrs
import orjson

from .dataset import validate_row
from .errors import GymError, InputError, UsageError
from .plugins import Plugins


@attrs.define
class Generator:
    """One registered generator: ``ENV:NAME``."""

    environment: str
    name: str
    generate: Callable[..., Iterable[dict[str, Any]]]
    description: str = ""

    @property
    def spec(self) -> str:
        return f"{self.environment}:{self.name}"


def dataset_generators(plugins: Plugins) -> dict[str, Generator]:
    """Every installed environment's generators, by ``ENV:NAME``; each environment's hook is
    called alone, so a generator is known by the environment that offers it."""
    found: dict[str, Generator] = {}
    manager = plugins.manager
    for environment in plugins.names("resource"):
        plugin = plugins.get(environment)
        others = [p for p in manager.get_plugins() if p is not plugin]
        caller = manager.subset_hook_caller("register_datasets", remove_plugins=others)
        if not caller.get_hookimpls():
            continue

        def register(name: str, generate: Callable[..., Iterable[dict[str, Any]]], description: str = "",
                     _environment: str = environment) -> None:
            generator = Generator(_environment, name, generate, description)
            found[generator.spec] = generator

        caller(register=register)
    return found


def parse_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` words into generator options; values are YAML scalars (``3``, ``0.5``,
    ``true``, ``[1, 2]``), anything else a string."""
    import yaml

    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"option {item!r}: expected KEY=VALUE, e.g. difficulty=3")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def find_generator(generators: dict[str, Generator], spec: str) -> Generator:
    """``ENV:NAME``, or ``ENV`` alone when that environment offers exactly one generator."""
    if spec in generators:
        return generators[spec]
    mine = [g for g in generators.values() if g.environment == spec]
    if len(mine) == 1:
        return mine[0]
    if mine:
        raise UsageError(f"environment {spec!r} offers {len(mine)} generators; name one: "
                       + ", ".join(g.spec for g in mine[:10]) + (" ..." if len(mine) > 10 else ""))
    environments = sorted({g.environment for g in generators.values()})
    hint = f"environments with generators: {', '.join(environments)}" if environments else \
        "no installed environment offers any"
    raise UsageError(f"unknown dataset generator {spec!r} ({hint}; `gym datasets` lists them)")


def make_dataset(generator: Generator, output: Path, *, size: int, seed: int, options: dict[str, Any],
                 overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Generate, validate and write ``size`` rows; return a summary."""
    if output.exists() and not overwrite:
        raise GymError(f"{output} already exists: pass --overwrite to replace it")
    try:
        rows = generator.generate(size=size, seed=seed, **options)
    except (TypeError, ValueError) as exc:  # the options given do not fit the generator
        raise UsageError(f"{generator.spec}: {exc}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=size, desc=f"Generating {generator.spec}", unit="row", file=sys.stderr, mininterval=0.25)
    written = 0
    try:
        with open(tmp, "wb") as out:
            for written, row in enumerate(rows, start=1):
                try:
                    validate_row(row, generator.spec, written)
                    line = orjson.dumps(row)
                except InputError as exc:
                    raise GymError(f"generator {generator.spec} made an invalid row: {exc}") from None
                except TypeError as exc:
                    raise GymError(f"generator {generator.spec}: row {written} is not JSON: {exc}") from None
                out.write(line + b"\n")
                if bar is not None:
                    bar.update(1)
        if written != size:
            raise GymError(f"generator {generator.spec} made {written} rows where {size} were asked for")
        tmp.replace(output)
    except (TypeError, ValueError) as exc:  # raised lazily, while the generator runs
        raise GymError(f"{generator.spec}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        if bar is not None:
            bar.close()
    return {"generator": generator.spec, "rows": written, "seed": seed, "options": options, "output": str(output)}
