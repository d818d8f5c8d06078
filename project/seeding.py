"""Demo and scale data: each domain app registers a seeder; `seed_demo` runs them.

A seeder is `seed(count: int, progress: Callable[[int], None]) -> int`: it brings its data set
up to `count` rows (idempotent: rows already there are kept and counted) and returns how many
it inserted.
"""

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Seeder:
    name: str
    seed: Callable[..., int]
    help: str


_seeders: dict[str, Seeder] = {}


def register_seeder(name: str, seed: Callable[..., int], *, help: str) -> None:
    _seeders[name] = Seeder(name=name, seed=seed, help=help)


def registered_seeders() -> dict[str, Seeder]:
    return dict(_seeders)
