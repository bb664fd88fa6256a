import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest


@pytest.fixture(scope="session")
def saved_models(tmp_path_factory):
    """One tiny SavedModel per writer and shape, built once for the whole run."""
    from tests import saved_models as build

    root = tmp_path_factory.mktemp("saved_models")
    return {
        "keras3_dense": build.keras3_dense(root / "keras3_dense"),
        "keras3_conv": build.keras3_conv(root / "keras3_conv"),
        "tf_keras_conv": build.tf_keras_conv(root / "tf_keras_conv"),
        "tf_keras_two_inputs": build.tf_keras_two_inputs(root / "tf_keras_two_inputs"),
        "tf_module_two_inputs": build.tf_module_two_inputs(root / "tf_module_two_inputs"),
    }
