"""Class vocabularies of AVSBench: the 71 AVSS classes with their palette, the 23 S4 categories.

Facts from ``shared/spec/avsbench-data.md`` §2.2, §4.3 and §4.4: AVSS class id = position
in :data:`AVSS_CLASSES` (0 = background, then the 70 names in alphabetical order), colour =
PASCAL-VOC bit-interleaved palette of the id. ``label2idx.json`` values are never used.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

AVSS_CLASSES: tuple[str, ...] = (
    "background", "accordion", "airplane", "axe", "baby", "bassoon", "bell", "bird", "boat",
    "boy", "bus", "car", "cat", "cello", "clarinet", "clipper", "clock", "dog", "donkey",
    "drum", "duck", "elephant", "emergency-car", "erhu", "flute", "frying-food", "girl",
    "goose", "guitar", "gun", "guzheng", "hair-dryer", "handpan", "harmonica", "harp",
    "helicopter", "hen", "horse", "keyboard", "leopard", "lion", "man", "marimba",
    "missile-rocket", "motorcycle", "mower", "parrot", "piano", "pig", "pipa", "saw",
    "saxophone", "sheep", "sitar", "sorna", "squirrel", "tabla", "tank", "tiger", "tractor",
    "train", "trombone", "truck", "trumpet", "tuba", "ukulele", "utv", "vacuum-cleaner",
    "violin", "wolf", "woman",
)  # fmt: skip
NUM_AVSS_CLASSES = len(AVSS_CLASSES)  # 71

S4_CATEGORIES: tuple[str, ...] = (
    "baby_laughter", "female_singing", "male_speech", "dog_barking", "cat_meowing",
    "lions_roaring", "horse_clip-clop", "coyote_howling", "mynah_bird_singing",
    "playing_acoustic_guitar", "playing_tabla", "playing_violin", "playing_piano",
    "playing_ukulele", "playing_glockenspiel", "helicopter", "race_car", "driving_buses",
    "ambulance_siren", "typing_on_computer_keyboard", "chainsawing_trees", "cap_gun_shooting",
    "lawn_mowing",
)  # fmt: skip

# S4 category -> AVSS v1s ``a_obj`` label (one-to-one, spec §4.3).
S4_TO_AVSS: dict[str, str] = {
    "ambulance_siren": "emergency-car", "baby_laughter": "baby", "cap_gun_shooting": "gun",
    "cat_meowing": "cat", "chainsawing_trees": "saw", "coyote_howling": "wolf",
    "dog_barking": "dog", "driving_buses": "bus", "female_singing": "woman",
    "helicopter": "helicopter", "horse_clip-clop": "horse", "lawn_mowing": "mower",
    "lions_roaring": "lion", "male_speech": "man", "mynah_bird_singing": "bird",
    "playing_acoustic_guitar": "guitar", "playing_glockenspiel": "marimba",
    "playing_piano": "piano", "playing_tabla": "tabla", "playing_ukulele": "ukulele",
    "playing_violin": "violin", "race_car": "car", "typing_on_computer_keyboard": "keyboard",
}  # fmt: skip


def palette_color(class_id: int) -> tuple[int, int, int]:
    """PASCAL-VOC colour of ``class_id``: bits of the id interleaved into R, G, B from the top."""
    r = g = b = 0
    j, i = class_id, 0
    while j > 0:
        r |= ((j >> 0) & 1) << (7 - i)
        g |= ((j >> 1) & 1) << (7 - i)
        b |= ((j >> 2) & 1) << (7 - i)
        j >>= 3
        i += 1
    return r, g, b


@lru_cache(maxsize=8)
def _palette(n: int) -> np.ndarray:
    out = np.array([palette_color(c) for c in range(n)], dtype=np.uint8)
    out.setflags(write=False)
    return out


def avss_palette(num_classes: int = NUM_AVSS_CLASSES) -> np.ndarray:
    """uint8 ``[num_classes, 3]`` RGB palette (read-only); row c is the colour of class c."""
    return _palette(num_classes)


def class_index(name: str) -> int:
    """AVSS class id of ``name`` (e.g. ``"emergency-car"`` -> 22)."""
    try:
        return AVSS_CLASSES.index(name)
    except ValueError:
        raise KeyError(f"unknown AVSS class {name!r}") from None
