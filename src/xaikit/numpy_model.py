"""Use a NumPy function (e.g. scikit-learn's ``predict_proba``) as a model of the model-agnostic methods.

The forward-only methods (Occlusion, RISE, LIME, ExactShapley, KernelSHAP, PermutationShapley) and the metrics
that only need outputs accept any callable ``x -> torch.Tensor``. :class:`NumpyModel` turns a function of
NumPy arrays into one: it hands the function ``x`` as an array on the CPU and returns the result as a tensor
with ``x``'s dtype on ``x``'s device. Gradient and propagation methods need a ``torch.nn.Module`` and reject it
with a message that says so.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch


class NumpyModel:
    """A callable ``x (tensor) -> scores (tensor)`` around ``fn(array) -> array``.

    Parameters
    ----------
    fn : callable
        Takes an array ``(M, ...)`` and returns scores ``(M, K)`` or ``(M,)``, e.g. ``clf.predict_proba``.
        Integer results (class labels, e.g. ``clf.predict``) are rejected when explained: explanations need
        real-valued scores.
    dtype : NumPy dtype, optional
        Dtype of the array handed to ``fn`` (default: the dtype of ``x``, e.g. float32).
    feature_names : sequence of str, optional
        Hand ``fn`` a ``pandas.DataFrame`` with these columns instead of an array (for pipelines fitted on a
        data frame); needs pandas.

    Examples
    --------
    >>> model = xk.NumpyModel(clf.predict_proba)
    >>> expl = xk.KernelSHAP(model, samples=512, background=x_train[:50])(x_test, target=1)
    """

    def __init__(self, fn: Callable[[Any], Any], dtype: Any = None,
                 feature_names: Sequence[str] | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be a callable array -> array (e.g. clf.predict_proba), got {type(fn).__name__}")
        if isinstance(fn, torch.nn.Module):
            raise TypeError("fn is already a torch.nn.Module; pass it to the method directly")
        self.fn, self.dtype = fn, None if dtype is None else np.dtype(dtype)
        self.feature_names = None if feature_names is None else [str(n) for n in feature_names]

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        array = x.detach().cpu().numpy()
        if self.dtype is not None:
            array = array.astype(self.dtype, copy=False)
        if self.feature_names is not None:
            if array.ndim != 2 or array.shape[1] != len(self.feature_names):
                raise ValueError(f"feature_names has {len(self.feature_names)} names but x has shape {array.shape}; "
                                 "give one name per column of a tabular input (N, D)")
            import pandas as pd

            array = pd.DataFrame(array, columns=self.feature_names)
        result = self.fn(array, *args, **kwargs)
        try:
            result = np.asarray(result)
        except (TypeError, ValueError):
            raise TypeError(f"fn returned {type(result).__name__}, which is not an array of scores") from None
        if result.dtype.kind not in "biuf":
            raise TypeError(f"fn returned an array of dtype {result.dtype}; it must return numeric scores (M, K) or (M,)")
        scores = torch.from_numpy(np.ascontiguousarray(result))
        if scores.is_floating_point() and x.is_floating_point():
            scores = scores.to(x.dtype)
        return scores.to(x.device)

    @classmethod
    def from_estimator(cls, estimator: Any, dtype: Any = None) -> "NumpyModel":
        """A scikit-learn-style estimator as a model: its ``predict_proba`` (classifiers: scores ``(M, K)``),
        else its ``predict`` (regressors: ``(M,)`` or ``(M, T)``, which must be real-valued).

        Raises ``TypeError`` for an object with neither method (an unfitted estimator is found out at the
        first call, by scikit-learn's own ``NotFittedError``)."""
        for name in ("predict_proba", "predict"):
            fn = getattr(estimator, name, None)
            if callable(fn):
                model = cls(fn, dtype)
                model.estimator = estimator
                return model
        raise TypeError(f"{type(estimator).__name__} has neither predict_proba nor predict; give a fitted "
                        "scikit-learn estimator or a NumpyModel(fn)")

    def __repr__(self) -> str:
        return f"NumpyModel({getattr(self.fn, '__qualname__', type(self.fn).__name__)})"
