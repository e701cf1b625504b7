"""Caption variants: detail-type removal, label texts, and Tiny ImageNet's image-derived 'rich' details.

Detail types (``DETAIL_TYPES``) and what removing each one deletes from a caption (whole words,
case-insensitive; a quantity phrase ending in 'of' takes its article along; whitespace, punctuation
and a/an agreement are tidied afterwards):
    colour      colour words (red, blue, ..., plus 'colored', 'colorful', 'pale', 'dark'/'light' as shades)
    count       numbers and quantifiers (one..twenty, digits, several, many, few, couple, pair, group,
                bunch, dozen, multiple, both, some)
    size        size adjectives (big, small, large, tiny, huge, little, tall, short, long, giant, ...)
    spatial     spatial relations (on top of, next to, in front of, behind, above, under, left, right, ...)
    background  the setting: a preposition phrase ending in a scene noun ('on a city street',
                'in the background', 'at the beach'), then any remaining scene noun
    brightness  lighting words (bright, dark, dim, sunny, lit, shadow, night, ...)
For Tiny ImageNet 'rich' texts the details are separate phrases, and removing a type drops its phrase.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

DETAIL_WORDS: dict[str, tuple[str, ...]] = {
    "colour": (
        "red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray",
        "grey", "silver", "gold", "golden", "beige", "tan", "teal", "turquoise", "maroon", "navy", "violet",
        "colored", "coloured", "colorful", "colourful", "multicolored", "pale", "blond", "blonde",
    ),
    "count": (
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "twenty", "single", "couple", "pair", "several", "many", "few",
        "multiple", "numerous", "both", "dozen", "dozens", "group", "bunch", "lots", "lot", "some",
        "group of", "couple of", "pair of", "bunch of", "lots of", "lot of", "dozens of", "number of", "herd of",
        "flock of", "set of", "row of", "pile of", "stack of",
    ),
    "size": (
        "big", "small", "large", "tiny", "huge", "little", "tall", "short", "long", "giant", "massive",
        "miniature", "enormous", "medium", "wide", "narrow", "thin", "thick",
    ),
    "spatial": (
        "on top of", "next to", "in front of", "close to", "in the middle of", "on", "in", "under",
        "underneath", "above", "below", "behind", "beside", "besides", "near", "nearby", "between",
        "inside", "outside", "over", "across", "along", "around", "against", "atop", "left", "right",
        "top", "bottom", "front", "back", "middle", "center", "centre", "corner", "side",
    ),
    "background": (
        "background", "street", "road", "field", "grass", "grassy", "sky", "room", "kitchen", "bathroom",
        "bedroom", "beach", "ocean", "sea", "water", "lake", "river", "park", "city", "town", "snow",
        "forest", "woods", "table", "floor", "wall", "sidewalk", "yard", "building", "airport", "runway",
        "track", "station", "shore", "mountain", "mountains", "hill", "desert", "restaurant", "store",
        "market", "office", "stadium", "court", "zoo", "farm", "garden", "highway", "parking", "lot",
    ),
    "brightness": (
        "bright", "dark", "dim", "sunny", "lit", "shadow", "shadows", "shady", "night", "daylight",
        "sunlight", "sunset", "sunrise", "light", "lighting", "glowing", "illuminated",
    ),
}
DETAIL_TYPES: tuple[str, ...] = tuple(DETAIL_WORDS)

_PREPOSITIONS = (r"(?:in front of|next to|on top of|in|on|at|near|by|along|across|around|behind|beside|against|inside|"
                 r"outside|under|over|through|into|onto|from|down|up)")
_DETERMINERS = r"(?:the|a|an|some|his|her|their|its|this|that|these|those)"


def _alternation(words: Iterable[str]) -> str:
    ordered = sorted(words, key=len, reverse=True)  # multi-word phrases first
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)


def _detail_re(words: Sequence[str]) -> re.Pattern:
    """Whole words/phrases; a phrase ending in 'of' ('a group of') takes its article with it."""
    of_phrases = [w for w in words if w.endswith(" of")]
    others = [w for w in words if not w.endswith(" of")]
    alts = [rf"\b(?:{_alternation(others)})\b"]
    if of_phrases:
        alts.insert(0, rf"(?:\b(?:a|an|the)\s+)?\b(?:{_alternation(of_phrases)})\b")
    return re.compile("|".join(alts), re.IGNORECASE)


_WORD_RE = {t: _detail_re(ws) for t, ws in DETAIL_WORDS.items()}
_SCENE_PHRASE_RE = re.compile(
    rf"\b{_PREPOSITIONS}\s+(?:{_DETERMINERS}\s+)?(?:[a-z\-]+\s+){{0,2}}?(?:{_alternation(DETAIL_WORDS['background'])})\b",
    re.IGNORECASE)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:!?])", r"\1", text)
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)
    text = re.sub(r"^[\s,;:]+|[\s,;:]+$", "", text)
    # article agreement after a removal: 'an orange cat' minus colour -> 'a cat'
    text = re.sub(r"\b([Aa])n?\s+(?=([A-Za-z]))",
                  lambda m: m.group(1) + ("n " if m.group(2).lower() in "aeiou" else " "), text)
    return text.strip()


def parse_minus_variant(variant: str) -> tuple[str, ...]:
    """'caption-minus:colour,count' -> ('colour', 'count'); ValueError for an unknown type."""
    types = tuple(t.strip() for t in variant.split(":", 1)[1].split(",") if t.strip())
    unknown = [t for t in types if t not in DETAIL_TYPES]
    if not types or unknown:
        raise ValueError(f"variant {variant!r}: detail types must be a comma list from {DETAIL_TYPES}, got {unknown or '(none)'}")
    return types


def remove_details(caption: str, types: Sequence[str]) -> str:
    """The caption with every word (or phrase) of the given detail types deleted, then tidied."""
    for t in types:
        if t not in DETAIL_WORDS:
            raise ValueError(f"detail type must be one of {DETAIL_TYPES}, got {t!r}")
    text = caption
    if "background" in types:
        text = _SCENE_PHRASE_RE.sub(" ", text)
    for t in types:
        text = _WORD_RE[t].sub(" ", text)
    return _tidy(text)


def label_text(names: Sequence[str]) -> str:
    """Object / class names only: 'dog', 'dog, frisbee, person'; 'object' when there are none."""
    return ", ".join(names) if names else "object"


# ---------------------------------------------------------------------------------------------------
# Tiny ImageNet 'rich' details: computed from the image and its bounding box
# ---------------------------------------------------------------------------------------------------

COLOUR_NAMES: tuple[str, ...] = ("black", "white", "grey", "red", "orange", "yellow", "green", "cyan", "blue",
                                 "purple", "pink", "brown")
_HUE_EDGES = np.array([15, 40, 70, 160, 200, 260, 290, 335, 360])  # upper hue bound of each name below
_HUE_NAMES = np.array([3, 4, 5, 6, 7, 8, 9, 10, 3])                 # indices into COLOUR_NAMES


def colour_indices(rgb: np.ndarray) -> np.ndarray:
    """Index into COLOUR_NAMES of each RGB colour, rgb (..., 3) in [0, 255] -> int (...).

    value = max/255 < 0.2: black; saturation (max-min)/max < 0.2: white (value > 0.8) or grey;
    else by hue (red < 15 deg, orange < 40, yellow < 70, green < 160, cyan < 200, blue < 260,
    purple < 290, pink < 335, red); orange or red with hue >= 15 and value < 0.6 is brown.
    """
    x = np.asarray(rgb, np.float32) / 255.0
    mx, mn = x.max(-1), x.min(-1)
    d = np.where(mx > mn, mx - mn, 1.0)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.where(mx == r, (60 * (g - b) / d) % 360, np.where(mx == g, 60 * (b - r) / d + 120, 60 * (r - g) / d + 240))
    idx = _HUE_NAMES[np.minimum(np.searchsorted(_HUE_EDGES, hue, side="right"), len(_HUE_EDGES) - 1)]
    idx = np.where((idx == 4) & (mx < 0.6) | (idx == 3) & (hue >= 15) & (hue < 335) & (mx < 0.6), 11, idx)
    sat = (mx - mn) / np.maximum(mx, 1e-6)
    idx = np.where(sat < 0.2, np.where(mx > 0.8, 1, 2), idx)
    return np.where(mx < 0.2, 0, idx)


def colour_name(rgb: np.ndarray) -> str:
    """Name of one RGB colour (3 values in [0, 255]); see colour_indices."""
    return COLOUR_NAMES[int(colour_indices(np.asarray(rgb).reshape(3)))]


def image_details(image: np.ndarray, box: Sequence[int]) -> dict[str, str]:
    """Detail phrases of one image (uint8 (H, W, 3)) and its object box (x0, y0, x1, y1), inclusive pixels.

    size: box area / image area < 0.25 'small', < 0.6 'medium-sized', else 'large';
    spatial: box centre in a 3x3 grid ('in the center', 'at the top left', ...);
    brightness: mean luma < 85 'dark', > 170 'bright', else none (phrase omitted);
    colour: the most frequent colour_indices name over the pixels inside the box (ties: lower index).
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = sorted((max(0, min(x0, w - 1)), max(0, min(x1, w - 1))))
    y0, y1 = sorted((max(0, min(y0, h - 1)), max(0, min(y1, h - 1))))
    frac = (x1 - x0 + 1) * (y1 - y0 + 1) / float(h * w)
    size = "small" if frac < 0.25 else "medium-sized" if frac < 0.6 else "large"
    cx, cy = (x0 + x1 + 1) / 2.0 / w, (y0 + y1 + 1) / 2.0 / h
    col = ("left", "", "right")[min(2, int(cx * 3))]
    row = ("top", "", "bottom")[min(2, int(cy * 3))]
    where = "in the center" if not (col or row) else "at the " + " ".join(p for p in (row, col) if p)
    luma = float((image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
    details = {"size": size, "spatial": where,
               "colour": COLOUR_NAMES[int(np.bincount(colour_indices(image[y0:y1 + 1, x0:x1 + 1]).ravel(),
                                                       minlength=len(COLOUR_NAMES)).argmax())]}
    if luma < 85:
        details["brightness"] = "dark"
    elif luma > 170:
        details["brightness"] = "bright"
    return details


def rich_text(classname: str, details: dict[str, str], drop: Sequence[str] = ()) -> str:
    """'a large brown dog at the top left, in a dark photo' from the class name and image_details
    (with the detail types in ``drop`` left out)."""
    d = {k: v for k, v in details.items() if k not in drop}
    noun = " ".join(p for p in (d.get("size"), d.get("colour"), classname) if p)
    article = "an" if noun[:1].lower() in "aeiou" else "a"
    text = f"{article} {noun}"
    if "spatial" in d:
        text += f" {d['spatial']}"
    if "brightness" in d:
        text += f", in a {d['brightness']} photo"
    return text
