"""The model registry on its own: real ONNX Runtime sessions over a repository on disk,
versions appearing, failing and vanishing, and one load shared by concurrent callers."""

import asyncio
import json

import numpy as np
import pytest

from service.core.registry import ModelRegistry
from service.core.repository import Repository
from service.errors import NotFound
from service.metrics import Metrics
from service.runtime.sessions import Runtime
from service.settings import Settings
from tests.service.test_batcher_unit import TABLE, gather_model


def add_version(root, name: str, version: int) -> None:
    directory = root / name / str(version)
    directory.mkdir(parents=True)
    gather_model(directory / "model.onnx")


class CountingRuntime(Runtime):
    """The real runtime, counting the sessions it is asked to open."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.opened = 0

    def load(self, path, **kwargs):
        self.opened += 1
        return super().load(path, **kwargs)


def registry_over(root, runtime: Runtime | None = None) -> ModelRegistry:
    settings = Settings(models_dir=root, grpc_port=0)
    return ModelRegistry(settings, Repository(root), runtime or Runtime(device="cpu"), Metrics())


def test_refresh_loads_new_versions_and_drops_vanished_ones(tmp_path):
    async def scenario():
        registry = registry_over(tmp_path)
        add_version(tmp_path, "gather", 1)
        await registry.refresh()
        assert registry.has("gather", 1) and registry.get("gather").version == 1
        add_version(tmp_path, "gather", 2)
        await registry.refresh()
        assert [model.version for model in registry.versions("gather")] == [1, 2]
        assert registry.get("gather").version == 2  # latest by default
        assert registry.get("gather", "1").version == 1
        answer = await registry.get("gather").executor.run({"index": np.array([[3]], np.int64)})
        np.testing.assert_array_equal(answer[0], TABLE[[3]])
        for leftover in (tmp_path / "gather" / "2").iterdir():
            leftover.unlink()
        (tmp_path / "gather" / "2").rmdir()
        await registry.refresh()
        assert not registry.has("gather", 2) and registry.has("gather", 1)
        for version in registry.loaded():
            version.executor.close()

    asyncio.run(scenario())


def test_a_version_that_cannot_load_is_remembered_without_the_store_path(tmp_path):
    async def scenario():
        runtime = CountingRuntime(device="cpu")
        registry = registry_over(tmp_path, runtime)
        broken = tmp_path / "broken" / "1"
        broken.mkdir(parents=True)
        (broken / "model.onnx").write_bytes(b"not an onnx file")
        await registry.refresh()
        assert not registry.is_loaded("broken")
        reason = registry.failure("broken", 1)
        assert reason and str(tmp_path) not in reason, reason
        with pytest.raises(NotFound, match="no version that could be loaded"):
            registry.get("broken")
        await registry.refresh()  # a failed version is not retried on every poll
        assert runtime.opened == 1 and registry.failure("broken", 1) == reason
        registry.forget("broken", 1)
        assert registry.failure("broken", 1) is None

    asyncio.run(scenario())


def test_concurrent_loads_of_one_version_open_one_session(tmp_path):
    async def scenario():
        runtime = CountingRuntime(device="cpu")
        registry = registry_over(tmp_path, runtime)
        add_version(tmp_path, "gather", 1)
        (directory,) = registry.repository.scan()["gather"].values()
        await asyncio.gather(*(registry.load(directory) for _ in range(5)))
        assert runtime.opened == 1 and registry.has("gather", 1)
        registry.get("gather").executor.close()

    asyncio.run(scenario())


def test_config_json_overrides_batching_and_bad_values_fall_back(tmp_path):
    registry = registry_over(tmp_path)
    (tmp_path / "tuned").mkdir()
    (tmp_path / "tuned" / "config.json").write_text(
        json.dumps({"dynamic_batching": {"max_batch_size": 4, "max_queue_delay_microseconds": 7}})
    )
    policy = registry.policy_for("tuned")
    assert (policy.max_batch_size, policy.max_queue_delay_us) == (4, 7)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(
        json.dumps({"dynamic_batching": {"max_batch_size": "many"}})
    )
    assert registry.policy_for("odd").max_batch_size == registry.settings.max_batch_size


def test_unknown_names_and_versions_are_not_found(tmp_path):
    async def scenario():
        registry = registry_over(tmp_path)
        add_version(tmp_path, "gather", 1)
        await registry.refresh()
        with pytest.raises(NotFound, match="no model named 'other'"):
            registry.get("other")
        with pytest.raises(NotFound):
            registry.get("gather", 9)
        registry.get("gather").executor.close()

    asyncio.run(scenario())
