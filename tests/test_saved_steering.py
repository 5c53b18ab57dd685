"""The saved-steering format: one call loads EBMs with their settings and deployment; a changed,
incomplete or foreign directory is a one-line error, never a silent default."""
import json
import os

import jax
import pytest

import eds_jax
from eds_jax import EBM, EBMSpec, SavedSteeringError, SteeringSettings
from eds_jax.core import deployment

from conftest import flip_one_bit, save_test_steering


def _ebms(width, layers):
    return {layer: EBM.init(EBMSpec.simple(width, 16), jax.random.PRNGKey(layer)) for layer in layers}


def _save(directory, **overrides):
    settings = dict(layers=(3, 5), eta={3: 10.0, 5: 30.0}, num_steps=2, energy_floor={3: -1.0, 5: 0.5},
                    eta_scale="hidden_norm", eta_fraction=0.1, hidden_norm={3: 100.0, 5: 300.0},
                    energy_floor_quantile=0.8, chosen_on_validation=True)
    settings.update(overrides)
    return eds_jax.save_steering(str(directory), _ebms(8, (3, 5)), SteeringSettings(**settings),
                                 system=deployment.OVER_CAUTIOUS_SYSTEM,
                                 model={"source": "m", "family": "llama", "hidden_size": 8, "num_layers": 6},
                                 judge={"fluency_threshold": 3.0}, training={"label_counts": {}})


def test_load_steering_gives_back_what_training_chose(tmp_path):
    _save(tmp_path / "e")
    saved = eds_jax.load_steering(str(tmp_path / "e"))
    assert saved.system == deployment.OVER_CAUTIOUS_SYSTEM and saved.judge == {"fluency_threshold": 3.0}
    assert saved.model["hidden_size"] == 8 and saved.settings.eta_fraction == 0.1
    steering = saved.steering
    assert steering.layers == (3, 5) and steering.num_steps == 2
    assert {l: float(v) for l, v in steering.etas.items()} == {3: 10.0, 5: 30.0}
    assert {l: float(v) for l, v in steering.energy_floors.items()} == {3: -1.0, 5: 0.5}
    # overrides: one eta for every layer, a layer subset, no floor, another system prompt
    saved = eds_jax.load_steering(str(tmp_path / "e"), eta=4.0, layers=[5], energy_floor=False,
                                  num_steps=1, system="Be brief.")
    assert saved.steering.layers == (5,) and saved.steering.energy_floors is None
    assert {l: float(v) for l, v in saved.steering.etas.items()} == {5: 4.0}
    assert saved.steering.num_steps == 1 and saved.system == "Be brief."
    with pytest.raises(ValueError, match="no saved EBM for \\[7\\]"):
        eds_jax.load_steering(str(tmp_path / "e"), layers=[7])
    with pytest.raises(ValueError, match="num_steps=2.7: expected a whole number"):
        eds_jax.load_steering(str(tmp_path / "e"), num_steps=2.7)


def test_a_kept_unsteered_choice_loads_as_no_steering_with_a_note(tmp_path):
    save_test_steering(tmp_path / "e", _ebms(8, (1, 2)), eta=0.0, unsteered=True, sweep={"table": []})
    saved = eds_jax.load_steering(str(tmp_path / "e"))
    assert saved.steering is None and "kept the model unsteered" in saved.note
    forced = eds_jax.load_steering(str(tmp_path / "e"), eta=2.0)  # an explicit eta steers anyway
    assert forced.steering is not None and forced.steering.layers == (1, 2)


def test_changed_parameter_files_are_refused(tmp_path):
    _save(tmp_path / "e")
    before = eds_jax.load_steering(str(tmp_path / "e"))
    flip_one_bit(str(tmp_path / "e"))
    with pytest.raises(ValueError, match="digest|corrupt|cannot be read"):
        eds_jax.load_steering(str(tmp_path / "e"))
    assert before.metadata["params_sha256"]


def _rewrite_metadata(directory, change):
    path = os.path.join(directory, "metadata", "metadata")
    meta = json.load(open(path))
    change(meta)
    json.dump(meta, open(path, "w"))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("system"), "lacks \\['system'\\]"),
    (lambda m: m.update(version=1), "version 1, this eds-jax reads version 2"),
    (lambda m: m["steering"].update(eta_scale="norm"), "eta_scale 'norm' is not one of"),
    (lambda m: m["steering"].update(num_steps=2.7), "num_steps 2.7 must be a whole number"),
    (lambda m: m["steering"].update(eta={"3": 1.0}), "eta covers layers \\[3\\], not \\[3, 5\\]"),
    (lambda m: m["steering"].update(layers=[3, 4]), "covers layers \\[3, 5\\], not \\[3, 4\\]"),
    (lambda m: m.update(system=3), "'system' is int"),
    (lambda m: m["layers"]["3"].update(hidden_dims=[32, 16]), "shapes|cannot be read"),
])
def test_incomplete_or_inconsistent_metadata_is_a_one_line_error(tmp_path, change, message):
    _save(tmp_path / "e")
    _rewrite_metadata(str(tmp_path / "e"), change)
    with pytest.raises(SavedSteeringError, match=message) as err:
        eds_jax.load_steering(str(tmp_path / "e"))
    assert "\n" not in str(err.value) and str(tmp_path / "e") in str(err.value)


def test_settings_and_ebms_must_agree_when_saving(tmp_path):
    settings = SteeringSettings(layers=(1,), eta={1: 1.0}, num_steps=1)
    with pytest.raises(ValueError, match="EBMs for layers \\[1, 2\\] but settings for \\[1\\]"):
        eds_jax.save_steering(str(tmp_path / "e"), _ebms(8, (1, 2)), settings, system=None,
                              model={"hidden_size": 8})
    assert not (tmp_path / "e").exists()
