"""Package layout only (metadata is in pyproject.toml).

`lua/` and `migrations/` stay at the top of the repository but ship inside the wheel as
the packages `app.lua` and `app.migrations`, read with `importlib.resources`, so an
installed (not editable) `sneakerdrop` runs from any folder. pyproject.toml alone cannot
add mapped packages to a `find` result, hence this file.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["app", "app.*"]),
        "app.lua",
        "app.migrations",
        "app.migrations.versions",
    ],
    package_dir={"app.lua": "lua", "app.migrations": "migrations"},
    package_data={
        "app": ["py.typed", "static/*"],
        "app.lua": ["*.lua"],
        "app.migrations": ["script.py.mako"],
    },
)
