"""The one configuration resolution (:func:`avsegformer.configuration.resolve_config`):
what a run asks for vs what a checkpoint records, overrides, conflicts and their words."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from avsegformer.configuration import ResolvedConfig, resolve_config
from avsegformer.errors import CheckpointError, CheckpointMismatchError, ConfigError
from avsegformer.zoo import Config, get_config

CKPT = "runs/x/best.safetensors"


def trained_at_64(name: str = "tiny_s4") -> Config:
    """What `avsegformer train tiny_s4 --set img_size=64 lr=1e-4` records."""
    return get_config(name).with_overrides(["img_size=64", "lr=1e-4"])


# ------------------------------------------------------------------------ no checkpoint
def test_a_registered_name_with_overrides() -> None:
    resolved = resolve_config("tiny_s4", ["batch_size=4", "img_size=224"])
    assert resolved.config.name == "tiny_s4"
    assert (resolved.config.train.batch_size, resolved.config.data.img_size) == (4, 224)
    assert resolved.base == "registered configuration 'tiny_s4'"
    assert resolved.overrides == ("batch_size=4", "img_size=224") and resolved.notes == ()


def test_mapping_overrides_keep_their_types() -> None:
    resolved = resolve_config("tiny_s4", {"model.keep_unused_modules": True, "train.lr": 0.5})
    assert resolved.config.model.keep_unused_modules is True
    assert resolved.config.train.lr == 0.5
    assert resolved.overrides == ("model.keep_unused_modules=True", "train.lr=0.5")


def test_a_config_json_of_a_run(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(trained_at_64().to_json())
    resolved = resolve_config(str(path), ["epochs=3"])
    assert resolved.config.data.img_size == 64 and resolved.config.train.epochs == 3
    assert resolved.base == str(path)
    assert resolve_config(path).config == trained_at_64()  # a Path works too
    with pytest.raises(ConfigError, match=r"nope\.json: configuration file not found$"):
        resolve_config(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON \("):
        resolve_config(str(tmp_path / "bad.json"))


def test_a_config_or_a_model_config() -> None:
    config = trained_at_64()
    assert resolve_config(config).config is config
    assert resolve_config(config).base == "the given configuration 'tiny_s4'"
    custom = resolve_config(get_config("tiny_avss").model).config
    assert custom.name == "custom" and custom.num_classes == 71 == custom.model.num_classes
    with pytest.raises(ConfigError, match="^expected a model name, a config.json, a Config or a "
                       "ModelConfig, got int$"):  # fmt: skip
        resolve_config(3)  # type: ignore[arg-type]


def test_errors_without_a_configuration() -> None:
    with pytest.raises(ConfigError, match="^no configuration: give a registered name"):
        resolve_config()
    with pytest.raises(ConfigError, match="unknown"):
        resolve_config("tiny_s5")
    with pytest.raises(ConfigError, match="unknown configuration key 'nope'"):
        resolve_config("tiny_s4", ["nope=1"])
    with pytest.raises(ConfigError, match="is not of the form key=value"):
        resolve_config("tiny_s4", ["lr"])


# --------------------------------------------------------------------- with a checkpoint
def test_nothing_asked_uses_the_record_with_the_overrides() -> None:
    resolved = resolve_config(None, ["batch_size=8"], checkpoint=CKPT, recorded=trained_at_64())
    assert resolved.config == trained_at_64().with_overrides(["batch_size=8"])
    assert resolved.base == f"the configuration recorded in {CKPT}"


def test_nothing_asked_and_nothing_recorded_asks_for_a_name() -> None:
    calls = []

    def weights_hint() -> str:
        calls.append(1)
        return "it matches: tiny_s4"

    with pytest.raises(CheckpointError) as error:
        resolve_config(checkpoint="S4_best.pth", weights_hint=weights_hint)
    assert str(error.value) == (
        "S4_best.pth does not record its configuration: name it "
        "(pass name=...; it matches: tiny_s4)"
    )
    assert error.value.cli_text() == (
        "S4_best.pth does not record its configuration: name it "
        "(give --model NAME; it matches: tiny_s4; see `avsegformer models`)"
    )
    with pytest.raises(CheckpointError) as error:
        resolve_config(checkpoint="S4_best.pth", name_option="CONFIG")
    assert error.value.cli_text() == (
        "S4_best.pth does not record its configuration: name it "
        "(give CONFIG; see `avsegformer models`)"
    )
    assert calls == [1]  # asked only when the name is missing
    resolve_config("tiny_s4", checkpoint="S4_best.pth", weights_hint=weights_hint)
    assert calls == [1]


def test_the_recorded_name_keeps_the_record() -> None:
    # Trained with --set img_size=64: tested (and predicted) at 64, not the registered 128.
    resolved = resolve_config("tiny_s4", ["batch_size=8"], checkpoint=CKPT,
                              recorded=trained_at_64())  # fmt: skip
    assert resolved.config.data.img_size == 64 and resolved.config.train.lr == 1e-4
    assert resolved.config.train.batch_size == 8
    assert resolved.base == f"the configuration recorded in {CKPT}"
    # ... and an override still wins over the record.
    again = resolve_config("tiny_s4", ["img_size=96"], checkpoint=CKPT, recorded=trained_at_64())
    assert again.config.data.img_size == 96


def test_another_name_of_the_same_network_is_used_as_asked() -> None:
    recorded = dataclasses.replace(trained_at_64(), name="my_run")
    resolved = resolve_config("tiny_s4", checkpoint=CKPT, recorded=recorded)
    assert resolved.config == get_config("tiny_s4")
    assert resolved.base == "registered configuration 'tiny_s4'"


def test_overrides_count_when_comparing_networks() -> None:
    recorded = dataclasses.replace(get_config("tiny_s4").with_overrides(["query_num=7"]), name="q7")
    with pytest.raises(CheckpointMismatchError):
        resolve_config("tiny_s4", checkpoint=CKPT, recorded=recorded)
    resolved = resolve_config("tiny_s4", ["query_num=7"], checkpoint=CKPT, recorded=recorded)
    assert resolved.config.name == "tiny_s4" and resolved.config.model.query_num == 7


def test_another_network_is_refused_with_both_names() -> None:
    with pytest.raises(CheckpointMismatchError) as error:
        resolve_config("tiny_s4", checkpoint=CKPT, recorded=get_config("tiny_avss"))
    assert str(error.value) == (
        f"{CKPT} holds a 'tiny_avss' model, not a 'tiny_s4' one "
        "(leave out name= to build the model the file records)"
    )
    assert error.value.cli_text() == (
        f"{CKPT} holds a 'tiny_avss' model, not a 'tiny_s4' one "
        "(drop --model: the checkpoint records tiny_avss)"
    )
    with pytest.raises(CheckpointMismatchError) as error:
        resolve_config("tiny_s4", checkpoint=CKPT, recorded=get_config("tiny_avss"),
                       name_option="CONFIG")  # fmt: skip
    assert error.value.cli_text().endswith("(drop CONFIG: the checkpoint records tiny_avss)")


def test_a_name_for_a_file_without_a_record() -> None:
    resolved = resolve_config("tiny_s4", ["img_size=96"], checkpoint="S4_best.pth")
    assert resolved.config == get_config("tiny_s4").with_overrides(["img_size=96"])
    assert resolved.base == "registered configuration 'tiny_s4'"


# ------------------------------------------------------------------------------ resume
def test_resume_keeps_the_record_and_takes_the_training_settings() -> None:
    recorded = trained_at_64()
    asked = get_config("tiny_s4").with_overrides(["lr=1e-4", "epochs=60"])
    resolved = resolve_config(asked, checkpoint=CKPT, recorded=recorded, resume=True)
    assert resolved.config.data.img_size == 64  # the record's data settings
    assert resolved.config.train == asked.train  # the request's training settings
    assert resolved.notes == (
        "resuming with the saved configuration; model/data overrides ignored",
        "resuming with changed training settings: {'epochs': 60}",
    )
    same = resolve_config(recorded, checkpoint=CKPT, recorded=recorded, resume=True)
    assert same == ResolvedConfig(
        recorded, f"the configuration recorded in {CKPT} (training settings as requested)"
    )


def test_resume_refusals() -> None:
    with pytest.raises(CheckpointError, match=f"^{CKPT} records no configuration; cannot resume"):
        resolve_config("tiny_s4", checkpoint=CKPT, resume=True)
    with pytest.raises(ConfigError) as error:
        resolve_config("tiny_ms3", checkpoint=CKPT, recorded=get_config("tiny_s4"), resume=True)
    assert str(error.value) == (
        f"{CKPT} was trained as 'tiny_s4', not 'tiny_ms3'; resume with the same "
        "configuration or use another --out"
    )
    with pytest.raises(ConfigError, match="resuming needs the configuration"):
        resolve_config(checkpoint=CKPT, recorded=get_config("tiny_s4"), resume=True)


def test_the_record_survives_json() -> None:
    # What a checkpoint or config.json records is read back as the same configuration.
    recorded = Config.from_dict(json.loads(trained_at_64().to_json()))
    assert resolve_config(None, checkpoint=CKPT, recorded=recorded).config == trained_at_64()


def test_public_names() -> None:
    import avsegformer
    from avsegformer.settings import Precision

    assert avsegformer.resolve_config is resolve_config
    assert avsegformer.Precision is Precision
