"""The run-setting value types: every spelling of a precision, its dtype per device, its
autocast context, and the one input-size rule (:mod:`avsegformer.settings`)."""

from __future__ import annotations

import json

import pytest
import torch

from avsegformer.cli import build_parser
from avsegformer.errors import ConfigError
from avsegformer.predictor import Predictor
from avsegformer.settings import Precision, check_img_size
from avsegformer.zoo import Config, TrainConfig, get_config

#: Every spelling users have been told about (README, --dtype, config.json) -> its member.
SPELLINGS = [
    ("auto", Precision.AUTO),
    ("fp32", Precision.FP32),
    ("float32", Precision.FP32),
    ("torch.float32", Precision.FP32),
    ("bf16", Precision.BF16),
    ("bfloat16", Precision.BF16),
    ("torch.bfloat16", Precision.BF16),
    ("fp16", Precision.FP16),
    ("float16", Precision.FP16),
    ("torch.float16", Precision.FP16),
    (" BF16 ", Precision.BF16),
    ("Float32", Precision.FP32),
]
ACCEPTED = "auto, fp32, bf16, fp16 (also float32, bfloat16, float16, with or without 'torch.')"


@pytest.mark.parametrize(("spelling", "member"), SPELLINGS)
def test_every_spelling_parses(spelling: str, member: Precision) -> None:
    assert Precision.parse(spelling) is member


@pytest.mark.parametrize(
    ("dtype", "member"),
    [(torch.float32, Precision.FP32), (torch.bfloat16, Precision.BF16),
     (torch.float16, Precision.FP16)],
)  # fmt: skip
def test_torch_dtypes_parse(dtype: torch.dtype, member: Precision) -> None:
    assert Precision.parse(dtype) is member
    assert Precision.parse(member) is member


@pytest.mark.parametrize("value", ["half", "fp64", "", "bf 16", torch.float64, 16, None])
def test_bad_values_name_the_option_and_the_accepted_values(value: object) -> None:
    with pytest.raises(ConfigError) as error:
        Precision.parse(value, option="dtype")
    assert str(error.value) == f"dtype: {value!r} is not a precision; choose from {ACCEPTED}"


def test_a_precision_is_its_short_name() -> None:
    # Records written before the type existed hold these strings; they must compare equal.
    assert Precision.BF16 == "bf16" and str(Precision.FP16) == "fp16"
    assert f"precision={Precision.AUTO}" == "precision=auto"
    assert json.dumps({"p": Precision.FP32}) == '{"p": "fp32"}'
    assert [str(p) for p in Precision] == ["auto", "fp32", "bf16", "fp16"]


def test_resolve_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert Precision.AUTO.resolve(cpu) is None
    assert Precision.FP32.resolve(cpu) is None
    assert Precision.BF16.resolve("cpu") == torch.bfloat16
    assert Precision.AUTO.compute_dtype(cpu) == torch.float32
    with pytest.raises(ConfigError, match="float16 autocast needs a CUDA device") as error:
        Precision.FP16.resolve(cpu)
    assert "use bf16 or fp32 on cpu" in str(error.value)


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, torch.bfloat16),
                                                          (False, torch.float16)])  # fmt: skip
def test_auto_on_cuda_is_bf16_where_the_gpu_has_it(
    monkeypatch: pytest.MonkeyPatch, bf16_supported: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    cuda = torch.device("cuda")  # no GPU needed: resolving only reads the device type
    assert Precision.AUTO.resolve(cuda) == expected
    assert Precision.FP16.resolve(cuda) == torch.float16
    assert Precision.FP32.resolve(cuda) is None


def test_named_precisions_have_a_dtype() -> None:
    assert [Precision.FP32.dtype, Precision.BF16.dtype, Precision.FP16.dtype] == [
        torch.float32, torch.bfloat16, torch.float16]  # fmt: skip
    with pytest.raises(ConfigError, match="auto names no dtype"):
        _ = Precision.AUTO.dtype


def test_autocast_context_on_cpu() -> None:
    x = torch.ones(2, 2)
    with Precision.BF16.autocast("cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16), Precision.FP32.autocast("cpu"):
        assert (x @ x).dtype == torch.float32  # fp32 turns an outer autocast off
    with Precision.AUTO.autocast("cpu"):
        assert (x @ x).dtype == torch.float32


def test_the_configuration_keeps_the_short_name() -> None:
    assert TrainConfig(precision="bfloat16").precision is Precision.BF16
    config = get_config("tiny_s4").with_overrides(["precision=torch.float16"])
    assert config.train.precision is Precision.FP16
    saved = json.loads(config.to_json())
    assert saved["train"]["precision"] == "fp16"
    assert Config.from_dict(saved) == config
    saved["train"]["precision"] = "bf16"  # a config.json written before the type existed
    assert Config.from_dict(saved).train.precision is Precision.BF16
    with pytest.raises(ConfigError, match=r"^precision: 'half' is not a precision; choose"):
        config.with_overrides(["precision=half"])
    saved["train"]["precision"] = "double"
    with pytest.raises(ConfigError, match=r"^precision: 'double' is not a precision"):
        Config.from_dict(saved)


def test_every_command_parses_every_spelling(capsys: pytest.CaptureFixture[str]) -> None:
    parse = build_parser().parse_args
    commands = (["test", "tiny_s4", "--checkpoint", "c", "--data-root", "d"],
                ["predict", "v.mp4", "--checkpoint", "c"],
                ["train", "tiny_s4", "--data-root", "d"])  # fmt: skip
    for command in commands:
        for spelling, member in SPELLINGS:
            assert parse([*command, "--precision", spelling]).precision is member
    assert parse(["predict", "v.mp4", "--checkpoint", "c", "--dtype", "torch.float16"]).precision \
        is Precision.FP16  # fmt: skip
    assert parse(["bench", "--precision", "float32", "bf16"]).precision == [
        Precision.FP32, Precision.BF16]  # fmt: skip
    with pytest.raises(SystemExit):
        parse(["predict", "v.mp4", "--checkpoint", "c", "--precision", "half"])
    err = capsys.readouterr().err
    assert f"argument --precision/--dtype: invalid precision 'half' (choose from {ACCEPTED})" in err


def test_predictor_takes_a_dtype_or_any_spelling() -> None:
    class Tiny(torch.nn.Module):
        num_classes = 1

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

    for dtype, expected in [(torch.bfloat16, torch.bfloat16), ("bf16", torch.bfloat16),
                            ("bfloat16", torch.bfloat16), (Precision.FP32, torch.float32),
                            ("auto", torch.float32)]:  # fmt: skip
        predictor = Predictor(Tiny(), device="cpu", dtype=dtype, img_size=64, optimize=False)
        assert predictor.dtype == expected
    with pytest.raises(ConfigError, match=r"^dtype: 'half' is not a precision"):
        Predictor(Tiny(), device="cpu", dtype="half", img_size=64, optimize=False)


@pytest.mark.parametrize("size", [32, 224, 512])
def test_img_size_multiple_of_32(size: int) -> None:
    assert check_img_size(size) == size


@pytest.mark.parametrize("size", [0, -32, 16, 100, 225])
def test_img_size_refusals_name_the_option(size: int) -> None:
    with pytest.raises(ConfigError) as error:
        check_img_size(size, "data.img_size")
    assert str(error.value) == f"data.img_size must be a positive multiple of 32, got {size}"


def test_the_three_img_size_checks_say_the_same() -> None:
    from avsegformer.commands.bench import parse_case

    with pytest.raises(
        ConfigError, match="^data.img_size must be a positive multiple of 32, got 100$"
    ):
        get_config("tiny_s4").with_overrides(["img_size=100"])
    with pytest.raises(ConfigError, match="^img_size must be a positive multiple of 32, got 100$"):
        Predictor(torch.nn.Linear(1, 1), img_size=100)
    with pytest.raises(
        ConfigError, match=r"^case '100x5': size must be a positive multiple of 32, got 100$"
    ):
        parse_case("100x5")
    with pytest.raises(ConfigError, match=r"^case '224x0': frames must be >= 1, got 0$"):
        parse_case("224x0")


def test_a_precision_prints_as_its_short_name() -> None:
    assert repr(Precision.BF16) == "'bf16'"
    assert "precision='fp32'" in repr(get_config("tiny_s4").train)
    assert str({"precision": Precision.FP16}) == "{'precision': 'fp16'}"
