"""Checkpoint reading/writing: our format, the authors' files, pretrained parts, errors."""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from _reference import apply_weight_rule, load_manifest, rule_tensor
from avsegformer.checkpoint import (
    build_model_from_checkpoint,
    detect_layout,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from avsegformer.errors import (
    CheckpointError,
    CheckpointMismatchError,
    NonFiniteCheckpointError,
    NonFiniteError,
)
from avsegformer.pretrained import build_model  # the network plus pretrained weights
from avsegformer.zoo import get_config


def tiny(name: str = "tiny_s4", seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def res50():
    """A res50_s4 model (weights irrelevant: every test loads into it)."""
    return build_model("res50_s4").eval()


# ----------------------------------------------------------------------- our format
def test_round_trip_with_config_metadata_and_extra_tensors(tmp_path: Path) -> None:
    model = tiny()
    extra = {"optimizer.state.0.exp_avg": torch.randn(3, 4), "step": torch.tensor(7)}
    path = save_checkpoint(
        model,
        tmp_path / "sub" / "ckpt.safetensors",
        metadata={"epoch": 3, "miou": 0.5},
        extra_tensors=extra,
    )
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    contents = read_checkpoint(path)
    assert contents.format == "avsegformer"
    assert contents.config == get_config("tiny_s4")
    assert contents.metadata == {"epoch": 3, "miou": 0.5}
    assert contents.extra_tensors.keys() == extra.keys()
    assert torch.equal(
        contents.extra_tensors["optimizer.state.0.exp_avg"], extra["optimizer.state.0.exp_avg"]
    )

    other = tiny(seed=1)
    assert not same_weights(model, other)
    report = load_checkpoint(other, path)
    assert same_weights(model, other)
    assert report.loaded == len(model.state_dict()) and report.config_name == "tiny_s4"
    assert report.layout == "model" and report.target == ""

    rebuilt = build_model_from_checkpoint(path)
    assert same_weights(model, rebuilt) and not rebuilt.training
    assert rebuilt.config == get_config("tiny_s4")


def test_header_length_starting_like_a_pickle_is_still_safetensors(tmp_path: Path) -> None:
    # The 8-byte little-endian header length comes first; 0x80 as its low byte is also
    # the first byte of a pickle stream. Such a file must still read as our format.
    state = {"w": torch.arange(6.0)}
    for pad in range(300):
        path = save_checkpoint(state, tmp_path / f"c{pad}.safetensors", metadata={"p": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
        path.unlink()
    else:
        pytest.fail("no padding gave a header length ending in 0x80")
    contents = read_checkpoint(path)
    assert contents.metadata == {"p": "x" * pad}
    assert list(contents.state_dict) == ["w"]


def test_save_accepts_state_dict_and_config_name(tmp_path: Path) -> None:
    model = tiny("tiny_avss")
    path = save_checkpoint(model.state_dict(), tmp_path / "a.safetensors", config="tiny_avss")
    assert read_checkpoint(path).config.name == "tiny_avss"
    # Overwriting an existing file works and stays atomic.
    save_checkpoint(model, path, metadata={"again": True})
    assert read_checkpoint(path).metadata == {"again": True}


def test_failed_save_leaves_nothing_behind(tmp_path: Path) -> None:
    model = tiny()
    target = tmp_path / "bad.safetensors"
    with pytest.raises(CheckpointError, match="JSON"):
        save_checkpoint(model, target, metadata={"when": object()})
    with pytest.raises(CheckpointError, match="not a tensor"):
        save_checkpoint({"a": 1.0}, target)  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_shared_tensors_are_saved(tmp_path: Path) -> None:
    base = torch.randn(4, 4)
    path = save_checkpoint({"a": base, "b": base, "c": base[0]}, tmp_path / "s.safetensors")
    state = read_checkpoint(path).state_dict
    assert torch.equal(state["a"], base) and torch.equal(state["b"], base)
    assert torch.equal(state["c"], base[0])


# ------------------------------------------------------------------ authors' files
def test_authors_style_pth_with_module_prefix(tmp_path: Path) -> None:
    model = tiny()
    path = tmp_path / "S4_best.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in model.state_dict().items()), path)
    other = tiny(seed=2)
    report = load_checkpoint(other, path)
    assert same_weights(model, other) and report.format == "torch"
    # Foreign files do not record their configuration.
    with pytest.raises(CheckpointError, match=r"pass name=.*tiny_s4"):
        build_model_from_checkpoint(path)
    assert same_weights(model, build_model_from_checkpoint(path, name="tiny_s4"))


def test_authors_checkpoint_loads_into_lean_model_skipping_unused(tmp_path: Path) -> None:
    """Entries of never-used modules (fpn, attn_fc, second branch) are skipped, reported."""
    source = build_model("tiny_s4", overrides={"model.keep_unused_modules": True}).eval()
    state = source.state_dict()
    assert any(k.startswith("head.fpn.") for k in state)
    path = tmp_path / "full.pth"
    torch.save(state, path)
    lean = tiny(seed=3)
    report = load_checkpoint(lean, path)
    assert report.ignored and all(
        k.startswith(("head.fpn.", "head.attn_fc.")) for k in report.ignored
    )
    assert all(torch.equal(v, state[k]) for k, v in lean.state_dict().items())


def test_inference_build_of_an_authors_res50_file_drops_the_second_branch(
    tmp_path: Path,
) -> None:
    """What Predictor.from_checkpoint does: same outputs, ~92 MB fewer weights held."""
    from avsegformer import Predictor

    torch.manual_seed(0)
    full = build_model("res50_s4").eval()
    path = tmp_path / "S4_res50.pth"
    torch.save(OrderedDict((f"module.{k}", v) for k, v in full.state_dict().items()), path)
    lean = build_model_from_checkpoint(path, "res50_s4", keep_unused_modules=False)
    assert not hasattr(lean.backbone, "layer3_2") and not hasattr(lean.head, "fpn")

    def megabytes(model: torch.nn.Module) -> float:
        return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20

    assert 90 < megabytes(full) - megabytes(lean) < 95
    frames, audio = torch.randn(2, 3, 64, 96), torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(lean(frames, audio).logits, full(frames, audio).logits)
    predictor = Predictor.from_checkpoint(path, name="res50_s4", device="cpu")
    assert not hasattr(predictor.model.backbone, "layer3_2")


def test_other_class_count_gives_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "avss.pth"
    torch.save(tiny("tiny_avss").state_dict(), path)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, path)
    err = info.value
    assert [m[0] for m in err.mismatched] == ["head.fc.4.weight"]
    narrow = get_config("tiny_s4").model.mask_head_widths[1]
    assert err.mismatched[0][1:] == ((71, narrow, 1, 1), (1, narrow, 1, 1))
    assert "71 class(es)" in str(err) and "1 class(es)" in str(err) and str(path) in str(err)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "partial load"
    # Shape mismatches raise even when not strict.
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint(model, path, strict=False)


def test_other_backbone_gives_clear_error(tmp_path: Path) -> None:
    """pvt2 checkpoint into a res50 model: missing/unexpected keys, named backbones."""
    manifest = load_manifest("pvt2_s4")
    state = {}
    for entry in manifest["state_dict"]:
        key, shape = entry["key"], tuple(entry["shape"])
        # Real shapes where they differ from res50 (the projections), tiny tensors elsewhere.
        state[key] = torch.zeros(shape) if key.startswith("head.in_proj.") else torch.zeros(1)
    path = tmp_path / "pvt2.pth"
    torch.save(state, path)
    model = build_model("res50_s4", device="meta")
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(model, path)
    text = str(info.value)
    assert "PVTv2-B5" in text and "ResNet-50" in text
    assert re.search(r"missing in file \(\d+\): backbone\.", text)
    assert re.search(r"unexpected in file \(\d+\): backbone\.", text)
    mismatched = {k for k, _, _ in info.value.mismatched}
    assert "head.in_proj.1.0.weight" in mismatched


# ------------------------------------------------------------------ pretrained parts
def test_torchvision_resnet50_fills_both_branches(tmp_path: Path, res50) -> None:
    own = res50.backbone.state_dict()
    file_state = {}
    for key, value in own.items():
        if key.startswith(("layer3_2.", "layer4_2.")):
            continue
        name = re.sub(r"^(layer[34])_1\.", r"\1.", key)
        file_state[name] = rule_tensor("tv." + name, tuple(value.shape), value.dtype)
    file_state["fc.weight"] = torch.randn(1000, 2048)
    file_state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(file_state, path)
    assert detect_layout(file_state) == "torchvision_resnet50"
    head_before = res50.head.fc[0].weight.clone()
    report = load_checkpoint(res50, path)
    assert report.target == "backbone" and report.ignored == ["fc.bias", "fc.weight"]
    state = res50.backbone.state_dict()
    for key in ("layer3_1.0.conv1.weight", "layer3_2.0.conv1.weight"):
        assert torch.equal(state[key], file_state["layer3.0.conv1.weight"])
    assert torch.equal(state["layer4_2.2.bn3.running_var"], file_state["layer4.2.bn3.running_var"])
    assert torch.equal(state["conv1.weight"], file_state["conv1.weight"])
    assert torch.equal(res50.head.fc[0].weight, head_before), "only the backbone is touched"


def test_vggish_file_goes_into_the_audio_encoder(tmp_path: Path, res50) -> None:
    vggish_state = {
        k: rule_tensor("vg." + k, tuple(v.shape), v.dtype)
        for k, v in res50.vggish.state_dict().items()
    }
    path = tmp_path / "vggish-10086976.pth"
    torch.save(vggish_state, path)
    report = load_checkpoint(res50, path)
    assert report.target == "vggish" and report.loaded == 18
    assert torch.equal(res50.vggish.embeddings[4].weight, vggish_state["embeddings.4.weight"])
    # A light model's audio encoder is not VGGish: clear error, nothing loaded.
    with pytest.raises(CheckpointMismatchError, match="vggish"):
        load_checkpoint(tiny(), path)
    with pytest.raises(CheckpointMismatchError, match="not a backbone weight file"):
        build_model("res50_s4", pretrained_backbone=path, device=None)
    # The expected part is checked before anything is copied.
    before = res50.vggish.embeddings[4].weight.clone()
    res50.vggish.embeddings[4].weight.data.add_(1.0)
    changed = res50.vggish.embeddings[4].weight.clone()
    with pytest.raises(CheckpointMismatchError, match="not a backbone weight file"):
        load_checkpoint(res50, path, expect_target="backbone")
    assert torch.equal(res50.vggish.embeddings[4].weight, changed)
    assert not torch.equal(changed, before)


def test_pvt_file_goes_into_the_backbone(tmp_path: Path) -> None:
    model = build_model("pvt2_s4").eval()
    apply_weight_rule(model.backbone, prefix="pvt.")  # rule values under PVT's own names
    file_state = dict(model.backbone.state_dict())
    file_state["head.weight"] = torch.randn(1000, 512)
    file_state["head.bias"] = torch.randn(1000)
    path = tmp_path / "pvt_v2_b5.pth"
    torch.save(file_state, path)
    del model
    fresh = build_model("pvt2_s4", pretrained_backbone=path)
    state = fresh.backbone.state_dict()
    assert all(torch.equal(state[k], file_state[k]) for k in state)


def test_pretrained_backbone_option_checks_the_model(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(
        {
            "conv1.weight": torch.zeros(64, 3, 7, 7),
            "layer1.0.conv1.weight": torch.zeros(1),
            "layer4.0.conv1.weight": torch.zeros(1),
        },
        path,
    )
    with pytest.raises(CheckpointMismatchError, match="backbone"):
        build_model("tiny_s4", pretrained_backbone=path)


# -------------------------------------------------------------------- bad files
def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    model = tiny()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(model, tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="not found"):
        build_model_from_checkpoint(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(CheckpointError, match=str(junk)):
        load_checkpoint(model, junk)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        read_checkpoint(text)


def test_corrupt_files(tmp_path: Path) -> None:
    model = tiny()
    good = save_checkpoint(model, tmp_path / "good.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_checkpoint(model, truncated)
    pth = tmp_path / "good.pth"
    torch.save(model.state_dict(), pth)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_checkpoint(model, cut)


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(2), "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(path)
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(pickle.dumps({"a": _Payload()}, protocol=2))
    with pytest.raises(CheckpointError):
        read_checkpoint(legacy)


def test_non_state_dict_payloads(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_checkpoint(path)
    mixed = tmp_path / "mixed.pth"
    torch.save({"a": torch.zeros(1), "epoch": 3}, mixed)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_checkpoint(mixed)
    wrapped = tmp_path / "wrapped.pth"
    model = tiny()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, wrapped)
    assert read_checkpoint(wrapped).state_dict.keys() == model.state_dict().keys()
    assert zipfile.is_zipfile(wrapped)


def test_unknown_layout(tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointMismatchError, match="unrecognised state-dict layout"):
        load_checkpoint(tiny(), path)


def test_a_folder_is_named_as_a_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError, match=r"run is a folder, not a checkpoint file$"):
        load_checkpoint(tiny(), run)
    save_checkpoint(tiny(), run / "best.safetensors")
    with pytest.raises(CheckpointError, match=r"is a folder.*holds best\.safetensors"):
        build_model_from_checkpoint(run)


# ------------------------------------------------- records checked before allocation
def write_with_record(path: Path, state: dict, record: dict) -> Path:
    """Our format, but with a hand-written configuration record (a crafted file)."""
    from safetensors.torch import save_file

    header = {
        "format": "avsegformer",
        "format_version": "1",
        "config": json.dumps(record),
        "config_name": str(record.get("name")),
        "metadata": "{}",
    }
    save_file({f"model.{k}": v.contiguous() for k, v in state.items()}, path, metadata=header)
    return path


@pytest.fixture()
def no_real_builds(monkeypatch: pytest.MonkeyPatch) -> list:
    """Fails any build_model call that is not on the meta device (nothing is allocated)."""
    import avsegformer.checkpoint as build  # builds through modeling.build.build_model

    original, calls = build.build_model, []

    def meta_only(*args, **kwargs):
        calls.append(kwargs.get("device"))
        if str(kwargs.get("device")) != "meta":
            raise AssertionError("a model was built for real before the file was checked")
        return original(*args, **kwargs)

    monkeypatch.setattr(build, "build_model", meta_only)
    return calls


def test_crafted_configuration_record_is_refused_before_anything_is_built(
    tmp_path: Path, no_real_builds: list
) -> None:
    # The tiny model's 7.6 MB of tensors under a record asking for 26 GB of weights.
    record = get_config("tiny_s4").to_dict()
    record["model"].update(embed_dim=65536, query_num=100000)
    path = write_with_record(tmp_path / "crafted.safetensors", tiny().state_dict(), record)
    for call in (read_checkpoint, build_model_from_checkpoint):
        with pytest.raises(CheckpointMismatchError, match="does not describe its tensors") as e:
            call(path)
        assert ("audio_proj.weight", (64, 128), (65536, 128)) in e.value.mismatched
        assert "audio_proj.weight (64, 128) vs configuration (65536, 128)" in str(e.value)
    assert no_real_builds and all(d == "meta" for d in no_real_builds)


@pytest.mark.parametrize(
    ("section", "field", "value", "match"),
    [
        ("model", "encoder_layers", 10**7, r"impossible.*encoder_layers=10000000 .*1, 1024\]"),
        ("model", "embed_dim", 2**40, "impossible.*embed_dim"),
        ("model", "num_heads", -8, "impossible.*num_heads=-8"),
        ("data", "img_size", 2**20, "impossible.*img_size"),
        ("model", "backbone_depths", (600, 600), "impossible.*adds up to more than 1024"),
        ("model", "embed_dim", 1e400, "impossible.*embed_dim: expected an integer, got inf"),
        ("model", "embed_dim", "wide", "impossible.*got .wide."),
        ("model", "gn_groups", 7, "cannot be built"),
        ("model", "gn_groups", 0, r"impossible.*gn_groups=0 is out of range"),
    ],
)
def test_implausible_records_are_refused(
    tmp_path: Path, no_real_builds: list, section: str, field: str, value, match: str
) -> None:
    record = get_config("tiny_s4").to_dict()
    record[section][field] = value
    path = write_with_record(tmp_path / "odd.safetensors", tiny().state_dict(), record)
    with pytest.raises(CheckpointError, match=match):
        read_checkpoint(path)


def test_a_file_that_does_not_fit_is_refused_before_the_model_is_built(
    tmp_path: Path, no_real_builds: list
) -> None:
    path = tmp_path / "avss.pth"
    torch.save(tiny("tiny_avss").state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="does not fit"):
        build_model_from_checkpoint(path, name="tiny_s4")
    assert no_real_builds == ["meta"]


# -------------------------------------------------------------- non-finite tensors
@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_non_finite_tensors_are_reported_at_load(tmp_path: Path, kind: str) -> None:
    model = tiny()
    state = model.state_dict()
    state["head.fc.0.weight"][0, 0, 0, :3] = float("nan")
    state["audio_proj.bias"][1] = float("inf")
    if kind == "pth":
        path = tmp_path / "diverged.pth"
        torch.save(state, path)
    else:
        path = save_checkpoint(state, tmp_path / "diverged.safetensors", config="tiny_s4")
    target = tiny(seed=3)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(NonFiniteCheckpointError, match=r"2 of \d+ tensors hold NaN") as error:
        load_checkpoint(target, path)
    assert isinstance(error.value, NonFiniteError) and isinstance(error.value, CheckpointError)
    assert error.value.counts == {"audio_proj.bias": 1, "head.fc.0.weight": 3}
    assert "diverged" in str(error.value) and "head.fc.0.weight (3 values)" in str(error.value)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    with pytest.raises(NonFiniteError):
        build_model_from_checkpoint(path, name="tiny_s4")


def test_non_finite_extra_tensors_are_reported(tmp_path: Path) -> None:
    extra = {"optimizer.state.0.exp_avg": torch.tensor([1.0, float("nan")])}
    path = save_checkpoint(tiny(), tmp_path / "last.safetensors", extra_tensors=extra)
    with pytest.raises(NonFiniteCheckpointError, match="extra.optimizer.state.0.exp_avg"):
        read_checkpoint(path)


# ----------------------------------------------------------- another configuration
def test_another_recorded_configuration_is_noted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ms3 = save_checkpoint(tiny("tiny_ms3"), tmp_path / "ms3.safetensors")
    s4 = save_checkpoint(tiny("tiny_s4"), tmp_path / "s4.safetensors")
    with caplog.at_level("WARNING", logger="avsegformer.checkpoint"):
        load_checkpoint(tiny("tiny_s4"), s4)
        assert not caplog.records
        load_checkpoint(tiny("tiny_s4"), ms3)
    (record,) = caplog.records
    assert record.levelname == "WARNING"
    message = record.getMessage()
    assert "records the configuration 'tiny_ms3'" in message
    assert "built as 'tiny_s4'" in message and "task ms3 vs s4" in message
    caplog.clear()
    with caplog.at_level("WARNING", logger="avsegformer.checkpoint"):
        model = build_model_from_checkpoint(ms3, name="tiny_s4")
    assert model.config.name == "tiny_s4"
    assert ["tiny_ms3" in r.getMessage() for r in caplog.records] == [True]
