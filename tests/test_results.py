"""Issue 22: one naming rule for results (``<Tool>Result``) and one export mixin (``xaikit.results``).

Every result class is built here from small fixed values; its four exports must hold the same rows.
"""
import csv
import io
import json
import math
import warnings

import numpy as np
import pytest
import torch

import xaikit as xk
from xaikit.concepts import (AblationResult, ChannelRelevanceResult, ConditionalHeatmapsResult, EmbeddingResult,
                             FeatureVisualisationResult, HierarchyResult, ReferenceSamplesResult)
from xaikit.examples import (CEMResult, InfluenceFunctionsResult, NeighboursResult, PrototypesResult,
                             SimilarityMapsResult, TracInResult, TRAKResult)
from xaikit.generation import GenerationResult
from xaikit.improve import SpRAyResult
from xaikit.metrics import BenchmarkResult, MetricResult
from xaikit.results import ResultExport
from xaikit.tabular import FeatureTableResult
from xaikit.tune import HoldoutResult, TuneResult
from xaikit.tune.objectives import Objective
from xaikit.tune.result import Candidate

G = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.rand(*shape, generator=G)


def benchmark():
    scores = {(m, k): rand(3) for m in ("a", "b") for k in ("Sparseness", "PixelFlipping")}
    scores[("b", "PixelFlipping")][0] = math.nan
    return BenchmarkResult(["a", "b"], ["Sparseness", "PixelFlipping"], scores,
                           {"Sparseness": True, "PixelFlipping": False}, {"Sparseness": "complexity"})


def tune_result():
    objective = Objective("pf", xk.metrics.PixelFlipping())
    candidates = [Candidate(f"c{i}", "space", {"gamma": i / 4}, rung=1, samples=4, mean={"pf": float(i)},
                            sem={"pf": 0.1}, undefined={"pf": 0}, pareto=i == 0) for i in range(3)]
    return TuneResult({"space": object()}, [objective], candidates, candidates[0], "halving", 9, 4, 12, 12)


def holdout():
    objective = Objective("pf", xk.metrics.PixelFlipping())
    scores = {"pf": {"tuned": np.array([0.1, 0.2, 0.3]), "preset": np.array([0.5, 0.4, 0.6])}}
    return HoldoutResult(scores, [objective], "tuned")


def generation():
    mask = torch.tensor([[True, True], [True, False]])
    return GenerationResult(rand(2, 5, 2), torch.arange(10).view(2, 5), torch.ones(2, 5), torch.tensor([[3, 4], [8, 0]]),
                            mask, 3, rand(2, 2), "LRP", {})


def neighbours():
    return NeighboursResult(torch.tensor([[2, 0], [1, 2]]), rand(2, 2), rand(2, 2), torch.tensor([[1, 0], [0, 1]]),
                            "cosine")


FACTORIES = {
    "BenchmarkResult": benchmark,
    "MetricResult": lambda: MetricResult(rand(3), rand(3, 4)),
    "TuneResult": tune_result,
    "HoldoutResult": holdout,
    "ChannelRelevanceResult": lambda: ChannelRelevanceResult(rand(4), {0: rand(4), 1: rand(4)}, {0: 2, 1: 3}, "l"),
    "AblationResult": lambda: AblationResult(["baseline", "top-2", "random-2", "low-2"], [0, 1, "all"],
                                             100 * np.random.default_rng(0).random((4, 3)), np.zeros((4, 3)),
                                             {}, 2, "l"),
    "ReferenceSamplesResult": lambda: ReferenceSamplesResult(
        {"activation": torch.tensor([[0, 2], [1, -1]]), "relevance": torch.tensor([[2, 1], [0, -1]])},
        {"activation": rand(2, 2), "relevance": rand(2, 2)},
        {"activation": torch.tensor([[0, 1], [1, -1]]), "relevance": torch.tensor([[1, 1], [0, -1]])}, "l", 3),
    "ConditionalHeatmapsResult": lambda: ConditionalHeatmapsResult(rand(3, 1, 4, 4), [0, [1, 2], 3],
                                                                   torch.tensor([0, 0, 1]), rand(3), rand(3),
                                                                   torch.tensor([1, 1, 0]), "l"),
    "HierarchyResult": lambda: HierarchyResult(2, torch.tensor([4, 1]), rand(2), rand(2), rand(2, 1, 4, 4), 0.5),
    "FeatureVisualisationResult": lambda: FeatureVisualisationResult(rand(2, 3, 8, 8), rand(5, 2), "channel",
                                                                     [3, 7]),
    "EmbeddingResult": lambda: EmbeddingResult(np.random.default_rng(0).random((3, 2)),
                                               np.zeros((3, 4)), np.array([0, 1, 1]), None),
    "NeighboursResult": neighbours,
    "SimilarityMapsResult": lambda: SimilarityMapsResult(rand(2, 2, 1, 3, 3), rand(2, 2, 1, 3, 3), rand(2, 2),
                                                         neighbours()),
    "TracInResult": lambda: TracInResult(torch.tensor([[0, 1]]), rand(1, 2), torch.tensor([[3, 2]]), -rand(1, 2),
                                         torch.tensor([1])),
    "TRAKResult": lambda: TRAKResult(torch.tensor([[0, 1]]), rand(1, 2), torch.tensor([[3, 2]]), -rand(1, 2),
                                     torch.tensor([1])),
    "InfluenceFunctionsResult": lambda: InfluenceFunctionsResult(torch.tensor([[0, 1]]), rand(1, 2),
                                                                 torch.tensor([[3, 2]]), -rand(1, 2),
                                                                 torch.tensor([1])),
    "PrototypesResult": lambda: PrototypesResult(rand(2, 4), torch.tensor([0, 1]), torch.tensor([[0, 3], [1, 2]]),
                                                 rand(2, 2), torch.tensor([2, 2])),
    "CEMResult": lambda: CEMResult(rand(2, 3), torch.tensor([0, 1]), rand(2, 3), None, torch.tensor([True, False]),
                                   None, torch.tensor([0, 0]), None, torch.zeros(2, 3), rand(2, 2)),
    "SpRAyResult": lambda: SpRAyResult(torch.tensor([0, 1, 1]), rand(3), 2, rand(3, 4), rand(2, 2, 2)),
    "FeatureTableResult": lambda: FeatureTableResult(["age", "income"], np.array([[30.0, np.nan], [40.0, 2.0]]),
                                                     np.array([[0.5, -1.0], [0.25, 0.0]]), "LIME"),
    "GenerationResult": generation,
    "GenerationResult (answer)": lambda: GenerationResult(rand(2, 5, 1), torch.arange(10).view(2, 5), torch.ones(2, 5),
                                                          torch.tensor([[3, 4], [8, 0]]),
                                                          torch.tensor([[1, 1], [1, 0]]), 3, rand(2, 1), "LRP", {}),
}


def markdown_body(text: str) -> list[list[str]]:
    """The cells of the (first) Markdown table's body rows."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("| ").split(" | ")] for line in lines[1:]]


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_result_exports_the_same_rows(name, tmp_path):
    result = FACTORIES[name]()
    name = name.split(" ")[0]
    assert type(result).__name__ == name and name.endswith("Result") and isinstance(result, ResultExport)
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    document = json.loads(result.to_json())
    body = markdown_body(result.to_markdown())
    frame = result.to_pandas()
    assert rows, f"{name} exported no rows"
    assert document["result"] == name
    assert len(rows) == len(document["rows"]) == len(body) == len(frame)
    columns = list(rows[0])
    assert list(document["rows"][0]) == columns == list(frame.columns)
    assert all(len(cells) == len(columns) for cells in body)
    for row, data in zip(rows, document["rows"]):  # csv text and json values agree cell by cell
        for key in columns:
            value = data[key]
            if isinstance(value, float):
                assert float(row[key]) == pytest.approx(value)
            elif value is None:
                assert row[key] in ("", "nan")
            elif isinstance(value, (list, dict)):
                assert json.loads(row[key]) == value
            else:
                assert row[key] == str(value)
    first = columns[0]  # the identifying column reads the same in every export
    assert [r[first] for r in rows] == [str(d[first]) for d in document["rows"]]
    assert all(first_cell.strip("`*").startswith(r[first]) for first_cell, r in
               zip((cells[0] for cells in body), rows))
    # the files written are the texts returned
    assert result.to_csv(tmp_path / "r.csv").read_text(encoding="utf-8") == result.to_csv()
    assert result.to_json(tmp_path / "r.json").read_text(encoding="utf-8") == result.to_json()


def test_markdown_digits_limit_and_nan():
    table = benchmark()
    text = table.to_markdown(digits=2, limit=1)
    assert len(markdown_body(text)) == 1 and "3 more rows" in text
    assert json.loads(table.to_json())["cells"]["b"]["PixelFlipping"]["scores"][0] is None  # NaN: null in JSON
    table.scores[("b", "PixelFlipping")][:] = math.nan  # an undefined cell
    assert json.loads(table.to_json())["rows"][3]["mean"] is None and "| n/a |" in table.to_markdown()
    assert table.to_csv().splitlines()[4].split(",")[4] == "nan"
    with pytest.raises(ValueError, match="digits must be an int >= 1"):
        table.to_markdown(digits=0)
    with pytest.raises(ValueError, match="limit must be None"):
        table.to_markdown(limit=-1)


def test_to_pandas_names_the_extra_without_pandas(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas here")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"needs pandas.*xaikit\[run\]"):
        benchmark().to_pandas()
    assert benchmark().to_csv().startswith("method,metric,")  # the other exports need no pandas


OLD_NAMES = [
    ("xaikit.concepts", "ConceptHeatmaps", "ConditionalHeatmapsResult"),
    ("xaikit.concepts", "ConceptSplit", "HierarchyResult"),
    ("xaikit.concepts", "ChannelScores", "ChannelRelevanceResult"),
    ("xaikit.concepts", "AblationTable", "AblationResult"),
    ("xaikit.concepts", "References", "ReferenceSamplesResult"),
    ("xaikit.concepts", "Visualisation", "FeatureVisualisationResult"),
    ("xaikit.concepts.discovery", "AblationTable", "AblationResult"),
    ("xaikit.examples", "Neighbours", "NeighboursResult"),
    ("xaikit.examples", "SimilarityMaps", "SimilarityMapsResult"),
    ("xaikit.examples", "Influence", "TracInResult"),
    ("xaikit.examples", "PrototypeSet", "PrototypesResult"),
    ("xaikit.examples.index", "Neighbours", "NeighboursResult"),
    ("xaikit.metrics", "BenchmarkTable", "BenchmarkResult"),
    ("xaikit.metrics.benchmark", "BenchmarkTable", "BenchmarkResult"),
    ("xaikit.tune", "HoldoutTable", "HoldoutResult"),
    ("xaikit.tabular", "FeatureTable", "FeatureTableResult"),
    ("xaikit.generation", "GenerationExplanation", "GenerationResult"),
]


@pytest.mark.parametrize("module, old, new", OLD_NAMES)
def test_old_result_names_still_work_and_warn(module, old, new):
    import importlib

    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{old} is deprecated .* use {module}\.{new}"):
        cls = getattr(mod, old)
    assert cls is getattr(mod, new)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(mod, new)  # the new name does not warn
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchResult'"):
        getattr(mod, "NoSuchResult")


def test_feature_table_old_markdown_call_warns_and_gives_the_ranking():
    table = FACTORIES["FeatureTableResult"]()
    with pytest.warns(DeprecationWarning, match=r"use FeatureTableResult.ranking"):
        old = table.to_markdown(sample=1, top=1)
    assert old == table.ranking(1, top=1) and old.splitlines()[2] == "| age | 40 | +0.25 |"
    with pytest.raises(TypeError, match="unexpected keyword"):
        table.to_markdown(labels={})
