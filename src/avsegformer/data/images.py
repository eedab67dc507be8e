"""Frame and mask decoding for AVSBench, bit-compatible with the official loaders.

``shared/spec/avsbench-data.md`` §2.4, §3.3, §4.4 and §5: images are opened with PIL and
converted to RGB, resized with PIL (bilinear for frames, nearest for masks: PIL's
bilinear antialiases when downscaling, so no other library gives the same pixels), then
scaled to [0, 1] and ImageNet-normalised. Masks are decoded with the official rule of
each task:

* S4: ``convert('1')`` (a dithered threshold at mid-grey);
* MS3: ``convert('P')`` palette index / 255, foreground where the index is not 0;
* AVSS: exact RGB palette colour -> class index, unknown colours -> 0 (background).

The fast paths (two-valued masks, palette lookup) give the same result as the official
conversions; anything unusual is reported through :class:`MaskDecoding` so that callers
can count, log or refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import CorruptFileError, MissingFileError, NonFiniteDataError
from ..finite import require_finite
from ..modeling.backbones.registry import IMAGENET_MEAN, IMAGENET_STD, pixel_statistics
from .classes import NUM_AVSS_CLASSES, avss_palette

if TYPE_CHECKING:
    from ..zoo import ModelConfig

GeometryKind = Literal["none", "resize", "short_side_crop"]
# How a binary mask PNG decodes, as each official loader does: "threshold_1" = PIL's
# convert('1') (S4: grey pixels dithered), "palette_index" = convert('P') index != 0 (MS3).
BinaryMaskRule = Literal["threshold_1", "palette_index"]


@dataclass(frozen=True)
class Geometry:
    """How a frame and its mask are brought to the model's size.

    ``"resize"``: to ``size`` x ``size`` (aspect ratio not kept; S4/MS3 and AVSS
    val/test). ``"short_side_crop"``: short side to ``size`` (the long side truncated to
    an integer), then a centred ``size`` x ``size`` crop (AVSS train). ``"none"``: keep.
    """

    kind: GeometryKind = "resize"
    size: int = 224

    def apply(self, image: Image.Image, *, is_mask: bool) -> Image.Image:
        """Return ``image`` transformed (PIL bilinear for frames, nearest for masks)."""
        resample = Image.Resampling.NEAREST if is_mask else Image.Resampling.BILINEAR
        if self.kind == "none":
            return image
        if self.kind == "resize":
            if image.size == (self.size, self.size):
                return image
            return image.resize((self.size, self.size), resample)
        width, height = image.size
        if width > height:
            new_size = (int(width * self.size / height), self.size)
        else:
            new_size = (self.size, int(height * self.size / width))
        image = image.resize(new_size, resample)
        # round() is Python's half-to-even, as in the official loader.
        left = int(round((new_size[0] - self.size) / 2.0))
        top = int(round((new_size[1] - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file (PNG, JPEG...) with PIL.

    Raises :class:`MissingFileError`, :class:`CorruptFileError` (truncated or not an
    image) or :class:`NonFiniteDataError` (a floating-point image, e.g. a TIFF, holding
    NaN or inf; 8-bit PNG/JPEG cannot), all naming ``path``.
    """
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise MissingFileError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise CorruptFileError(
            f"cannot decode image {path}: {exc}; the file is truncated or not an image: "
            "re-extract or copy it again"
        ) from None
    if image.mode == "F":
        # PIL's conversion to RGB/L would turn NaN into some pixel value without a word.
        require_finite(np.asarray(image), f"image {path}", error=NonFiniteDataError)
    return image


@dataclass(frozen=True)
class PixelNorm:
    """The RGB statistics frames are normalised with: ``(x / 255 - mean) / std``.

    They belong to the model's visual backbone (its registration declares them):
    :meth:`for_model` asks it. The default is ImageNet's, which every built-in backbone
    uses.
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def for_model(cls, cfg: ModelConfig) -> PixelNorm:
        """The statistics of the backbone ``cfg`` names (``cfg.backbone``)."""
        mean, std = pixel_statistics(cfg)
        return cls(tuple(mean), tuple(std))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, std)`` as float32 ``[3, 1, 1]``."""
        return _norm_tensors(self.mean, self.std)


@lru_cache(maxsize=8)
def _norm_tensors(
    mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    # Cached: one pair per set of statistics, only ever read (shared by every call).
    return (
        torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1),
        torch.tensor(std, dtype=torch.float32).view(-1, 1, 1),
    )


def frames_to_tensor(frames: list[np.ndarray], norm: PixelNorm | None = None) -> torch.Tensor:
    """Stack RGB uint8 ``[H, W, 3]`` frames into a normalised float32 ``[T, 3, H, W]``.

    Same arithmetic as torchvision ``ToTensor`` + ``Normalize(norm.mean, norm.std)`` in
    float32: ``(x / 255 - mean) / std`` (ImageNet's statistics when ``norm`` is
    ``None``: values about [-2.2, 2.7]).
    """
    mean, std = (norm or PixelNorm()).tensors()
    # Channels-first while still uint8 (cheap); float ops on contiguous memory are faster.
    stacked = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    return stacked.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def load_frame(path: Path, geometry: Geometry) -> np.ndarray:
    """Read one frame as RGB, apply ``geometry``: uint8 ``[H, W, 3]``."""
    return _load_frame_sized(path, geometry)[0]


def _load_frame_sized(path: Path, geometry: Geometry) -> tuple[np.ndarray, tuple[int, int]]:
    image = open_image(path)
    size = image.size
    return np.asarray(geometry.apply(image.convert("RGB"), is_mask=False)), size


def load_clip_frames(
    paths: list[Path], geometry: Geometry, norm: PixelNorm | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Read the frames of one clip: float32 ``[T, 3, H, W]`` (:func:`frames_to_tensor`
    with ``norm``) and their size on disk ``(width, height)``.

    The frames of a clip come from one video, so they must have one size: a frame of
    another size (from another video, or extracted differently) raises
    :class:`CorruptFileError` naming both files, instead of being resized silently. Any
    common size is fine: ``geometry`` brings it to the model's size.
    """
    pixels = []
    first_size: tuple[int, int] | None = None
    for path in paths:
        frame, size = _load_frame_sized(path, geometry)
        if first_size is None:
            first_size = size
        elif size != first_size:
            raise CorruptFileError(
                f"frame {path} is {_size_text(size)} but frame {paths[0]} of the same clip is "
                f"{_size_text(first_size)}: the frames of a clip come from one video and must "
                "have one size; re-extract this clip's frames"
            )
        pixels.append(frame)
    if first_size is None:
        raise CorruptFileError("a clip without frames")
    return frames_to_tensor(pixels, norm), first_size


def _size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def check_mask_size(
    mask: Path, mask_size: tuple[int, int], frame: Path, frame_size: tuple[int, int]
) -> None:
    """Raise :class:`CorruptFileError` unless a mask has its frame's size on disk.

    Frames and masks are resized separately (bilinear / nearest), so a mask of another
    size (even of the same aspect ratio: the official S4/MS3 metric compares them without
    resizing) would be read as a mask that does not line up with its frame.
    """
    if mask_size != frame_size:
        raise CorruptFileError(
            f"mask {mask} is {_size_text(mask_size)} but its frame {frame} is "
            f"{_size_text(frame_size)}: a mask must have its frame's size (the two are "
            "resized separately and would not line up); re-export the mask at the frame's size"
        )


@dataclass(frozen=True)
class MaskDecoding:
    """A decoded mask and whether the official rule agreed with the fast reading.

    ``values``: bool ``[H, W]`` (binary masks, True = sounding object) or int64
    ``[H, W]`` class indices in [0, 70] (AVSS). ``irregular_pixels``: binary masks: the
    number of pixels that are not pure black/white (S4: decoded with PIL's dithered
    ``convert('1')`` like the original; MS3: the original's tensor would not be {0, 1}
    there, we use index != 0); AVSS: pixels whose colour is not in the palette (label 0).
    ``source_size``: ``(width, height)`` of the file, before geometry.
    """

    values: np.ndarray
    irregular_pixels: int = 0
    source_size: tuple[int, int] = (0, 0)


def _binary_mask_image(image: Image.Image, rule: BinaryMaskRule) -> tuple[Image.Image, int]:
    """Mode-"L" image with foreground 255 / background 0, and the count of odd pixels."""
    if image.mode == "1":
        return image.convert("L"), 0
    if rule == "threshold_1":
        grey = image if image.mode == "L" else image.convert("L")
        values = np.asarray(grey)
        irregular = int(np.count_nonzero((values != 0) & (values != 255)))
        if irregular == 0:
            return grey, 0
        # Only PIL's own dithering reproduces the original tensor for grey pixels.
        return image.convert("1").convert("L"), irregular
    # palette_index (MS3): the original tensor is the palette index of convert('P') divided by 255.
    if image.mode in ("L", "P"):
        index = np.asarray(image)
    else:
        index = np.asarray(image.convert("P"))
    irregular = int(np.count_nonzero((index != 0) & (index != 255)))
    foreground = np.where(index != 0, np.uint8(255), np.uint8(0))
    return Image.fromarray(foreground, mode="L"), irregular


def load_binary_mask(path: Path, rule: BinaryMaskRule, geometry: Geometry) -> MaskDecoding:
    """Decode a binary mask PNG by ``rule`` (S4: ``"threshold_1"``, MS3: ``"palette_index"``):
    bool ``[H, W]`` after geometry."""
    image = open_image(path)
    mask_image, irregular = _binary_mask_image(image, rule)
    values = np.asarray(geometry.apply(mask_image, is_mask=True)) != 0
    return MaskDecoding(values, irregular, image.size)


@lru_cache(maxsize=1)
def _palette_lookup() -> tuple[np.ndarray, np.ndarray]:
    codes = _rgb_codes(avss_palette(NUM_AVSS_CLASSES)[None, :, :])[0]
    order = np.argsort(codes, kind="stable")
    return codes[order], order.astype(np.int64)


def _rgb_codes(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def color_mask_to_labels(rgb: np.ndarray) -> MaskDecoding:
    """Map an RGB uint8 ``[H, W, 3]`` AVSS mask to int64 class indices ``[H, W]`` in [0, 70].

    A pixel whose colour is one of the 71 palette colours gets that class; any other
    colour gets 0 (background), as in the official loader, and is counted.
    """
    sorted_codes, classes = _palette_lookup()
    codes = _rgb_codes(rgb)
    position = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
    known = sorted_codes[position] == codes
    labels = np.where(known, classes[position], 0)
    return MaskDecoding(labels, int(codes.size - np.count_nonzero(known)))


def load_color_mask(path: Path, geometry: Geometry) -> MaskDecoding:
    """Decode an AVSS ``labels_rgb`` PNG: int64 ``[H, W]`` class indices after geometry."""
    image = open_image(path)
    decoded = color_mask_to_labels(np.asarray(geometry.apply(image.convert("RGB"), is_mask=True)))
    return MaskDecoding(decoded.values, decoded.irregular_pixels, image.size)
