"""Inputs on the command line: image files and folders, scikit-image photos, text lines, CSV tables, arrays.

- ``photo.jpg``, ``folder/`` (its images, sorted), ``skimage:chelsea`` (a photo bundled with scikit-image):
  resized to the model's size and scaled to its input range;
- ``lines.txt``: one text per line (text models);
- ``table.csv``: numeric columns, one sample per row (a header row is skipped; ``--target-column`` takes the
  labels from a column, or a regressor's true values);
- ``audio.wav``: one signal ``(1, C, T)`` (integer samples scaled to [-1, 1]);
- ``data.npy`` / ``data.npz``: a float array ``(N, ...)`` (signals: ``(N, C, T)``); an ``.npz`` holds ``x`` and
  optionally ``y`` (targets) and ``mask`` (ground-truth masks);
- ``ground-truth``: samples of the synthetic ground-truth data set (with masks).
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data import IMAGE_SUFFIXES, image_tensor
from . import parts
from .errors import NotFound, UsageError, one_line
from .models import LoadedModel
from .outputs import written_files


@dataclass
class Inputs:
    """A batch of inputs ready for the model, with names for the files written about them."""

    x: torch.Tensor
    names: list[str]
    kind: str  #: "image", "text" or "tensor"
    target: torch.Tensor | None = None  #: labels given with the data
    mask: torch.Tensor | None = None  #: ground-truth masks given with the data
    forward_kwargs: dict[str, Any] = field(default_factory=dict)  #: e.g. the attention mask of text
    tokens: list[list[str]] | None = None  #: text: the tokens of each input
    texts: list[str] | None = None  #: text: the inputs as given
    feature_names: list[str] | None = None  #: CSV: the column names
    values: torch.Tensor | None = None  #: CSV: the --target-column as given (a regressor's true values)

    def __len__(self) -> int:
        return self.x.shape[0]


def check_inputs_exist(specs: Sequence[str]) -> None:
    """Fail on a missing input file before anything slow is loaded."""
    for spec in specs:
        if spec != parts.GROUND_TRUTH_DATA and not spec.startswith("skimage:") and not Path(spec).exists():
            raise NotFound(f"input {spec!r} not found")


def load_inputs(specs: Sequence[str], loaded: LoadedModel, texts: Sequence[str] = (), num_samples: int = 16,
                seed: int = 0, target_column: str | None = None, device: str = "cpu") -> Inputs:
    """Read every input spec (see the module docstring) into one batch on ``device``."""
    specs = list(specs) or ([] if texts else list(loaded.default_inputs))
    if not specs and not texts:
        raise UsageError(f"no inputs: give --inputs FILE/FOLDER (the model {loaded.spec!r} has no default inputs)")
    images, lines, arrays = [], list(texts), []
    for spec in specs:
        if spec == parts.GROUND_TRUTH_DATA:
            x, y, mask = parts.ground_truth_data(num_samples, seed)
            arrays.append(("ground-truth", x, y, mask, None))
        elif spec.startswith("skimage:"):
            images.append((spec.split(":", 1)[1], _skimage_photo(spec.split(":", 1)[1])))
        else:
            path = Path(spec)
            if not path.exists():
                raise NotFound(f"input {spec!r} not found")
            if path.is_dir():
                images.extend(_read_folder(path))
            elif path.suffix.lower() in IMAGE_SUFFIXES:
                images.append((path.stem, _read_image(path)))
            elif path.suffix.lower() == ".txt":
                lines.extend(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            elif path.suffix.lower() == ".csv":
                arrays.append(_read_csv(path, target_column))
            elif path.suffix.lower() in (".npy", ".npz"):
                arrays.append(_read_array(path))
            elif path.suffix.lower() == ".wav":
                arrays.append(_read_wav(path))
            else:
                raise UsageError(f"input {spec!r}: unknown kind of file; give images, .txt, .csv, .npy, .npz or .wav")
    kinds = [k for k, v in (("image", images), ("text", lines), ("tensor", arrays)) if v]
    if len(kinds) > 1:
        raise UsageError(f"inputs mix {' and '.join(kinds)}; give one kind per run")
    if images:
        inputs = _image_batch(images, loaded)
    elif lines:
        inputs = _text_batch(lines, loaded)
    else:
        inputs = _array_batch(arrays)
    return _to(inputs, device)


def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    if name.startswith("_") or not callable(getattr(data, name, None)):
        raise NotFound(f"scikit-image has no photo {name!r} (e.g. skimage:chelsea, skimage:coffee)")
    return getattr(data, name)()


def _read_folder(folder: Path) -> list[tuple[str, np.ndarray]]:
    """The folder's images, sorted by name; a file that cannot be read is skipped with a warning, and the files
    xaikit itself wrote there (listed in its output marker) are not inputs."""
    own = written_files(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in own)
    if not files:
        raise NotFound(f"input folder {str(folder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    images = []
    for file in files:
        try:
            images.append((file.stem, _read_image(file)))
        except NotFound as err:
            warnings.warn(f"{err}; skipped", UserWarning, stacklevel=2)
    if not images:
        raise NotFound(f"no image of the input folder {str(folder)!r} could be read")
    return images


def _read_image(path: Path) -> np.ndarray:
    """An ``(H, W[, C])`` image; an animated image (GIF) gives its first frame."""
    from skimage import io

    try:
        image = io.imread(str(path))
    except Exception as err:  # noqa: BLE001 - any decoder error means the same to the user
        reason = one_line(err).split(". ")[0]  # decoders append install hints for plugins: keep the first sentence
        raise NotFound(f"cannot read image {str(path)!r}: {reason}") from None
    if image.ndim == 4 or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):  # frames first
        image = image[0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)) or min(image.shape[:2]) < 2:
        raise NotFound(f"cannot read image {str(path)!r}: unexpected pixel array of shape {image.shape}")
    return image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def _image_batch(images: list[tuple[str, np.ndarray]], loaded: LoadedModel) -> Inputs:
    low = 0.0 if loaded.low is None else loaded.low
    high = 1.0 if loaded.high is None else loaded.high
    x = torch.stack([image_tensor(image, loaded.size, low, high) for _, image in images])
    return Inputs(x, _unique([name for name, _ in images]), "image")


def _text_batch(lines: list[str], loaded: LoadedModel) -> Inputs:
    if loaded.tokenizer is None:
        raise UsageError(f"text inputs need a text model with a tokenizer (e.g. --model minilm), not {loaded.spec!r}")
    encoded = loaded.tokenizer(lines, padding=True, truncation=True, return_tensors="pt")
    tokens = [loaded.tokenizer.convert_ids_to_tokens(row[row_mask.bool()].tolist())
              for row, row_mask in zip(encoded["input_ids"], encoded["attention_mask"])]
    return Inputs(encoded["input_ids"], [f"text{i}" for i in range(len(lines))], "text",
                  forward_kwargs={"attention_mask": encoded["attention_mask"]}, tokens=tokens, texts=list(lines))


def _read_csv(path: Path, target_column: str | None) -> tuple:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows:
        raise NotFound(f"CSV file {str(path)!r} is empty")
    header = None if _numeric(rows[0]) else rows.pop(0)
    if not rows:
        raise UsageError(f"CSV file {str(path)!r} has a header but no data rows")
    width = len(header) if header else len(rows[0])
    for number, row in enumerate(rows, start=2 if header else 1):
        if len(row) != width:
            raise UsageError(f"CSV file {str(path)!r}: line {number} has {len(row)} values, the first "
                             f"{'(header) ' if header else ''}line {width}; give one value per column on every line")
        for column, value in enumerate(row):
            if not _numeric([value]):
                name = f"column {header[column]!r}" if header else f"column {column + 1}"
                raise UsageError(f"CSV file {str(path)!r}: line {number}, {name} holds {value!r}, not a number; "
                                 "give numeric feature columns only")
    values = np.array([[float(v) for v in row] for row in rows], dtype=np.float32)
    names = header or [f"feature{i}" for i in range(values.shape[1])]
    target = None
    if target_column is not None:
        if target_column not in names:
            raise UsageError(f"--target-column {target_column!r} is not a column of {str(path)!r}; "
                             f"columns: {', '.join(names)}")
        column = names.index(target_column)
        true_values = torch.tensor(values[:, column].astype(np.float64))
        integral = bool((true_values == true_values.round()).all()) and bool((true_values >= 0).all())
        target = true_values.long() if integral else None  # class labels; a regressor reads true_values
        values = np.delete(values, column, axis=1)
        names = names[:column] + names[column + 1:]
        return path.stem, torch.from_numpy(values), target, None, names, true_values
    return path.stem, torch.from_numpy(values), target, None, names


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _read_wav(path: Path) -> tuple:
    """A WAV file as one signal ``(1, C, T)``: integer samples scaled to [-1, 1], floats as stored."""
    from scipy.io import wavfile

    try:
        rate, samples = wavfile.read(path)
    except Exception as err:  # noqa: BLE001 - any reading error means the same to the user
        raise NotFound(f"cannot read WAV file {str(path)!r}: {type(err).__name__}: {one_line(err)}") from None
    samples = np.asarray(samples)
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        samples = (samples.astype(np.float64) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2)
    signal = samples.astype(np.float32).reshape(len(samples), -1).T  # (C, T)
    return path.stem, torch.from_numpy(np.ascontiguousarray(signal))[None], None, None, None


def _read_array(path: Path) -> tuple:
    try:
        content = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise NotFound(f"cannot read array file {str(path)!r}: {type(err).__name__}") from None
    if isinstance(content, np.ndarray):
        return path.stem, torch.from_numpy(content).float(), None, None, None
    if "x" not in content.files:
        raise UsageError(f"{str(path)!r} must hold an array 'x' (and optionally 'y', 'mask'); "
                         f"it has {', '.join(content.files)}")
    y = torch.from_numpy(content["y"]).long() if "y" in content.files else None
    mask = torch.from_numpy(content["mask"]) if "mask" in content.files else None
    return path.stem, torch.from_numpy(content["x"]).float(), y, mask, None


def _array_batch(arrays: list[tuple]) -> Inputs:
    shapes = {tuple(x.shape[1:]) for _, x, *_ in arrays}
    if len(shapes) > 1:
        raise UsageError(f"array inputs have different sample shapes {sorted(shapes)}")
    names = _unique([f"{stem}{i}" for stem, x, *_ in arrays for i in range(len(x))])
    x = torch.cat([x for _, x, *_ in arrays])
    given = [len(a) > 5 for a in arrays]
    values = _cat_optional([a[5] for a in arrays], len(arrays)) if all(given) else None
    target = None if all(given) and any(a[2] is None for a in arrays) else \
        _cat_optional([a[2] for a in arrays], len(arrays))
    mask = _cat_optional([a[3] for a in arrays], len(arrays))
    kind = "image" if x.ndim == 4 and x.shape[1] in (1, 3) else "tensor"
    return Inputs(x, names, kind, target, mask, feature_names=arrays[0][4], values=values)


def _cat_optional(parts_: list, n: int) -> torch.Tensor | None:
    present = [p for p in parts_ if p is not None]
    if not present:
        return None
    if len(present) != n:
        raise UsageError("some inputs come with targets/masks and some without; give them for all or none")
    return torch.cat(present)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def _to(inputs: Inputs, device: str) -> Inputs:
    inputs.x = inputs.x.to(device)
    inputs.forward_kwargs = {k: v.to(device) for k, v in inputs.forward_kwargs.items()}
    return inputs
