pytest_plugins = ["tests.fixtures.db", "tests.fixtures.broker", "tests.fixtures.influx"]
