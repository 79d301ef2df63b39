"""train.compile: the decoder layers through inductor give eager's losses (dropout included) and resume exactly."""

from __future__ import annotations

import json

import pytest

from medkit.errors import TrainError
from medkit.train import compile as compiling
from medkit.train.loop import Interrupted
from medkit.train.verb import train
from tests.train.conftest import losses

SETS = {"train.max_steps": 4, "train.eval_every": 2, "train.save_every": 0, "lora.dropout": 0.1}


def test_auto_compiles_only_long_cpu_runs(monkeypatch):
    monkeypatch.setattr(compiling, "has_cxx", lambda: True)
    assert compiling.decide("auto", "cpu", compiling.AUTO_MIN_STEPS)[0] is True
    assert compiling.decide("auto", "cpu", compiling.AUTO_MIN_STEPS - 1)[0] is False
    assert compiling.decide("auto", "cpu", 10_000, hidden=576)[0] is True
    assert compiling.decide("auto", "cpu", 10_000, hidden=256)[0] is False  # overhead > fusion there
    assert compiling.decide("auto", "cuda", 10_000)[0] is False  # not measured on a GPU yet
    assert compiling.decide("off", "cpu", 10_000)[0] is False
    assert compiling.decide("on", "cpu", 1)[0] is True
    monkeypatch.setattr(compiling, "has_cxx", lambda: False)
    assert compiling.decide("auto", "cpu", 10_000) == (False, "auto: no C++ compiler for inductor")
    with pytest.raises(TrainError, match="train.compile = on needs a C\\+\\+ compiler"):
        compiling.decide("on", "cpu", 1)


def test_decoder_layers_are_the_repeated_blocks(make_recipe):
    from medkit.train import plan as lora

    r = make_recipe(sets={"lora.dropout": 0.0})
    model = lora.build_model(r, lora.plan_precision(r))
    layers = compiling.decoder_layers(model)
    assert len(layers) == model.config.num_hidden_layers and len({type(x) for x in layers}) == 1


@pytest.mark.slow
def test_compiled_layers_repeat_eager_losses_and_resume_exactly(make_recipe, tmp_path):
    eager = train(make_recipe(out=tmp_path / "eager", sets={**SETS, "train.compile": "off"})).run_dir
    fast = train(make_recipe(out=tmp_path / "fast", sets={**SETS, "train.compile": "on"})).run_dir
    info = json.loads((fast / "run.json").read_text())["train"]
    assert info["compiled"] == {"layers": True, "why": "train.compile = on"}
    a, b = losses(eager), losses(fast)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:  # dropout 0.1 draws from eager's generator under compile too: the same masks
        assert b[step] == pytest.approx(a[step], abs=1e-4), f"step {step}"

    cut = make_recipe(out=tmp_path / "cut", sets={**SETS, "train.compile": "on"})
    with pytest.raises(Interrupted):
        train(cut, interrupt_at=2)
    resumed = train(
        make_recipe(out=tmp_path / "cut", sets={**SETS, "train.compile": "on"}), resume=True
    ).run_dir
    c = losses(resumed)
    for step in a:
        assert c[step] == pytest.approx(a[step], abs=1e-4), f"resumed step {step}"
