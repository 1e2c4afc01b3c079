"""The computations of the explain view, written on the library: predictions, one method's explanation, the
metrics of a shown explanation. Each runs the model under the app's model lock."""
from __future__ import annotations

import base64
import hashlib
import io
import time
import warnings
from typing import Any

import numpy as np
import torch

from ..methods.resolve import parse_spec, resolve_method
from ..metrics.base import get_metric
from ..targets import Contrast
from ..viz.heatmap import relevance_map
from .inputs import Sample
from .refusals import Refused, library_call
from .state import AppState

#: the percentile of |relevance| shown at full colour (as the CLI's and the report's heatmaps)
PERCENTILE = 99.5
#: explanations kept for the metrics asked after them
KEEP = 32


def parse_target(text: Any) -> Any:
    """The target the browser names: ``"argmax"``/empty (the prediction), a class index, or ``"a-b"`` /
    ``"a vs b"`` (why ``a`` rather than ``b``; ``a`` may be ``argmax``)."""
    if text is None or (isinstance(text, str) and text.strip() in ("", "argmax")):
        return None
    if isinstance(text, int):
        return text
    text = str(text).strip().replace(" vs ", "-")
    a, sep, b = text.partition("-")
    try:
        if sep:
            return Contrast(None if a.strip() == "argmax" else int(a), int(b))
        return int(text)
    except ValueError:
        raise Refused(400, f"target {text!r}: give argmax, a class index or 'a vs b' (class indices)") from None


def sequence_model(served: Any) -> bool:
    """A causal language model: outputs ``(N, L, V)``, explained on the next token (:class:`xaikit.NextToken`)."""
    return served.kind == "causal-lm"


def predict(state: AppState, sample: Sample, top: int = 5) -> dict[str, Any]:
    """The model's output on the sample: the ``top`` classes (a causal language model: next tokens) with their
    names and probabilities."""
    served = state.need_model()
    with state.model_lock, torch.no_grad(), library_call("predict", model_errors=True):
        output = served.model(sample.x, **sample.forward_kwargs)
    output = getattr(output, "logits", output)  # Hugging Face models answer with an object
    sequence = sequence_model(served) and output.ndim == 3
    output = (output[:, -1] if sequence else output).reshape(1, -1).float()
    probability = output.softmax(1)[0] if output.shape[1] > 1 else output[0]
    order = probability.argsort(descending=True)[:top].tolist()
    name = (lambda i: served.tokenizer.convert_ids_to_tokens([i])[0]) if sequence else served.label
    return {"kind": sample.kind, "name": sample.name, "preview": sample.preview, "tokens": sample.tokens,
            "features": sample.feature_names, "classes": output.shape[1], "next_token": sequence,
            "top": [{"index": i, "name": name(i), "probability": float(probability[i]),
                     "logit": float(output[0, i])} for i in order]}


def model_target(served: Any, target: Any) -> Any:
    """The target the library is given: for a causal language model the next token's logit (the predicted one,
    or the token index chosen); contrasts are for class outputs."""
    if not sequence_model(served):
        return target
    from ..tokens import NextToken

    if isinstance(target, Contrast):
        raise Refused(400, "a contrast 'a vs b' is for class outputs; a causal language model explains one next "
                           "token: give its index or argmax")
    return NextToken(token=target)


def method_spec(method: str, settings: Any) -> tuple[str, dict[str, Any]]:
    """A method name or spec plus settings (a dict, or a ``key=value,...`` string) -> (name, settings)."""
    if not isinstance(method, str) or not method:
        raise Refused(400, "name a method, e.g. lrp or integrated_gradients:steps=16")
    with library_call("method"):
        name, given = parse_spec(method)
        if isinstance(settings, str) and settings.strip():
            given.update(parse_spec(f"{name}:{settings}")[1])
        elif isinstance(settings, dict):
            given.update({k: v for k, v in settings.items() if v not in (None, "")})
        elif settings not in (None, ""):
            raise Refused(400, "settings must be an object or a 'key=value,...' string")
    return name, given


def explain(state: AppState, sample: Sample, method: str, settings: Any, target: Any) -> dict[str, Any]:
    """One method's explanation of the sample, as the browser draws it (see :func:`shown`)."""
    served = state.need_model()
    name, given = method_spec(method, settings)
    target = parse_target(target)
    with state.model_lock, library_call(f"method {name!r}", model_errors=True):
        start = time.perf_counter()  # the method's own time, not the wait for the model
        # the library's warnings (an operation the engine does not understand, relevance its rules absorbed)
        # go to the page with the heatmap, never only to the server's log; recorded under the model lock, the
        # only place the app changes the warning filters
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            built = resolve_method(served.model, name, given)
            expl = built(sample.x, target=model_target(served, target), forward_kwargs=sample.forward_kwargs)
        seconds = time.perf_counter() - start
    key = _key(sample, name, given, target)
    with state.cache_lock:  # requests run in several threads
        kept = state.cache.setdefault("explanations", {})
        kept[key] = (expl, target)
        while len(kept) > KEEP:
            del kept[next(iter(kept))]
    answer = shown(sample, expl)
    answer.update({"method": name, "settings": {k: _plain(v) for k, v in given.items()}, "key": key,
                   "seconds": seconds, "target": expl.target.reshape(-1).tolist()[:1],
                   "contrast": target.b if isinstance(target, Contrast) else None, "score": _score(expl, target),
                   "warnings": list(dict.fromkeys(str(w.message).strip() for w in caught)),
                   "unknown": {str(k): int(v) for k, v in
                               ((expl.info or {}).get("coverage") or {}).get("unknown", {}).items()}})
    return answer


def shown(sample: Sample, expl: Any) -> dict[str, Any]:
    """What the browser draws of an explanation: an image's channel-summed map (float32, base64) and its colour
    scale, a text's token relevance and token heatmap, a table row's feature relevance and bar plot; with the
    relevance sum and a checksum of the values."""
    attribution = expl.attribution.detach().float().cpu()
    answer: dict[str, Any] = {"kind": sample.kind, "sum": float(attribution.double().sum()),
                              "abs_sum": float(attribution.double().abs().sum())}
    if sample.kind == "image" and attribution.ndim == 4:
        answer.update(encode_map(attribution[0]))
        return answer
    values = attribution.reshape(attribution.shape[0], -1)[0].numpy()
    if sample.kind == "image":  # e.g. a map of another shape: show it as one row
        values = relevance_map(attribution).reshape(-1).astype(np.float32)
    answer.update({"values": values.tolist(), "checksum": hashlib.sha1(values.tobytes()).hexdigest()[:16]})
    if sample.kind == "text":
        from ..viz.text import token_html

        answer.update({"tokens": sample.tokens, "html": token_html(sample.tokens, values, fragment=True)})
    elif sample.kind == "table":
        answer.update({"features": sample.feature_names, "png": bar_png(expl, sample)})
    return answer


def encode_map(attribution: torch.Tensor) -> dict[str, Any]:
    """One image's map ``(C, H, W)`` (channels summed, :func:`xaikit.viz.heatmap.relevance_map`) or ``(H, W)`` as
    the browser draws it: float32 values in base64, the colour scale (the 99.5th percentile of ``|R|``, as the
    CLI's heatmaps), a checksum of the values and their sum."""
    values = attribution.detach().float().cpu()
    grid = (relevance_map(values[None])[0] if values.ndim == 3 else values.numpy()).astype(np.float32)
    return {"h": grid.shape[0], "w": grid.shape[1], "map": base64.b64encode(grid.tobytes()).decode(),
            "scale": _percentile_scale(grid), "checksum": hashlib.sha1(grid.tobytes()).hexdigest()[:16],
            "map_sum": float(grid.astype(np.float64).sum())}


def _percentile_scale(grid: np.ndarray) -> float:
    flat = np.abs(grid).reshape(-1)
    scale = float(np.percentile(flat, PERCENTILE))
    return scale if scale > 0 else float(flat.max())


def bar_png(expl: Any, sample: Sample) -> str:
    """The bar plot of a table row's feature relevance (xaikit.viz.tabular.plot_bar), a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ..tabular import feature_table
    from ..viz.tabular import plot_bar

    figure = plot_bar(feature_table(expl, sample.feature_names, sample.x), 0)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def metrics(state: AppState, sample: Sample, method: str, settings: Any, target: Any,
            names: list[str]) -> dict[str, Any]:
    """The metrics ``names`` (names or specs ``name:key=value``) of the explanation the browser shows (computed
    again when it is no longer kept)."""
    served = state.need_model()
    name, given = method_spec(method, settings)
    key = _key(sample, name, given, parse_target(target))
    with state.cache_lock:
        found = state.cache.get("explanations", {}).get(key)
    if found is None:
        explain(state, sample, method, settings, target)
        with state.cache_lock:
            found = state.cache["explanations"][key]
    expl, spec = found
    scores = {}
    for text in names:
        with library_call(f"metric {text!r}"):
            metric_name, metric_settings = parse_spec(text)
            metric = get_metric(metric_name)(**metric_settings)
            start = time.perf_counter()
            with state.model_lock:
                given_target = model_target(served, spec) if sequence_model(served) else \
                    expl.target if spec is None or isinstance(spec, int) else spec
                value = metric(served.model, sample.x, given_target, expl.attribution)
        scores[text] = {"value": float(torch.as_tensor(value).reshape(-1)[0]),
                        "higher_is_better": bool(getattr(metric, "higher_is_better", True)),
                        "seconds": time.perf_counter() - start}
    return {"method": name, "scores": scores}


def _key(sample: Sample, name: str, settings: dict[str, Any], target: Any) -> str:
    content = hashlib.sha1(sample.x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
    text = repr((content, name, sorted((k, repr(v)) for k, v in settings.items()), repr(target)))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _score(expl: Any, target: Any) -> float | None:
    """The explained score: the target's output, for a contrast "a vs b" ``output[a] - output[b]``."""
    output, index = expl.output, expl.target.reshape(-1)
    if output is None or index.numel() == 0 or int(index[0]) < 0:
        return None
    output = getattr(output, "logits", output)
    if output.ndim == 3:  # a causal language model's next token
        output = output[:, -1]
    flat = output.reshape(output.shape[0], -1)[0]
    score = flat[int(index[0])]
    if isinstance(target, Contrast):
        if not isinstance(target.b, int):
            return None
        score = score - flat[target.b]
    return float(score)


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else repr(value)
