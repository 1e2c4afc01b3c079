"""The inputs the explain view offers and reads: the data folder's files (images, ``.txt`` lines, ``.csv`` rows),
uploads (checked: size, type, decodable) and typed text or table rows, each as a one-sample batch for the model.

An input is named by a reference the browser sends back: ``data:<file>`` (an image), ``data:<file>#<row>`` (a line
of a ``.txt`` file, a row of a ``.csv`` table), ``upload:<id>``, or given inline (``text``, ``row``).
"""
from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import IMAGE_SUFFIXES, image_tensor
from .paths import PathRefused, relative_name
from .refusals import Refused
from .state import AppState

#: the files of the data folder listed at most (the first ones, sorted)
MAX_ITEMS = 2000
#: uploads kept at most (the oldest go first)
MAX_UPLOADS = 64


@dataclass
class Sample:
    """One input ready for the model: ``x`` with a batch dimension of 1 and what the views show about it."""

    x: torch.Tensor
    kind: str  #: "image", "text" or "table"
    name: str
    forward_kwargs: dict[str, Any] = field(default_factory=dict)
    tokens: list[str] | None = None  #: text: the tokens
    feature_names: list[str] | None = None  #: tables: the column names
    preview: str | None = None  #: images: a URL of the picture
    raw: bytes | None = field(default=None, repr=False)  #: uploaded images: the model's input as a PNG
    ref: str = ""  #: the reference the browser names it by (empty for typed inputs)


def catalogue(state: AppState) -> list[dict[str, Any]]:
    """The inputs of the data folder, ``{"ref", "name", "kind", "url"}`` each (cached for the app's life)."""
    if "inputs" in state.cache:
        return state.cache["inputs"]
    items: list[dict[str, Any]] = []
    data = state.config.data
    if data is not None:
        files = sorted(p for p in (data.rglob("*") if data.is_dir() else [data]) if p.is_file())
        for path in files:
            if len(items) >= MAX_ITEMS:
                break
            try:
                name = relative_name(state.roots, path)
            except PathRefused:  # a link leading out of the served folders: not offered
                continue
            suffix = path.suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                items.append({"ref": f"data:{name}", "name": name, "kind": "image", "url": f"/files/{name}"})
            elif suffix == ".txt":
                for i, line in enumerate(_lines(path)[: MAX_ITEMS - len(items)]):
                    items.append({"ref": f"data:{name}#{i}", "name": line[:60], "kind": "text", "url": None})
            elif suffix == ".csv":
                names, rows = _table(path)
                for i in range(min(len(rows), MAX_ITEMS - len(items))):
                    items.append({"ref": f"data:{name}#{i}", "name": f"{path.stem} row {i}", "kind": "table",
                                  "url": None})
    state.cache["inputs"] = items
    return items


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _table(path: Path) -> tuple[list[str], np.ndarray]:
    """A numeric CSV table: its column names (a header row, else ``feature<i>``) and rows."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows:
        raise Refused(400, f"table {path.name!r} is empty")
    try:
        [float(v) for v in rows[0]]
        header = None
    except ValueError:
        header = rows.pop(0)
    try:
        values = np.array([[float(v) for v in row] for row in rows], dtype=np.float32)
    except ValueError:
        raise Refused(400, f"table {path.name!r} holds a value that is not a number; give numeric columns") from None
    return header or [f"feature{i}" for i in range(values.shape[1])], values


def load(state: AppState, spec: dict[str, Any]) -> Sample:
    """The input a request names: ``{"input": ref}``, ``{"text": "..."}`` or ``{"row": [numbers]}``."""
    served = state.need_model()
    if spec.get("text") is not None:
        return text_sample(served, str(spec["text"]), "typed text")
    if spec.get("row") is not None:
        return table_sample(served, spec["row"], None, "typed row")
    ref = spec.get("input")
    if not isinstance(ref, str) or not ref:
        raise Refused(400, "name an input: {'input': 'data:<file>' or 'upload:<id>'}, {'text': ...} or {'row': [...]}")
    if ref.startswith("upload:"):
        with state.cache_lock:
            sample = state.cache.get("uploads", {}).get(ref)
        if sample is None:
            raise Refused(404, f"no upload {ref!r} (uploads are kept for this session only; upload it again)")
        return sample
    sample = _from_data(state, served, ref)
    sample.ref = ref
    return sample


def _from_data(state: AppState, served: Any, ref: str) -> Sample:
    if not ref.startswith("data:"):
        raise Refused(400, f"unknown input {ref!r}: give data:<file>, data:<file>#<row> or upload:<id>")
    relative, _, row = ref[5:].partition("#")
    path = state.path(relative)
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return image_sample(served, path.read_bytes(), relative, f"/files/{relative}")
    if not row.isdigit():
        raise Refused(400, f"input {ref!r}: name a line or row of a .txt or .csv file as <file>#<number>")
    if suffix == ".txt":
        lines = _lines(path)
        if int(row) >= len(lines):
            raise Refused(404, f"{relative!r} has {len(lines)} lines, no line {row}")
        return text_sample(served, lines[int(row)], ref)
    if suffix == ".csv":
        names, rows = _table(path)
        if int(row) >= len(rows):
            raise Refused(404, f"{relative!r} has {len(rows)} rows, no row {row}")
        return table_sample(served, rows[int(row)], names, ref)
    raise Refused(415, f"{relative!r}: not an input (images, .txt or .csv)")


#: the signatures of the image formats decoded (any other bytes are refused before a decoder sees them)
MAGIC = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP",
         b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def image_format(content: bytes) -> str | None:
    """The format of an image file by its first bytes (PNG, JPEG, GIF, BMP, TIFF, WebP), else ``None``."""
    if content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in MAGIC.items() if content.startswith(magic)), None)


def image_sample(served: Any, content: bytes, name: str, preview: str | None) -> Sample:
    """An image file's bytes, decoded, resized to the model's size and scaled to its input range; bytes that are
    not an image of a known format, or do not decode, are refused (415)."""
    from skimage import io as image_io

    if image_format(content) is None:
        raise Refused(415, f"{name!r} is not an image: its bytes are none of PNG, JPEG, GIF, BMP, TIFF or WebP")
    try:  # no warnings.catch_warnings here: it is not thread-safe, and uploads are decoded in several threads
        image = image_io.imread(io.BytesIO(content))
    except Exception:  # noqa: BLE001 - any decoder error means "not an image we can read"
        raise Refused(415, f"{name!r} is not an image that can be read; upload a PNG, JPEG, GIF, BMP, TIFF or "
                           "WebP file") from None
    if image.ndim == 4 or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):  # frames first
        image = image[0]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 2:
        raise Refused(415, f"{name!r}: unexpected pixel array of shape {image.shape}")
    low = 0.0 if served.low is None else served.low
    high = 1.0 if served.high is None else served.high
    x = image_tensor(image, served.size, low, high)[None]
    return Sample(_to_model(x, served), "image", name, preview=preview)


def text_sample(served: Any, text: str, name: str) -> Sample:
    if served.tokenizer is None:
        raise Refused(400, f"text inputs need a text model with a tokenizer; the model {served.spec!r} takes "
                           f"{served.kind} inputs")
    if not text.strip():
        raise Refused(400, "the text is empty")
    encoded = served.tokenizer([text], truncation=True, return_tensors="pt")
    tokens = served.tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    device = _device(served)
    return Sample(encoded["input_ids"].to(device), "text", name,
                  forward_kwargs={"attention_mask": encoded["attention_mask"].to(device)}, tokens=tokens)


def table_sample(served: Any, row: Any, names: list[str] | None, name: str) -> Sample:
    try:
        values = torch.tensor(np.asarray(row, dtype=np.float32))
    except (TypeError, ValueError):
        raise Refused(400, "a table row must be a list of numbers") from None
    if values.ndim != 1 or not torch.isfinite(values).all():
        raise Refused(400, "a table row must be one flat list of finite numbers")
    names = names or [f"feature{i}" for i in range(len(values))]
    return Sample(_to_model(values[None], served), "table", name, feature_names=list(names))


def upload(state: AppState, content: bytes, filename: str) -> dict[str, Any]:
    """Keep an uploaded file as an input: an image, a ``.txt`` (its first line) or a ``.csv`` (its first row).
    Too large: 413; any other type, or bytes that do not decode: 415."""
    served = state.need_model()
    limit = state.config.upload_limit
    if len(content) > limit:
        raise Refused(413, f"upload too large: {len(content):,} bytes; the limit is {limit:,} bytes "
                           "(xaikit serve --upload-limit)")
    suffix = Path(filename or "").suffix.lower()
    ref = f"upload:{uuid.uuid4().hex[:12]}"
    if suffix in IMAGE_SUFFIXES:
        sample = image_sample(served, content, filename, None)
        sample.preview = f"/api/explain/uploads/{ref[7:]}.png"
        sample.raw = png(sample.x, served)
    elif suffix == ".txt":
        try:
            text = content.decode("utf-8").strip().splitlines()[0]
        except (UnicodeDecodeError, IndexError):
            raise Refused(415, f"{filename!r} is not a UTF-8 text file with a line of text") from None
        sample = text_sample(served, text, filename)
    elif suffix == ".csv":
        try:
            rows = [r for r in csv.reader(io.StringIO(content.decode("utf-8"))) if r]
            values = [float(v) for v in rows[-1]]
            header = rows[0] if len(rows) > 1 else None
        except (UnicodeDecodeError, IndexError, ValueError):
            raise Refused(415, f"{filename!r} is not a CSV table with a numeric row") from None
        sample = table_sample(served, values, header, filename)
    else:
        raise Refused(415, f"{filename!r}: uploads must be images ({', '.join(sorted(IMAGE_SUFFIXES))}), .txt or "
                           ".csv files")
    sample.ref = ref
    with state.cache_lock:  # uploads arrive in several threads
        uploads = state.cache.setdefault("uploads", {})
        uploads[ref] = sample
        while len(uploads) > MAX_UPLOADS:
            del uploads[next(iter(uploads))]
    return {"ref": ref, "name": filename, "kind": sample.kind, "url": sample.preview}


def png(x: torch.Tensor, served: Any) -> bytes:
    """An image input ``(1, 3, H, W)`` as the model sees it, encoded as PNG (what the browser is sent of an
    upload: never the uploaded bytes themselves)."""
    import imageio.v3 as iio

    from ..viz.heatmap import to_rgb

    rgb = to_rgb(x.detach().cpu(), served.low, served.high)[0]
    return iio.imwrite("<bytes>", (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), extension=".png")


def _device(served: Any) -> torch.device:
    model = served.model
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")


def _to_model(x: torch.Tensor, served: Any) -> torch.Tensor:
    model = served.model
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    if parameter is None:
        return x
    return x.to(parameter.device, parameter.dtype if parameter.is_floating_point() else x.dtype)
