"""Real models of several input shapes: a mixed text/number DataFrame pipeline, an ONNX graph with
a 2-D and a 1-D input, an ONNX graph over strings, and a model that handles missing values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

COLORS = ("red", "green", "blue")
WORDS = ("cat", "dog", "fish")


def mixed_frame(rows: int = 150, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A table with a text column (color), a float column (size) and an integer one (count), and
    string labels that depend on all three."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "color": rng.choice(COLORS, rows),
            "size": rng.normal(size=rows).round(3),
            "count": rng.integers(0, 10, rows),
        }
    )
    score = (frame["color"] == "red") * 1.5 + frame["size"] - 0.2 * frame["count"] + rng.normal(0, 0.3, rows)
    return frame, np.where(score > -0.5, "keep", "drop")


def mixed_pipeline(frame: pd.DataFrame, labels: np.ndarray) -> Pipeline:
    """The common tabular pattern: one-hot the text column, scale the numbers, then classify."""
    columns = ColumnTransformer(
        [
            ("text", OneHotEncoder(handle_unknown="ignore"), ["color"]),
            ("numbers", StandardScaler(), ["size", "count"]),
        ]
    )
    return Pipeline([("columns", columns), ("classify", LogisticRegression())]).fit(frame, labels)


def nan_frame(rows: int = 200, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Four numeric features without missing values, and integer labels."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, 4)), columns=["f0", "f1", "f2", "f3"])
    labels = (frame["f0"] + 0.5 * frame["f1"] > 0).astype(np.int64).to_numpy()
    return frame, labels


def missing_value_classifier(frame: pd.DataFrame, labels: np.ndarray) -> HistGradientBoostingClassifier:
    """A model that handles missing values natively, fitted on data without any."""
    return HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(frame, labels)


def write_two_input_onnx(path: Path) -> Path:
    """An ONNX graph with a 2-D input ``x`` [N, 3] and a 1-D input ``weight`` [N]:
    ``score = sum(x, axis=1) * weight`` [N]."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "weight"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3]),
            helper.make_tensor_value_info("weight", TensorProto.FLOAT, [None]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_word_codes_onnx(path: Path) -> Path:
    """An ONNX graph over text: ``word`` [N] (BYTES) -> ``code`` [N] (INT64), -1 for unknown words."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(
        "CategoryMapper",
        ["word"],
        ["code"],
        domain="ai.onnx.ml",
        cats_strings=list(WORDS),
        cats_int64s=list(range(len(WORDS))),
        default_int64=-1,
    )
    graph = helper.make_graph(
        [node],
        "word_codes",
        [helper.make_tensor_value_info("word", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("code", TensorProto.INT64, [None])],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("ai.onnx.ml", 3)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
