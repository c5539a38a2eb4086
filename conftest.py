"""Root conftest: makes the repo importable and registers the fixture modules."""

pytest_plugins = [
    "tests.fixtures.registry",
    "tests.fixtures.secretmanager",
    "tests.fixtures.iam",
    "tests.fixtures.dataloop",
    "tests.fixtures.pubsub",
    "tests.fixtures.localcloud",
    "tests.fixtures.provisioning",
    "tests.fixtures.rotation",
]
