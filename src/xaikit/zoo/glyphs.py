"""An offline few-shot data set: characters of several scripts rendered from the fonts that ship with matplotlib.

Each class is one character (Latin, Greek, Cyrillic, Armenian, Georgian, Hebrew, ... letters without
diacritics, as far as the fonts cover them); its samples are that character rendered by matplotlib's FreeType
wrapper (``matplotlib.ft2font``) in a font chosen at random among the 16 DejaVu Sans / Sans Mono / Serif and
STIX General faces (regular, bold, italic, bold italic) that cover it, then distorted by a random affine map,
a smooth random (elastic) displacement field and pixel noise, all drawn from one seed. Characters whose glyphs
look alike (Latin ``A``, Greek ``Α``, Cyrillic ``А``) are kept once. The classes are split into disjoint
meta-train / meta-val / meta-test sets (Omniglot-like, Lake et al. 2015; the episodic protocol of Vinyals et
al. 2016). :class:`EpisodeSampler` draws N-way K-shot episodes from one split.
"""
from __future__ import annotations

import functools
import os
import unicodedata
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import check_choice, check_positive

#: the font files (in matplotlib's ``mpl-data/fonts/ttf``) a glyph is drawn from: 4 families × 4 faces
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
         "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf",
         "DejaVuSansMono-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
         "DejaVuSerif-BoldItalic.ttf", "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
         "STIXGeneralBolIta.ttf")
#: the scripts whose letters are classes (the first word of the Unicode character name)
SCRIPTS = ("LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "GEORGIAN", "HEBREW", "COPTIC", "CHEROKEE", "RUNIC",
           "OGHAM", "TIFINAGH", "LAO", "THAI", "ARABIC", "NKO", "CANADIAN")
#: the class splits and their shares of the characters
SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}
_RENDER = 56  # the side at which glyphs are drawn and distorted before 2× area down-sampling


@dataclass
class GlyphData:
    """Glyph images ``x`` (N, 1, S, S) in [0, 1] (ink = 1), classes ``y`` (N,), sorted by class with
    ``samples_per_class`` rows each; ``characters[c]`` is class c's character, ``font[n]`` the index in
    :data:`FONTS` of sample n's font, ``split[c]`` the split of class c (``"train"``, ``"val"``, ``"test"``)."""

    x: torch.Tensor
    y: torch.Tensor
    font: torch.Tensor
    characters: list[str]
    split: list[str]
    samples_per_class: int

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def n_classes(self) -> int:
        return len(self.characters)

    def classes(self, split: str) -> torch.Tensor:
        """The class indices of one split (ascending)."""
        check_choice(split, "split", tuple(SPLITS))
        return torch.tensor([c for c, s in enumerate(self.split) if s == split], dtype=torch.long)

    def of_class(self, c: int) -> torch.Tensor:
        """The images of class ``c`` (samples_per_class, 1, S, S)."""
        m = self.samples_per_class
        return self.x[c * m:(c + 1) * m]


def _font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@functools.lru_cache(maxsize=4)
def _charmaps() -> tuple[frozenset[int], ...]:
    from matplotlib import ft2font

    return tuple(frozenset(ft2font.FT2Font(os.path.join(_font_dir(), f)).get_charmap()) for f in FONTS)


def candidate_characters(scripts: tuple[str, ...] = SCRIPTS, min_fonts: int = 4) -> list[str]:
    """Letters (Unicode category L*) of ``scripts`` without a canonical decomposition (no precomposed diacritics)
    that at least ``min_fonts`` of :data:`FONTS` cover, in code-point order."""
    maps = _charmaps()
    out = []
    for code in sorted(set().union(*maps)):
        ch = chr(code)
        name = unicodedata.name(ch, "")
        if (not unicodedata.category(ch).startswith("L") or unicodedata.decomposition(ch)
                or name.split(" ")[0] not in scripts):
            continue
        if sum(code in m for m in maps) >= min_fonts:
            out.append(ch)
    return out


def _draw(font, ch: str) -> torch.Tensor:
    """One glyph drawn centred on a ``_RENDER``² canvas (float in [0, 1]); the em is 0.6 of the side, so
    capitals and lower case keep their relative size."""
    font.set_text(ch, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    image = torch.from_numpy(np.array(font.get_image(), dtype=np.float32) / 255.0)
    canvas = torch.zeros(_RENDER, _RENDER)
    h, w = image.shape
    if h == 0 or w == 0 or float(image.max()) == 0.0:
        return canvas
    rows, cols = image.nonzero(as_tuple=True)  # centre the ink, crop what falls outside
    cy, cx = (int(rows.min()) + int(rows.max())) // 2, (int(cols.min()) + int(cols.max())) // 2
    top, left = _RENDER // 2 - cy, _RENDER // 2 - cx
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, _RENDER), min(left + w, _RENDER)
    canvas[y0:y1, x0:x1] = image[y0 - top:y1 - top, x0 - left:x1 - left]
    return canvas


@functools.lru_cache(maxsize=4)
def _renders(characters: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images (C, F, R, R), covered (C, F) bool)``: every character in every font that covers it."""
    from matplotlib import ft2font

    maps = _charmaps()
    images = torch.zeros(len(characters), len(FONTS), _RENDER, _RENDER)
    covered = torch.zeros(len(characters), len(FONTS), dtype=torch.bool)
    for f, name in enumerate(FONTS):
        font = ft2font.FT2Font(os.path.join(_font_dir(), name))
        font.set_size(0.6 * _RENDER, 72)  # points at 72 dpi: the em in pixels
        for c, ch in enumerate(characters):
            if ord(ch) in maps[f]:
                images[c, f] = _draw(font, ch)
                covered[c, f] = bool(images[c, f].max() > 0)
    return images, covered


def _distinct(images: torch.Tensor, covered: torch.Tensor, threshold: float) -> list[int]:
    """Indices of characters kept after removing look-alikes: a character is dropped when its mean image over
    the fonts it shares with an earlier kept one is within ``threshold`` (RMS per pixel) of that one's."""
    small = F.avg_pool2d(images.flatten(0, 1)[:, None], 4).view(*images.shape[:2], -1)  # (C, F, 196)
    c = images.shape[0]
    total, shared = torch.zeros(c, c), torch.zeros(c, c)
    for f in range(images.shape[1]):  # squared distances per font, over the pairs that font covers
        both = covered[:, f, None] & covered[None, :, f]
        total += torch.cdist(small[:, f], small[:, f]).pow(2) / small.shape[-1] * both
        shared += both
    close = ((total / shared.clamp_min(1)).sqrt() < threshold) & (shared > 0)
    kept: list[int] = []
    for i in range(c):
        if covered[i].any() and not (kept and bool(close[i, kept].any())):
            kept.append(i)
    return kept


def _warp(images: torch.Tensor, g: torch.Generator, rotate: float, shear: float, scale: tuple[float, float],
          shift: float, elastic: float) -> torch.Tensor:
    """Random affine map composed with a smooth random displacement field (a 4×4 grid of displacements,
    bicubically up-sampled), applied by bilinear sampling; batched."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=g) * 2 - 1) * rotate * torch.pi / 180
    sh = (torch.rand(n, generator=g) * 2 - 1) * shear
    s = scale[0] + torch.rand(n, 2, generator=g) * (scale[1] - scale[0])
    t = (torch.rand(n, 2, generator=g) * 2 - 1) * shift
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    shearing = torch.eye(2).repeat(n, 1, 1)
    shearing[:, 0, 1] = sh
    linear = rotation @ shearing / s[:, :, None]  # output → input coordinates: scale > 1 enlarges the glyph
    theta = torch.cat([linear, t[:, :, None]], 2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    coarse = (torch.rand(n, 2, 4, 4, generator=g) * 2 - 1) * elastic
    field = F.interpolate(coarse, size=images.shape[-2:], mode="bicubic", align_corners=True)
    return F.grid_sample(images, grid + field.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def make_glyphs(samples_per_class: int = 20, size: int = 28, seed: int = 0, *, scripts: tuple[str, ...] = SCRIPTS,
                min_fonts: int = 4, split_seed: int = 0, noise: float = 0.05, rotate: float = 12.0,
                shear: float = 0.2, scale: tuple[float, float] = (0.85, 1.1), shift: float = 0.08,
                elastic: float = 0.04, lookalike: float = 0.06) -> GlyphData:
    """The glyph few-shot set: ``samples_per_class`` distorted renderings of every character.

    Parameters
    ----------
    samples_per_class : int
        Images per class (Omniglot has 20); each draws a font among those covering the character.
    size : int
        Image side (the glyph is drawn at 56 px, distorted, and area-resampled to ``size``).
    seed : int
        Seeds the fonts, distortions and noise: the same seed gives the same images.
    scripts, min_fonts
        Which letters are classes (:func:`candidate_characters`).
    split_seed : int
        Seeds the assignment of classes to the splits (60 / 20 / 20 %), independent of ``seed``.
    noise, rotate, shear, scale, shift, elastic
        Augmentation: Gaussian pixel noise (sd), rotation (± degrees), shear (±), scale range, translation
        (± fraction of the half-side), elastic displacement (± fraction of the half-side at 4×4 control points).
    lookalike : float
        Characters closer than this (RMS per pixel at 14×14, over shared fonts) to an earlier one are dropped.
    """
    check_positive(samples_per_class, "samples_per_class")
    check_positive(size, "size")
    characters = candidate_characters(tuple(scripts), min_fonts)
    if not characters:
        raise ValueError(f"no letters of scripts={scripts!r} are covered by {min_fonts} fonts; choose from "
                         f"{', '.join(SCRIPTS)} or lower min_fonts")
    images, covered = _renders(tuple(characters))
    kept = _distinct(images, covered, lookalike)
    characters = [characters[c] for c in kept]
    images, covered = images[kept], covered[kept]
    n_classes, m = len(characters), samples_per_class
    g = torch.Generator().manual_seed(seed)
    # a font per sample, uniform among the covering fonts
    probs = covered.float().repeat_interleave(m, 0)
    font = torch.multinomial(probs, 1, generator=g).squeeze(1)
    base = images[torch.arange(n_classes).repeat_interleave(m), font][:, None]
    warped = _warp(base, g, rotate, shear, scale, shift, elastic)
    x = F.interpolate(warped, size=(size, size), mode="area")
    x = (x + noise * torch.randn(x.shape, generator=g)).clamp(0, 1)
    order = torch.randperm(n_classes, generator=torch.Generator().manual_seed(split_seed))
    start, split = 0, [""] * n_classes
    for i, (name, share) in enumerate(SPLITS.items()):
        stop = n_classes if i == len(SPLITS) - 1 else start + round(share * n_classes)
        for c in order[start:stop].tolist():
            split[c] = name
        start = stop
    return GlyphData(x, torch.arange(n_classes).repeat_interleave(m), font, characters, split, m)


class Episode(NamedTuple):
    """One N-way K-shot episode: ``support`` (N·K, ...) and ``query`` (N·Q, ...) images with episode labels
    ``support_y``/``query_y`` in 0 … N−1 (class-major order), and ``classes`` (N,), the data set's classes."""

    support: torch.Tensor
    support_y: torch.Tensor
    query: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor


class EpisodeSampler:
    """N-way K-shot episodes with Q queries per class from the classes of one split (Vinyals et al. 2016).

    Each episode draws ``n_way`` distinct classes of ``split`` and, per class, ``k_shot + n_query`` distinct
    samples; labels are relabelled 0 … N−1 in the order the classes were drawn. Seeded: the same seed gives the
    same episodes. Iterating yields episodes forever; :meth:`take` a fixed number.
    """

    def __init__(self, data: GlyphData, split: str = "train", n_way: int = 5, k_shot: int = 1, n_query: int = 15,
                 seed: int = 0) -> None:
        check_positive(n_way, "n_way")
        check_positive(k_shot, "k_shot")
        check_positive(n_query, "n_query")
        self.data, self.split = data, split
        self.pool = data.classes(split)
        if n_way > len(self.pool):
            raise ValueError(f"n_way={n_way} exceeds the {len(self.pool)} classes of split {split!r}")
        if k_shot + n_query > data.samples_per_class:
            raise ValueError(f"k_shot + n_query = {k_shot + n_query} exceeds samples_per_class="
                             f"{data.samples_per_class}; make the data with more samples per class")
        self.n_way, self.k_shot, self.n_query = n_way, k_shot, n_query
        self.generator = torch.Generator().manual_seed(seed)

    def sample_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next episode as indices: ``(classes (N,), rows (N, K + Q))``, rows of ``data.x`` per class, the
        first K the support. :meth:`sample` draws the same (one draw advances the same generator)."""
        g, n, m = self.generator, self.n_way, self.data.samples_per_class
        classes = self.pool[torch.randperm(len(self.pool), generator=g)[:n]]
        within = torch.rand(n, m, generator=g).argsort(1)[:, :self.k_shot + self.n_query]  # distinct per class
        return classes, classes[:, None] * m + within

    def sample(self) -> Episode:
        """The next episode."""
        n, k, q = self.n_way, self.k_shot, self.n_query
        classes, rows = self.sample_rows()
        labels = torch.arange(n)[:, None]
        x = self.data.x
        return Episode(x[rows[:, :k].reshape(-1)], labels.expand(n, k).reshape(-1),
                       x[rows[:, k:].reshape(-1)], labels.expand(n, q).reshape(-1), classes)

    def take(self, count: int) -> list[Episode]:
        """The next ``count`` episodes."""
        return [self.sample() for _ in range(count)]

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()
