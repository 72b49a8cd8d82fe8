"""PyTorch models end to end: registered from the module object (exported with torch.export, served by
ONNX Runtime when the ONNX export verifies, else by the torch runtime), from .pt2 and TorchScript files
through the CLI, and served over V2 and TF Serving REST; the trust rules for pickles and TorchScript;
the torch runtime's conformance, devices and bf16.

Tolerances: answers over HTTP equal the module's within atol 1e-4 / rtol 1e-3 (float32; what
registration checks the ONNX graph with); the torch runtime on the CPU in bf16 within atol 5e-2."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
import zipfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pandas as pd
import pytest
import torch
from httpx import AsyncClient
from torch import nn
from typer.testing import CliRunner

import modelport
from modelport.cli.main import app as cli
from modelport.errors import ConversionWarning, InvalidModel, InvalidSetting, UntrustedArtifact
from modelport.ingest.package import package
from modelport.registry.environment import compare
from modelport.runtimes import create
from modelport.runtimes import torch as torch_runtime
from modelport.runtimes.conformance import check_runtime
from modelport.server.app import build_app
from modelport.settings import Settings
from modelport.signature import validate_inputs
from modelport.types import Signature
from tests.support.serving import client_for

pytestmark = pytest.mark.slow  # real torch.export and ONNX conversions (tests/support/budget.py)

ATOL, RTOL = 1e-4, 1e-3
BF16_ATOL = 5e-2
Iris = tuple[pd.DataFrame, np.ndarray]
Case = tuple[str, Path, Signature, dict[str, np.ndarray]]
TOKENS, VOCAB = 12, 100


class Classifier(nn.Module):
    """An MLP over float rows: class probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.layers(x), dim=-1)


class TextClassifier(nn.Module):
    """Token ids (INT64, padded to TOKENS) -> embedding -> mean pooling -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16)
        self.head = nn.Linear(16, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.embedding(ids).mean(dim=1)))


class TwoInputs(nn.Module):
    """Token ids and float features, by name; returns a dict (logits and the argmax label)."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8 + 3, 4)

    def forward(self, ids: torch.Tensor, extra: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(torch.cat([self.embedding(ids).mean(dim=1), extra], dim=-1))
        return {"logits": logits, "label": logits.argmax(dim=-1)}


class ConvNet(nn.Module):
    """Images N x 3 x 8 x 8 (float32) -> conv -> pooled -> logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(torch.relu(self.conv(images)).mean(dim=(2, 3))))


def _seeded(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(7)
    return cls()


def _tokens(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, size=(rows, TOKENS), dtype=np.int64)


def _answers(module: nn.Module, *args: np.ndarray, **kwargs: np.ndarray) -> Any:
    module.eval()
    with torch.inference_mode():
        out = module(*map(torch.from_numpy, args), **{k: torch.from_numpy(v) for k, v in kwargs.items()})
    return {k: v.numpy() for k, v in out.items()} if isinstance(out, dict) else out.numpy()


def _torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        # torch.jit.trace / torch.jit.save are deprecated in favour of torch.export (PyTorch 2.10+);
        # users still bring TorchScript files, so the tests make one.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        torch.jit.save(torch.jit.trace(module.eval(), example), str(path))  # type: ignore[no-untyped-call]
    return path


# --- served from the module objects --------------------------------------------------------


@dataclass(frozen=True)
class Served:
    settings: Settings
    models: dict[str, nn.Module]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    settings = Settings(home=tmp_path_factory.mktemp("pytorch") / "home")
    rng = np.random.default_rng(0)
    models = {name: _seeded(cls) for name, cls in {"mlp": Classifier, "text": TextClassifier}.items()}
    models |= {name: _seeded(cls) for name, cls in {"pair": TwoInputs, "cnn": ConvNet}.items()}
    samples: dict[str, Any] = {
        "mlp": torch.from_numpy(rng.normal(size=(16, 4)).astype(np.float32)),
        "text": torch.from_numpy(_tokens(8, 1)),
        "pair": {"ids": _tokens(8, 2), "extra": rng.normal(size=(8, 3)).astype(np.float32)},
        "cnn": rng.normal(size=(4, 3, 8, 8)).astype(np.float32),
    }
    for name, module in models.items():
        version = modelport.register(module, name=name, sample_input=samples[name], settings=settings)
        assert version.runtime == "onnx", version.notes
        assert version.framework == "torch"
    native = modelport.register(
        models["mlp"], name="mlp", sample_input=samples["mlp"], runtime="torch", settings=settings
    )
    assert native.runtime == "torch"
    return Served(settings, models)


@pytest.fixture
async def client(served: Served) -> AsyncIterator[AsyncClient]:
    app = build_app(served.settings.with_(models=("mlp@1", "mlp@2", "text", "pair", "cnn")))
    async with client_for(app) as client:
        yield client


async def _v2(client: AsyncClient, path: str, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    response = await client.post(path, json={"inputs": inputs})
    assert response.status_code == 200, response.text
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}


async def _tf_rows(client: AsyncClient, path: str, instances: list[Any]) -> list[Any]:
    response = await client.post(path, json={"instances": instances})
    assert response.status_code == 200, response.text
    predictions: list[Any] = response.json()["predictions"]
    return predictions


@pytest.mark.parametrize("version", ["1", "2"])  # 1: ONNX Runtime, 2: the torch runtime
async def test_mlp_classifier_answers_as_the_module_over_v2_and_tf_serving(
    client: AsyncClient, served: Served, version: str
) -> None:
    rows = np.random.default_rng(5).normal(size=(6, 4)).astype(np.float32)
    want = _answers(served.models["mlp"], rows)
    meta = (await client.get(f"/v2/models/mlp/versions/{version}")).json()
    assert meta["platform"] == {"1": "onnxruntime_onnx", "2": "pytorch_libtorch"}[version]
    tensor = {"name": "input", "shape": [6, 4], "datatype": "FP32", "data": rows.ravel().tolist()}
    got = await _v2(client, f"/v2/models/mlp/versions/{version}/infer", [tensor])
    np.testing.assert_allclose(got["output"], want, atol=ATOL, rtol=RTOL)
    predictions = await _tf_rows(client, f"/v1/models/mlp/versions/{version}:predict", rows.tolist())
    np.testing.assert_allclose(np.asarray(predictions), want, atol=ATOL, rtol=RTOL)
    assert not served.models["mlp"].training  # registering put it back as it was: eval here, by _answers


async def test_text_classifier_takes_int64_token_ids(client: AsyncClient, served: Served) -> None:
    meta = (await client.get("/v2/models/text")).json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [("input", "INT64", [-1, TOKENS])]
    ids = _tokens(5, 9)
    want = _answers(served.models["text"], ids)
    tensor = {"name": "input", "shape": [5, TOKENS], "datatype": "INT64", "data": ids.ravel().tolist()}
    got = await _v2(client, "/v2/models/text/infer", [tensor])
    np.testing.assert_allclose(got["output"], want, atol=ATOL, rtol=RTOL)
    predictions = await _tf_rows(client, "/v1/models/text:predict", ids.tolist())
    np.testing.assert_allclose(np.asarray(predictions), want, atol=ATOL, rtol=RTOL)


async def test_two_input_module_takes_named_inputs_and_returns_its_dict(client: AsyncClient, served: Served) -> None:
    ids, extra = _tokens(4, 11), np.random.default_rng(12).normal(size=(4, 3)).astype(np.float32)
    want = _answers(served.models["pair"], ids=ids, extra=extra)
    inputs = [
        {"name": "ids", "shape": [4, TOKENS], "datatype": "INT64", "data": ids.ravel().tolist()},
        {"name": "extra", "shape": [4, 3], "datatype": "FP32", "data": extra.ravel().tolist()},
    ]
    got = await _v2(client, "/v2/models/pair/infer", inputs)
    np.testing.assert_allclose(got["logits"], want["logits"], atol=ATOL, rtol=RTOL)
    np.testing.assert_array_equal(got["label"], want["label"])
    rows = [{"ids": i.tolist(), "extra": e.tolist()} for i, e in zip(ids, extra, strict=True)]
    predictions = await _tf_rows(client, "/v1/models/pair:predict", rows)
    np.testing.assert_allclose([p["logits"] for p in predictions], want["logits"], atol=ATOL, rtol=RTOL)
    assert [p["label"] for p in predictions] == want["label"].tolist()


async def test_cnn_takes_images_as_nested_arrays(client: AsyncClient, served: Served) -> None:
    images = np.random.default_rng(13).normal(size=(3, 3, 8, 8)).astype(np.float32)
    want = _answers(served.models["cnn"], images)
    tensor = {"name": "input", "shape": [3, 3, 8, 8], "datatype": "FP32", "data": images.ravel().tolist()}
    got = await _v2(client, "/v2/models/cnn/infer", [tensor])
    np.testing.assert_allclose(got["output"], want, atol=ATOL, rtol=RTOL)
    predictions = await _tf_rows(client, "/v1/models/cnn:predict", images.tolist())  # N x C x H x W nested lists
    np.testing.assert_allclose(np.asarray(predictions), want, atol=ATOL, rtol=RTOL)


def test_show_says_how_the_module_was_stored_and_served(served: Served) -> None:
    with modelport.load("mlp@1", settings=served.settings) as model:
        notes = " | ".join(model.version.notes)
    assert "exported with torch.export (dynamic batch dimension) to model.pt2" in notes
    assert "converted to ONNX (opset" in notes
    assert "atol 0.0001, rtol 0.001" in notes
    assert "the module was in training mode: exported in eval mode" in notes
    with modelport.load("mlp@2", settings=served.settings) as model:
        assert "torch runtime requested; ONNX export skipped" in model.version.notes
        assert model.version.environment["torch"] == torch.__version__


# --- files from the CLI --------------------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., Any]:
    runner = CliRunner()
    env = {"MODELPORT_HOME": str(tmp_path / "home"), "COLUMNS": "200", "NO_COLOR": "1"}
    return lambda *args: runner.invoke(cli, list(args), env=env)


def _cli_predict(run: Callable[..., Any], ref: str, rows: np.ndarray, tmp_path: Path) -> np.ndarray:
    (tmp_path / "rows.json").write_bytes(orjson.dumps(rows.tolist()))
    result = run("predict", ref, "--input", str(tmp_path / "rows.json"), "--json")
    assert result.exit_code == 0, result.output
    return np.asarray(orjson.loads(result.output)["output"])


def test_pt2_file_registers_from_the_cli(run: Callable[..., Any], tmp_path: Path) -> None:
    module = _seeded(TextClassifier).eval()
    ids = torch.from_numpy(_tokens(3, 3))
    torch.export.save(torch.export.export(module, (ids,)), str(tmp_path / "fixed.pt2"))
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(module, (ids,), dynamic_shapes=batch), str(tmp_path / "text.pt2"))
    (tmp_path / "sample.json").write_bytes(orjson.dumps(_tokens(4, 4).tolist()))
    refused = run("register", str(tmp_path / "fixed.pt2"), "--name", "text", "--sample", str(tmp_path / "sample.json"))
    assert refused.exit_code == 1
    assert "fixed.pt2 was exported with a fixed batch size (ids: 3 rows)" in refused.output
    result = run("register", str(tmp_path / "text.pt2"), "--name", "text", "--sample", str(tmp_path / "sample.json"))
    assert result.exit_code == 0, result.output
    assert "served by the onnx runtime" in result.output
    rows = _tokens(5, 6)
    np.testing.assert_allclose(_cli_predict(run, "text", rows, tmp_path), _answers(module, rows), atol=ATOL, rtol=RTOL)
    shown = run("show", "text")
    assert "loaded from exported program text.pt2" in shown.output


def test_torchscript_file_needs_trust_and_is_served_by_the_torch_runtime(
    run: Callable[..., Any], tmp_path: Path
) -> None:
    module = _seeded(ConvNet)
    path = _torchscript(module, torch.zeros(2, 3, 8, 8), tmp_path / "cnn.pt")
    images = np.random.default_rng(3).normal(size=(4, 3, 8, 8)).astype(np.float32)
    (tmp_path / "sample.json").write_bytes(orjson.dumps(images.tolist()))
    args = ("register", str(path), "--name", "cnn", "--sample", str(tmp_path / "sample.json"))
    refused = run(*args)
    assert refused.exit_code == 1
    assert "cnn.pt is a TorchScript archive: a program" in refused.output
    assert "--trust-pickle" in refused.output
    result = run(*args, "--trust-pickle")
    assert result.exit_code == 0, result.output
    assert "served by the torch runtime" in result.output
    got = _cli_predict(run, "cnn", images[:3], tmp_path)
    np.testing.assert_allclose(got, _answers(module, images[:3]), atol=ATOL, rtol=RTOL)
    # the program's file decides at load, not the version's word: a forged "trusted_code: false" is refused
    from modelport.registry.registry import Registry
    from modelport.serving.loading import open_version

    with Registry.open(Settings(home=tmp_path / "home")) as registry:
        version = registry.get("cnn")
        artifact = registry.artifact_path(version)
    assert version.trusted_code
    with pytest.raises(UntrustedArtifact):
        open_version(replace(version, trusted_code=False), artifact)


def test_pickled_module_is_refused_without_trust_and_exported_with_it(settings: Settings, tmp_path: Path) -> None:
    module = _seeded(Classifier)
    torch.save(module, tmp_path / "whole.pt")
    sample = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    with pytest.raises(UntrustedArtifact, match=r"whole\.pt is a pickled PyTorch object .* runs arbitrary code"):
        modelport.register(tmp_path / "whole.pt", name="whole", sample_input=sample, settings=settings)
    version = modelport.register(
        tmp_path / "whole.pt", name="whole", sample_input=sample, trust_pickle=True, settings=settings
    )
    assert version.notes[0] == "loaded from trusted pickle whole.pt"
    assert not version.trusted_code  # what is stored is the exported program, no pickle
    torch.save(module.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(InvalidModel, match=r"weights\.pt is a state dict: weights without the module's code"):
        modelport.register(tmp_path / "weights.pt", name="weights", sample_input=sample, settings=settings)


def test_pt2_with_pickled_parts_is_refused_by_registration_and_by_the_runtime(tmp_path: Path) -> None:
    sample = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
    packaged = package(_seeded(Classifier), workdir=tmp_path, sample_input=sample, runtime="torch")
    stored = packaged.directory / torch_runtime.EXPORTED
    assert torch_runtime.scan(stored) == torch_runtime.Contents((), ())
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            target.writestr(item, source.read(item))
        root = source.namelist()[0].split("/")[0]
        target.writestr(f"{root}/data/constants/opaque_obj_0", b"\x80\x04N.")  # a pickle of None
    assert torch_runtime.scan(tampered).parts == ("data/constants/opaque_obj_0",)
    with pytest.raises(UntrustedArtifact, match=r"tampered\.pt2 holds parts that torch\.export\.load unpickles"):
        package(tampered, workdir=tmp_path, sample_input=sample, trust_pickle=False, runtime=None)
    tampered.replace(stored)
    with pytest.raises(UntrustedArtifact, match="modelport stores exported programs without them"):
        torch_runtime.TorchRuntime().load(packaged.directory, packaged.signature)


# A module that the crafted archives below name: importing it leaves a file behind, so a test can
# tell whether loading or serving an archive ran code the archive chose.
CANARY = "modelport_pt2_canary"
MLP_ROWS = np.random.default_rng(2).normal(size=(4, 4)).astype(np.float32)
CANARY_SOURCE = """
import pathlib
import torch
pathlib.Path(__file__).with_name("imported").write_text("the module an archive named was imported")
class Relu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.relu(x)
    @staticmethod
    def backward(ctx, grad):
        return grad
"""


@pytest.fixture
def canary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The file that importing CANARY writes (absent: it was never imported)."""
    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / f"{CANARY}.py").write_text(CANARY_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    yield folder / "imported"
    sys.modules.pop(CANARY, None)


@pytest.fixture(scope="module")
def stored_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model.pt2 that registration stores for the MLP: plain aten operators."""
    workdir = tmp_path_factory.mktemp("stored")
    packaged = package(_seeded(Classifier), workdir=workdir, sample_input=MLP_ROWS, runtime="torch")
    return packaged.directory / torch_runtime.EXPORTED


def _rewritten(source: Path, target: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the .pt2 ``source`` whose graph JSON (models/*.json) ``edit`` changed in place."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for item in archive.infolist():
            data = archive.read(item)
            if "/models/" in item.filename:
                program = orjson.loads(data)
                edit(program)
                data = orjson.dumps(program)
            out.writestr(item, data)
    return target


def _calls_the_canary(program: dict[str, Any]) -> None:
    """The relu node becomes torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch,
    which torch.export.load accepts and which imports the module named in its first argument."""
    for node in program["graph_module"]["graph"]["nodes"]:
        if node["target"] == "torch.ops.aten.relu.default":
            node["target"] = "torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch"
            node["inputs"].insert(0, {"name": "", "arg": {"as_string": f"{CANARY}.Relu"}, "kind": 1})


def _parses_the_canary(program: dict[str, Any]) -> None:
    """A shape expression (parsed with sympy.sympify, an eval, by torch.export.load) that imports it."""
    sizes = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]
    sizes["expr_str"] = f"(__import__({CANARY!r}), {sizes['expr_str']})[1]"


def _guards_with_the_canary(program: dict[str, Any]) -> None:
    """A guard (pasted into Python source that ExportedProgram.module() executes) that imports it."""
    program["guards_code"] = [f"__import__({CANARY!r}) is not None"]


GRAPH_CODE = {
    "call target": (_calls_the_canary, r"torch\.export\.custom_ops\._call_custom_autograd_function_in_pre_dispatch"),
    "shape expression": (_parses_the_canary, rf"the shape expression \(__import__\('{CANARY}'\)"),
    "guard": (_guards_with_the_canary, rf"the guard __import__\('{CANARY}'\) is not None"),
}


@pytest.mark.parametrize("case", GRAPH_CODE)
def test_pt2_whose_graph_runs_python_by_name_needs_trust(
    case: str, stored_mlp: Path, canary: Path, tmp_path: Path
) -> None:
    edit, named = GRAPH_CODE[case]
    crafted = _rewritten(stored_mlp, tmp_path / "crafted.pt2", edit)
    assert torch_runtime.scan(crafted).parts == ()  # every member is still plain data: only the graph changed
    with pytest.raises(UntrustedArtifact, match=rf"crafted\.pt2 has a graph that calls .*{named}") as refused:
        package(crafted, workdir=tmp_path, sample_input=MLP_ROWS, trust_pickle=False, runtime="torch")
    assert "--trust-pickle (CLI) or trust_pickle=True (Python)" in refused.value.message
    assert not canary.exists()  # refused before torch.export.load read the graph
    if case == "call target":  # with trust it loads (and runs the archive's module), and is stored as plain aten
        packaged = package(crafted, workdir=tmp_path, sample_input=MLP_ROWS, trust_pickle=True, runtime="torch")
        assert canary.exists()
        assert torch_runtime.scan(packaged.directory / torch_runtime.EXPORTED) == torch_runtime.Contents((), ())
        assert not packaged.trusted_code
        assert "trusted: it holds a graph that torch.export.load resolves and runs by name" in packaged.notes[0]


def test_module_whose_export_calls_a_higher_order_op_is_stored_only_as_trusted_code(tmp_path: Path) -> None:
    class Branches(nn.Module):
        sine: torch.Tensor  # a buffer

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("sine", torch.tensor(True))  # not the batch's values: rows stay independent

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return cast(torch.Tensor, torch.cond(self.sine, lambda t: t.sin(), lambda t: t.cos(), (x,)))

    with pytest.raises(UntrustedArtifact, match=r"calls .*torch\.ops\.higher_order\.cond.* --trust-pickle"):
        package(Branches(), workdir=tmp_path, sample_input=MLP_ROWS, runtime="torch")
    packaged = package(Branches(), workdir=tmp_path, sample_input=MLP_ROWS, trust_pickle=True, runtime="torch")
    assert packaged.trusted_code  # served only for a version registered as trusted, the file checked at each load
    assert "trusted: the exported program calls models/model.json: torch.ops.higher_order.cond" in packaged.notes


def test_stored_pt2_swapped_for_one_whose_graph_runs_python_is_refused_at_load(
    settings: Settings, canary: Path, tmp_path: Path
) -> None:
    from modelport.registry.registry import Registry
    from modelport.serving.loading import open_version

    version = modelport.register(
        _seeded(Classifier), name="mlp", sample_input=MLP_ROWS, runtime="torch", settings=settings
    )
    assert not version.trusted_code
    with Registry.open(settings) as registry:
        artifact = registry.artifact_path(version)
    stored = artifact / torch_runtime.EXPORTED
    _rewritten(stored, tmp_path / "crafted.pt2", _calls_the_canary).replace(stored)
    found = torch_runtime.inspect(artifact)  # the file decides: the manifest and the version are unchanged
    assert found.runs_code
    assert "_call_custom_autograd_function_in_pre_dispatch" in found.why
    with pytest.raises(UntrustedArtifact, match=r"runs code when loaded .* was not registered as trusted"):
        open_version(version, artifact)
    with pytest.raises(UntrustedArtifact):
        modelport.load("mlp", settings=settings)
    assert not canary.exists()


def test_module_that_fixes_the_batch_size_is_refused_saying_why(tmp_path: Path) -> None:
    class FixedBatch(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(4, -1).sum(dim=1, keepdim=True)

    with pytest.raises(InvalidModel, match=r"torch\.export cannot export the module with a dynamic batch dimension"):
        package(FixedBatch(), workdir=tmp_path, sample_input=np.ones((4, 2), np.float32))


# --- the torch runtime: conformance, devices, precision --------------------------------------


def _iris_rows(signature: Signature, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return validate_inputs(signature, {signature.inputs[0].name: frame.iloc[::15].to_numpy()})


def torch_exported(iris: Iris, tmp: Path) -> Case:
    frame, _ = iris
    packaged = package(Classifier(), workdir=tmp, sample_input=frame.to_numpy()[:20], runtime="torch")
    assert packaged.runtime == "torch"
    return "torch", packaged.directory, packaged.signature, _iris_rows(packaged.signature, frame)


def torch_torchscript(iris: Iris, tmp: Path) -> Case:
    frame, _ = iris
    path = _torchscript(Classifier(), torch.zeros(3, 4), tmp / "classifier.pt")
    packaged = package(path, workdir=tmp, sample_input=frame.to_numpy()[:20], trust_pickle=True)
    assert packaged.runtime == "torch"
    assert packaged.trusted_code
    return "torch", packaged.directory, packaged.signature, _iris_rows(packaged.signature, frame)


def onnx_from_torch(iris: Iris, tmp: Path) -> Case:
    frame, _ = iris
    packaged = package(Classifier(), workdir=tmp, sample_input=frame.to_numpy()[:20])
    assert packaged.runtime == "onnx"
    return "onnx", packaged.directory, packaged.signature, _iris_rows(packaged.signature, frame)


# Shaped like tests/runtimes/test_runtimes.py's CASES, for the shared list.
CONFORMANCE_CASES: dict[str, Callable[[Iris, Path], Case]] = {
    "torch-exported-program": torch_exported,
    "torch-torchscript-trusted": torch_torchscript,
    "onnx-exported-from-torch": onnx_from_torch,
}


@pytest.mark.parametrize("case", CONFORMANCE_CASES)
def test_runtime_passes_conformance(case: str, iris: Iris, tmp_path: Path) -> None:
    kind, artifact, signature, sample = CONFORMANCE_CASES[case](iris, tmp_path)
    check_runtime(create(kind), artifact, signature, sample)


def test_bf16_on_the_cpu_agrees_within_a_looser_tolerance(tmp_path: Path) -> None:
    module = _seeded(TwoInputs).eval()
    ids, extra = _tokens(6, 21), np.random.default_rng(22).normal(size=(6, 3)).astype(np.float32)
    packaged = package(module, workdir=tmp_path, sample_input={"ids": ids, "extra": extra}, runtime="torch")
    want = _answers(module, ids=ids, extra=extra)
    runtime = torch_runtime.TorchRuntime()
    runtime.load(packaged.directory, packaged.signature, device="cpu", precision="bf16")
    try:
        got = runtime.predict({"ids": ids, "extra": extra})
    finally:
        runtime.unload()
    assert got["logits"].dtype == np.float32  # computed in bf16, returned as the signature's FP32
    np.testing.assert_allclose(got["logits"], want["logits"], atol=BF16_ATOL)
    assert not np.array_equal(got["logits"], want["logits"])  # bf16 really ran: it rounds
    np.testing.assert_array_equal(got["label"], want["label"])


class Cancelling(nn.Module):
    """Two nearly equal branches subtracted: outputs small beside the values they come from, so bf16's
    rounding (about 3 significant digits) moves them by several percent of their size."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 32), nn.Linear(4, 32)
        with torch.no_grad():
            self.b.weight.copy_(self.a.weight * 1.05)
            self.b.bias.copy_(self.a.bias * 1.05)
        self.head = nn.Linear(32, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.head(self.b(x) - self.a(x)))


DEVIATION = re.compile(
    r"bf16 deviates from fp32 by at most (\S+) abs / (\S+) rel \(of the output's largest magnitude\) "
    r"on the 20 sample rows, on cpu; tolerance (\S+)"
)
PRECISION_ROWS = np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32)


def test_bf16_is_measured_against_fp32_at_registration_and_the_figure_is_shown_and_exported(
    settings: Settings, tmp_path: Path
) -> None:
    from modelport.registry.export import export_version, read_export
    from modelport.registry.registry import Registry

    module = _seeded(Classifier).eval()
    version = modelport.register(module, name="mlp", sample_input=PRECISION_ROWS, precision="bf16", settings=settings)
    assert (version.runtime, version.precision) == ("torch", "bf16")  # ONNX Runtime has no bf16
    (note,) = [note for note in version.notes if DEVIATION.fullmatch(note)]
    absolute, relative, tolerance = map(float, DEVIATION.fullmatch(note).groups())  # type: ignore[union-attr]
    with modelport.load("mlp@1", settings=settings) as served:  # in bf16, as registered
        got = served.predict(PRECISION_ROWS)["output"]
    want = _answers(module, PRECISION_ROWS)
    assert float(np.abs(got - want).max()) == pytest.approx(absolute, rel=0.05)
    assert relative == pytest.approx(absolute / float(np.abs(want).max()), rel=0.05)
    assert 0 < relative <= tolerance == 0.02
    env = {"MODELPORT_HOME": str(settings.home)}
    shown = orjson.loads(CliRunner().invoke(cli, ["show", "mlp@1", "--json"], env=env).stdout)
    assert (shown["precision"], note in shown["notes"]) == ("bf16", True)
    with Registry.open(settings) as registry:
        export_version(version, registry.artifact_path(version), tmp_path / "export")
    assert read_export(tmp_path / "export").precision == "bf16"


def test_bf16_past_the_tolerance_is_refused_with_the_figure_unless_the_tolerance_allows_it(
    run: Callable[..., Any], settings: Settings, tmp_path: Path
) -> None:
    refusal = (
        r"in bf16 the model deviates from fp32 by up to \S+ on the sample \(output 'output': (\S+) of its largest "
        r"magnitude\), past the precision tolerance 0.02; register it in fp32, or accept the deviation with "
        r"--precision-tolerance (\S+) \(precision_tolerance= in Python\)"
    )
    with pytest.raises(InvalidModel, match=refusal) as refused:
        modelport.register(
            _seeded(Cancelling), name="diff", sample_input=PRECISION_ROWS, precision="bf16", settings=settings
        )
    share, suggested = re.search(refusal, str(refused.value)).groups()  # type: ignore[union-attr]
    assert 0.02 < float(share) <= float(suggested) < 1
    version = modelport.register(
        _seeded(Cancelling),
        name="diff",
        sample_input=PRECISION_ROWS,
        precision="bf16",
        precision_tolerance=float(suggested),
        settings=settings,
    )
    assert any(DEVIATION.fullmatch(note) and note.endswith(f"tolerance {suggested}") for note in version.notes)
    with pytest.raises(InvalidModel, match="a precision tolerance applies to a reduced precision"):
        modelport.register(_seeded(Cancelling), name="diff", sample_input=PRECISION_ROWS, precision_tolerance=0.1)
    # the command line: one line and exit 1, then accepted with --precision-tolerance
    rows = torch.from_numpy(PRECISION_ROWS)
    batch = ({0: torch.export.Dim("batch")},)
    torch.export.save(
        torch.export.export(_seeded(Cancelling).eval(), (rows,), dynamic_shapes=batch), str(tmp_path / "d.pt2")
    )
    np.save(tmp_path / "rows.npy", PRECISION_ROWS)
    args = [
        "register",
        str(tmp_path / "d.pt2"),
        "--name",
        "diff",
        "--sample",
        str(tmp_path / "rows.npy"),
        "--precision",
        "bf16",
    ]
    result = run(*args)
    assert (result.exit_code, len(result.output.strip().splitlines())) == (1, 1), result.output
    assert re.search(refusal, " ".join(result.output.split()))
    result = run(*args, "--precision-tolerance", suggested)
    assert result.exit_code == 0, result.output
    assert "bf16 deviates from fp32 by at most" in result.output


def test_asking_for_a_gpu_without_cuda_names_the_device(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    packaged = package(_seeded(Classifier), workdir=tmp_path, sample_input=np.ones((2, 4), np.float32), runtime="torch")
    for device in ("cuda", "cuda:1"):
        with pytest.raises(InvalidSetting, match=rf"device '{device}' was asked for, but CUDA is not available here"):
            torch_runtime.TorchRuntime().load(packaged.directory, packaged.signature, device=device)
    with pytest.raises(InvalidSetting, match="device 'tpu' is not one the torch runtime knows"):
        torch_runtime.TorchRuntime().load(packaged.directory, packaged.signature, device="tpu")
    with pytest.raises(InvalidSetting, match="precision 'int8' is none of fp32, fp16, bf16"):
        torch_runtime.TorchRuntime().load(packaged.directory, packaged.signature, precision="int8")


def test_a_module_onnx_cannot_take_is_served_by_torch_and_register_warns_at_its_call(settings: Settings) -> None:
    class Bessel(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return cast(torch.Tensor, torch.special.bessel_j0(x))  # the ONNX exporter has no conversion for it

    with pytest.warns(ConversionWarning, match="^ONNX export failed: ") as caught:
        version = modelport.register(Bessel(), name="bessel", sample_input=MLP_ROWS, settings=settings)
    (warning,) = caught
    assert warning.filename == __file__  # it points at the register() call
    assert str(warning.message).endswith("; serving the exported program with the torch runtime")
    assert version.runtime == "torch"


def test_claims_imports_torch_only_for_torch_objects_and_files() -> None:
    code = (
        "import sys; from modelport.ingest import pytorch; "
        "assert not pytorch.claims(object()) and not pytorch.claims('model.onnx'); "
        "assert 'torch' not in sys.modules, 'claims imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert torch_runtime.TorchRuntime.capabilities.devices == ("cpu", "cuda")


def test_torch_minor_version_difference_refuses_a_natively_served_model() -> None:
    recorded = {"torch": "2.13.0", "onnx": "1.0.0"}
    by_library = {m.library: m.severity for m in compare(recorded, runtime="torch", running={"torch": "2.12.1"})}
    assert by_library == {"torch": "error"}  # the torch runtime does not use onnx: not mentioned
    patch = compare({"torch": "2.13.0"}, runtime="torch", running={"torch": "2.13.1"})
    assert [m.severity for m in patch] == ["warning"]
    assert compare({"torch": "2.13.0"}, runtime="onnx", running={"torch": "2.12.1"}) == []  # ONNX Runtime serves it
