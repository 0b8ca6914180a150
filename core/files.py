"""Files the platform ships beside its code: the SQL, and Dagster's instance settings and
workspace. A source checkout has them at its root; a wheel carries them inside this package
(`force-include` in pyproject.toml), so an installed platform finds them wherever it runs."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def shipped(name: str) -> Path:
    """The shipped file or folder `name` (`sql`, `dagster.yaml`, `workspace.yaml`)."""
    for place in (_HERE / name, _HERE.parent / name):
        if place.exists():
            return place
    raise FileNotFoundError(f"{name} is neither in {_HERE} nor in {_HERE.parent}")
