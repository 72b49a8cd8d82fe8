"""What the native XGBoost and LightGBM runtimes share: the artifact's manifest and the canonical outputs.

The artifact directory holds the library's own model file (XGBoost JSON or UBJ, LightGBM text;
never a pickle) and ``boosted.json``, written at registration: which file, whether the model
classifies (and its classes, in the order of the probability columns) or predicts values, and
the library's prediction settings that differ from its defaults. Outputs follow the scikit-learn
runtime's names: ``label`` and ``probabilities`` for classifiers, ``prediction`` for the rest.

"No code runs on load" is not "safe to serve": both libraries' compiled predict follows a tree's
child, leaf and feature indices without bounds checks (a child 10**6 away: SIGSEGV; a child
pointing back to its parent: a worker spinning for good), and parts of their loaders do too. So
every model file is checked before the library reads it, at registration and at every load
(:func:`modelport.runtimes.xgboost.check_model_file`, :func:`modelport.runtimes.lightgbm.check_model_file`,
sharing :func:`walk`); what does not pass is refused with :class:`UncheckedTrees`. Trust does not
change that: the libraries never write such a file, and the server's loader does not ask these
runtimes whether a version needs trust.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from modelport.errors import InvalidModel, ModelNotReady, UntrustedArtifact
from modelport.runtimes.base import Capabilities
from modelport.signature import count_rows
from modelport.types import Signature, dtype_of

MANIFEST = "boosted.json"
Task = Literal["classifier", "regressor"]
OUTPUTS: dict[Task, tuple[str, ...]] = {"classifier": ("label", "probabilities"), "regressor": ("prediction",)}


@dataclass(frozen=True)
class Manifest:
    library: str  # "xgboost" | "lightgbm"
    file: str  # the model file in the artifact directory
    task: Task
    classes: tuple[Any, ...] = ()  # a classifier's labels, one per probability column
    label_datatype: str = "INT64"  # INT64 or BYTES (the scikit-learn runtime's canonical labels)
    missing: float | None = None  # XGBoost: the value that means missing (None: NaN)

    def write(self, directory: Path) -> None:
        data = {
            "library": self.library,
            "file": self.file,
            "task": self.task,
            "classes": list(self.classes),
            "label_datatype": self.label_datatype,
            "missing": self.missing,
        }
        (directory / MANIFEST).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, artifact: Path, library: str) -> Manifest:
        path = Path(artifact) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["library"] != library:
                raise ValueError(f"it holds a {data['library']} model, not a {library} one")
            task = data["task"]
            if task not in OUTPUTS:
                raise ValueError(f"unknown task {task!r}")
            label_datatype = str(data.get("label_datatype", "INT64"))
            if label_datatype not in ("INT64", "BYTES"):
                raise ValueError(f"unknown label datatype {label_datatype!r}")
            file = str(data["file"])
            if "/" in file or "\\" in file or file.startswith("."):
                raise ValueError(f"model file {file!r} is not a plain file name")
            missing = data.get("missing")
            return cls(
                library,
                file,
                task,
                tuple(data.get("classes", ())),
                label_datatype,
                float(missing) if missing is not None else None,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidModel(f"cannot read {path}: {exc}") from exc


class UncheckedTrees(UntrustedArtifact):
    """A model file holding trees the library's compiled code would follow out of bounds or forever."""


def refusal(path: Path, library: str, problem: str) -> UncheckedTrees:
    return UncheckedTrees(
        f"{path.name} holds trees {library}'s compiled predict would follow unchecked ({problem}); serving it "
        f"could crash or hang the server. {library} never writes such a file, so modelport refuses it (trusted or not)"
    )


def walk(left: np.ndarray, right: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The nodes reached from node 0 of the tree whose internal nodes (``inner``) have children
    ``left``/``right``, once every child is a node of the tree and no node is reached twice (no
    cycle, one parent each); else ValueError saying what is wrong. Leaves' children are ignored."""
    count = len(inner)
    reached = np.zeros(count, dtype=bool)
    reached[0] = True
    level = np.zeros(1, dtype=np.int64)
    while level.size:
        level = level[inner[level]]
        children = np.concatenate([left[level], right[level]]).astype(np.int64)
        if ((children < 0) | (children >= count)).any():
            bad = int(children[(children < 0) | (children >= count)][0])
            raise ValueError(f"a node's child {bad} is outside its {count} nodes")
        if reached[children].any() or len(np.unique(children)) != len(children):
            raise ValueError("a node is reached twice (a cycle, or a node with two parents)")
        reached[children] = True
        level = children
    return reached


def label_datatype(classes: np.ndarray) -> str:
    """The canonical label datatype of a classifier's classes: INT64 (integers, bools) or BYTES (text)."""
    if classes.dtype.kind in "iub":
        return "INT64"
    if classes.dtype.kind in "OUS":
        return "BYTES"
    raise InvalidModel(f"class labels of dtype {classes.dtype} are not served; use integer or text labels")


def outputs(scores: np.ndarray, manifest: Manifest, classes: np.ndarray) -> dict[str, np.ndarray]:
    """The canonical outputs from the library's own predictions (probabilities or values).

    A binary classifier's single probability p becomes the columns [1 - p, p]; the label is the
    class of the most probable column, as the libraries' scikit-learn ``predict`` chooses it.
    """
    if manifest.task == "regressor":
        return {"prediction": np.asarray(scores, dtype=np.float32)}
    if scores.ndim == 1:
        scores = np.vstack((1 - scores, scores)).T
    if scores.ndim != 2 or scores.shape[1] != len(classes):
        raise InvalidModel(
            f"the model gives probabilities of shape {list(scores.shape)} for {len(classes)} classes; "
            "re-register it with the classes it was trained on"
        )
    return {"label": classes[np.argmax(scores, axis=1)], "probabilities": np.asarray(scores, dtype=np.float32)}


class BoostedRuntime:
    """Load a booster with the library, predict canonical outputs. A subclass opens and scores."""

    kind: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()
    library: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self._booster: Any = None
        self._manifest: Manifest | None = None
        self._classes = np.empty(0)
        self._outputs: tuple[str, ...] = ()
        self._empty: dict[str, np.ndarray] = {}
        self._threads = 1

    def _open(self, path: Path, manifest: Manifest, threads: int) -> Any:
        raise NotImplementedError

    def _scores(self, booster: Any, x: np.ndarray, manifest: Manifest) -> np.ndarray:
        raise NotImplementedError

    def load(self, artifact: Path, signature: Signature, *, threads: int = 1) -> None:
        manifest = Manifest.read(artifact, self.library)
        path = Path(artifact) / manifest.file
        if path.suffix.lower() not in self.suffixes or not path.is_file():
            raise InvalidModel(f"{self.library} artifact {artifact} has no model file {manifest.file!r}")
        outputs = tuple(spec.name for spec in signature.outputs)
        unknown = [name for name in outputs if name not in OUTPUTS[manifest.task]]
        if unknown:
            raise InvalidModel(f"the {self.library} {manifest.task} cannot produce output {unknown[0]!r}")
        if len(signature.inputs) != 1:
            raise InvalidModel(
                f"a {self.library} model takes one input table, the signature has {len(signature.inputs)}"
            )
        classes = np.asarray(manifest.classes, dtype=dtype_of(manifest.label_datatype))
        if manifest.task == "classifier" and len(classes) < 2:
            raise InvalidModel(f"{path} is a classifier without its classes in {MANIFEST}")
        try:
            booster = self._open(path, manifest, max(1, threads))
        except InvalidModel:
            raise
        except Exception as exc:  # the libraries raise their own errors for broken files
            raise InvalidModel(f"{self.library} cannot load {path}: {exc}") from exc
        self._empty = {
            spec.name: np.empty((0, *(max(d, 0) for d in spec.shape[1:])), dtype=dtype_of(spec.datatype))
            for spec in signature.outputs
        }
        self._classes, self._outputs, self._threads = classes, outputs, max(1, threads)
        self._manifest = manifest
        self._booster = booster

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        booster, manifest = self._booster, self._manifest
        if booster is None or manifest is None:
            raise ModelNotReady(f"the {self.library} model is not loaded; call load() first")
        if not count_rows(inputs):
            return {name: arr.copy() for name, arr in self._empty.items()}
        (x,) = inputs.values()
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        got = outputs(np.asarray(self._scores(booster, np.ascontiguousarray(x), manifest)), manifest, self._classes)
        return {name: got[name] for name in self._outputs}

    def unload(self) -> None:
        self._booster = None
