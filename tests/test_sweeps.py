"""The sweep presets expand to the jobs they promise, each composed from its published recipe."""
from importlib.resources import files

import pytest
from omegaconf import OmegaConf

from lra import cli, registry

MODELS = ["transformer", "flash", "s4", "s4d", "mamba", "lightnet"]
LRA_TASKS = ["listops", "text", "retrieval", "image", "pathfinder", "pathx"]


@pytest.fixture
def composed_jobs(monkeypatch):
    """Run a sweep with the training replaced by a note of each job's composed config."""
    jobs = []

    def note(cfg):
        jobs.append((cfg.model.name, cfg.task.name, cfg.seed, cfg.recipe, cfg.trainer.accelerator))

    monkeypatch.setattr(cli, "_train_job", note)
    return jobs


@pytest.mark.parametrize("model", MODELS)
def test_a_model_preset_is_that_model_on_six_tasks_and_three_seeds(model):
    params = OmegaConf.load(files("lra.conf") / "sweep" / f"{model}.yaml").hydra.sweeper.params
    assert params.experiment.split(",") == [f"{model}/{task}" for task in LRA_TASKS]
    assert str(params.seed).split(",") == ["0", "1", "2"]


def test_lra_all_is_every_model_on_every_lra_task_with_three_seeds(lra, composed_jobs):
    params = OmegaConf.load(files("lra.conf") / "sweep" / "lra_all.yaml").hydra.sweeper.params
    assert str(params.seed).split(",") == ["0", "1", "2"]
    assert lra("sweep", "lra_all", "seed=0").code == 0  # one seed keeps the test short
    assert len(composed_jobs) == len(set(composed_jobs)) == 6 * 6
    assert {(m, t, recipe) for m, t, _, recipe, _ in composed_jobs} == {
        (m, t, f"{m}/{t}") for m in MODELS for t in LRA_TASKS}
    assert set(MODELS) <= set(registry.entries("model"))


def test_presets_take_overrides_like_any_sweep(lra, composed_jobs):
    assert lra("sweep", "s4d", "seed=7", "trainer=cpu").code == 0
    assert {(seed, device) for *_, seed, _, device in composed_jobs} == {(7, "cpu")}
    assert len(composed_jobs) == 6


def test_a_jobs_recorded_overrides_hold_its_presets_parameters(lra, monkeypatch):
    """What a job's paper-or-budget label is decided from (`lra.train.budget`)."""
    from hydra.core.hydra_config import HydraConfig

    seen = []
    monkeypatch.setattr(cli, "_train_job",
                        lambda cfg: seen.append(set(HydraConfig.get().overrides.task)))
    assert lra("sweep", "smoke", "seed=4").code == 0
    assert len(seen) == len(registry.entries("model"))
    assert all({"trainer=debug", "task=listops_mini", "seed=4"} <= job for job in seen)
