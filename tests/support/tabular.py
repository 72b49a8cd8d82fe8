"""Real models of several input shapes: a mixed text/number DataFrame pipeline, an ONNX graph with
a 2-D and a 1-D input, an ONNX graph over strings, a model that handles missing values, and ONNX
graphs over token ids (INT64, refused past the vocabulary at run time), BOOL and 3-D UINT8 tensors."""

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


def write_embedding_onnx(path: Path) -> Path:
    """Token ids [N, 3] (INT64) looked up in a table of 50 rows of 4: ONNX Gather, which
    refuses an id past the table's end at run time."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(50 * 4, dtype=np.float32).reshape(50, 4), "table")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
            helper.make_node("Flatten", ["rows"], ["vector"]),
        ],
        "embed",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [None, 3])],
        [helper.make_tensor_value_info("vector", TensorProto.FLOAT, [None, 12])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_flags_onnx(path: Path) -> Path:
    """BOOL in, BOOL and INT32 out: ``flags`` [N, 2] -> ``negated`` [N, 2] (BOOL), ``as_int`` [N, 2] (INT32)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Not", ["flags"], ["negated"]),
            helper.make_node("Cast", ["flags"], ["as_int"], to=TensorProto.INT32),
        ],
        "flags",
        [helper.make_tensor_value_info("flags", TensorProto.BOOL, [None, 2])],
        [
            helper.make_tensor_value_info("negated", TensorProto.BOOL, [None, 2]),
            helper.make_tensor_value_info("as_int", TensorProto.INT32, [None, 2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def write_pixels_onnx(path: Path) -> Path:
    """A 3-D UINT8 input and output of another type: ``pixels`` [N, 2, 2] -> ``scaled`` [N, 2, 2] (FP32)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["pixels"], ["scaled"], to=TensorProto.FLOAT)],
        "pixels",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [None, 2, 2])],
        [helper.make_tensor_value_info("scaled", TensorProto.FLOAT, [None, 2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path
