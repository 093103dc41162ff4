"""Overrides of library internals, all in one package (docs/RUNTIME.md has one section each).

Every override here names the internal it relies on, checks at start-up that the
internal is still there (failing loudly with the library's version when it is not),
has an off switch, and comes with a version bound on its library in pyproject.toml.
"""
