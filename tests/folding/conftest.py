import pytest


@pytest.fixture(autouse=True)
def seeded_keras():
    """Layer initialisers draw from Python's and numpy's generators: seed them per test,
    so that a test's random weights do not depend on the tests that ran before it."""
    import keras

    keras.utils.set_random_seed(1234)
