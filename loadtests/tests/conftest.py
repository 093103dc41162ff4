"""The product suite's fixtures (real stores, the app, a client), for the tools' tests.

test_storm_tools.py runs the reference app and the invariant check against the same
PostgreSQL and Redis the product's tests use. The fixtures are tests/conftest.py's own,
looked up at run time: mypy checks loadtests/ strictly and the product's tests are
not part of that check.
"""

import importlib

_suite = importlib.import_module("tests.conftest")

app = _suite.app
clean_slate = _suite.clean_slate
client = _suite.client
container = _suite.container
make_app = _suite.make_app
stores = _suite.stores
