"""Registering PyTorch models: ``torch.nn.Module`` objects, exported programs, ``.pt2`` archives,
TorchScript files, and (trusted) pickled modules. See :func:`claims` and :func:`package`.

A module is exported with ``torch.export`` with a dynamic batch dimension (dim 0 of every input)
and stored as ``model.pt2`` (``torch.export.save``: JSON and raw tensor bytes, never a pickle of
the module). The stored program is loaded back and checked against the module on the sample and
on each sample row alone (up to :data:`~modelport.ingest.verification.ROW_CHECKS` rows). It is then
exported to ONNX (the dynamo exporter, from the exported program, so the batch stays dynamic) and
that graph is checked the same way within :data:`ONNX_ATOL` / :data:`ONNX_RTOL`: when it agrees ONNX
Runtime serves it (``.pt2`` kept beside it), otherwise the ``torch`` runtime serves the exported
program, and the notes say which and why (with a :class:`~modelport.errors.ConversionWarning` when
ONNX was not asked to be skipped). A graph that calls
more than PyTorch's aten and prims operators (custom and higher-order operators, Python callables:
:func:`modelport.runtimes.torch.scan`) needs trust, in a ``.pt2`` file registered and in the
program stored.

Inputs: a tensor or array sample is one input named ``input``; a dict of tensors gives one input
per key, passed to ``forward`` by keyword; a tuple gives positional inputs named after ``forward``'s
parameters. Float inputs take the module's float dtype; integer inputs (token ids) keep theirs.
Every input's first dimension is the batch; the other dimensions are fixed to the sample's (pad
token ids to the registered length). Outputs: a tensor is ``output``; a dict of tensors gives one
output per key; a tuple or list gives ``output_0``, ``output_1``... (a named tuple: its fields).
"""

from __future__ import annotations

import inspect as pyinspect
import logging
import shutil
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConversionWarning, InvalidInput, InvalidModel, ModelportError, UntrustedArtifact
from modelport.ingest.packaged import TRUST_HINT, Packaged, new_directory, reason, whole_reason
from modelport.ingest.verification import check_row_outputs, checked_rows, disagreement, row_of, rows_alone
from modelport.registry import environment
from modelport.runtimes import onnx as onnx_runtime
from modelport.runtimes import torch as torch_runtime
from modelport.signature import DEFAULT_INPUT, example_of, input_specs, output_specs, sample_arrays
from modelport.types import Signature, datatype_of

log = logging.getLogger("modelport")

SUFFIXES = (".pt2", ".pt", ".pth")
# The stored exported program against the module: the same operators, but kernels may sum in
# another order for another batch size.
STORED_ATOL, STORED_RTOL = 1e-5, 1e-4
# The ONNX graph against the module (float32): ONNX Runtime fuses and reorders operations.
ONNX_ATOL, ONNX_RTOL = 1e-4, 1e-3
EXPORT_HINT = (
    "export it yourself and register the .pt2: torch.export.save(torch.export.export(module, args, "
    "dynamic_shapes=...), 'model.pt2')"
)


def claims(model: object) -> bool:
    """Whether ``model`` is one of this module's kinds: a ``torch.nn.Module`` (a user's subclass
    too), a ``torch.export.ExportedProgram``, or a ``.pt2`` / ``.pt`` / ``.pth`` file. torch is
    imported only when the object can be torch's (torch is already imported) or for such a file."""
    if isinstance(model, str | Path):
        path = Path(model)
        return path.suffix.lower() in SUFFIXES and path.is_file()
    if "torch" not in sys.modules:
        return False  # no object can be a torch module before torch is imported
    import torch

    return isinstance(model, torch.nn.Module | torch.export.ExportedProgram)


def package(
    model: object, *, workdir: Path, sample_input: object | None, trust_pickle: bool, runtime: str | None
) -> Packaged:
    """An artifact directory in ``workdir`` for a PyTorch model (see the module docstring).

    ``runtime``: None serves ONNX when the export verifies and the exported program otherwise;
    "onnx" makes a failed or disagreeing ONNX export an error; "torch" skips ONNX.
    """
    import torch

    if runtime not in (None, "onnx", "torch"):
        raise InvalidModel(
            f"runtime={runtime!r} does not apply to a PyTorch model; choose onnx or torch (or leave it out)"
        )
    if sample_input is None:
        raise InvalidModel(
            "a PyTorch model needs a sample input (a few rows: a tensor or array, a dict of named tensors, or a "
            "tuple of positional tensors) to export it and check the stored form; pass sample_input= (Python) "
            "or --sample (CLI)"
        )
    source = None
    if isinstance(model, str | Path):
        path = Path(model)
        kind = _file_kind(path)
        if kind == "torchscript":
            if not trust_pickle:
                raise UntrustedArtifact(
                    f"{path.name} is a TorchScript archive: a program (its code/ runs in the TorchScript interpreter, "
                    f"which can call any registered operator) that modelport cannot check. {TRUST_HINT}; better, "
                    f"{EXPORT_HINT}."
                )
            module = torch_runtime.load_module(path, "torchscript")
            return _package_torchscript(module, path, workdir, sample_input, runtime, f"TorchScript file {path.name}")
        if kind == "exported":
            contents = torch_runtime.scan(path)
            if contents.parts and not trust_pickle:
                raise UntrustedArtifact(
                    f"{path.name} holds parts that torch.export.load unpickles or runs as code "
                    f"({', '.join(contents.parts[:3])}); loading it runs code the file chooses. {TRUST_HINT}."
                )
            if contents.calls and not trust_pickle:
                raise UntrustedArtifact(
                    f"{path.name} has a graph that calls or evaluates more than PyTorch's aten and prims operators "
                    f"({_calls(contents.calls)}); torch.export.load resolves these by name and runs them, so loading "
                    f"it runs code the file chooses. {TRUST_HINT}."
                )
            try:
                program = torch.export.load(str(path))
            except Exception as exc:  # torch raises many types for a corrupt or foreign archive
                raise InvalidModel(f"cannot load {path.name} with torch.export.load: {reason(exc)}") from exc
            fixed = _fixed_batch(program)
            if fixed:
                raise InvalidModel(
                    f"{path.name} was exported with a fixed batch size ({', '.join(fixed)}), so it cannot answer "
                    "batches of other sizes; export it with a dynamic batch dimension: torch.export.export(module, "
                    "args, dynamic_shapes=({0: torch.export.Dim('batch')},)), or register the module itself"
                )
            model = program.module()
            source = f"loaded from exported program {path.name}" + (
                f" (trusted: it holds {contents.describe()})" if contents.runs_code else ""
            )
        else:
            model = _load_saved(path, trust=trust_pickle)
            source = f"loaded from trusted pickle {path.name}"
    elif isinstance(model, torch.export.ExportedProgram):
        model, source = model.module(), "from an ExportedProgram"
    if isinstance(model, torch.jit.ScriptModule):
        if not trust_pickle:
            raise UntrustedArtifact(
                f"a TorchScript module is stored as a TorchScript program, which runs its own code when loaded. "
                f"{TRUST_HINT}; better, register the Python module itself (it is exported with torch.export)."
            )
        return _package_torchscript(model, None, workdir, sample_input, runtime, "TorchScript module")
    if not isinstance(model, torch.nn.Module):
        raise InvalidModel(f"{type(model).__qualname__} is not a torch.nn.Module")
    return _package_module(model, workdir, sample_input, runtime, source, trust=trust_pickle)


def _calls(calls: Sequence[str]) -> str:
    """The first graph calls of a scan, for a message."""
    more = f" and {len(calls) - 3} more" if len(calls) > 3 else ""
    return ", ".join(calls[:3]) + more


def _fixed_batch(program: Any) -> list[str]:
    """The inputs of an exported program whose first dimension is a constant, as "name: N rows"."""
    import torch

    inputs = set(program.graph_signature.user_inputs)
    fixed = []
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" and node.name in inputs else None
        if isinstance(value, torch.Tensor) and value.dim() and not isinstance(value.shape[0], torch.SymInt):
            fixed.append(f"{node.name}: {int(value.shape[0])} rows")
    return fixed


# --- files --------------------------------------------------------------------------------


def _file_kind(path: Path) -> str:
    """ "exported" (a torch.export.save archive), "torchscript" (a torch.jit.save archive) or
    "saved" (anything else: torch.save's pickle, zipped or legacy), judged from the contents."""
    if not zipfile.is_zipfile(path):
        if path.suffix.lower() == ".pt2":
            raise InvalidModel(f"{path.name} is not a torch.export archive (a .pt2 is a zip file)")
        return "saved"
    with zipfile.ZipFile(path) as archive:
        members = {name.split("/", 1)[1] for name in archive.namelist() if "/" in name}
    if "archive_format" in members:
        return "exported"
    if "constants.pkl" in members and any(name.startswith("code/") for name in members):
        return "torchscript"
    if path.suffix.lower() == ".pt2":
        raise InvalidModel(f"{path.name} is not a torch.export archive (torch.export.save writes one)")
    return "saved"


def _load_saved(path: Path, *, trust: bool) -> Any:
    """The module a ``torch.save`` file holds: read with ``weights_only=True`` first (tensors and
    containers only); a file that needs more is a pickle of Python objects, loaded only when trusted."""
    import pickle

    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" not in str(exc).lower():
            raise InvalidModel(f"{path.name} is not a file torch.load reads: {reason(exc)}") from exc
        if not trust:
            raise UntrustedArtifact(
                f"{path.name} is a pickled PyTorch object (torch.save of a whole module): loading it runs "
                f"arbitrary code. {TRUST_HINT}; better, {EXPORT_HINT}."
            ) from None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)  # trusted by the owner
        except Exception as exc:  # unpickling raises whatever the pickled code raises
            raise InvalidModel(f"cannot load {path.name}: {reason(exc)}") from exc
    except Exception as exc:  # not a torch file at all
        raise InvalidModel(f"{path.name} is not a file torch.load reads: {reason(exc)}") from exc
    if isinstance(saved, torch.nn.Module):
        return saved
    if isinstance(saved, Mapping) and all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise InvalidModel(
            f"{path.name} is a state dict: weights without the module's code, so it cannot be registered on its own. "
            "Build the module from its class, load the weights (module.load_state_dict(torch.load(path, "
            "weights_only=True))) and register the module: modelport.register(module, name=..., sample_input=...)"
        )
    raise InvalidModel(f"{path.name} holds a {type(saved).__qualname__}, not a torch.nn.Module")


# --- the sample ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sample:
    arrays: dict[str, np.ndarray]  # by input name, in call order
    call: torch_runtime.Call
    feature_names: tuple[str, ...] | None

    @property
    def rows(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    def tensors(self, *, rows: slice | None = None, at_least: int = 1) -> list[Any]:
        """The sample as tensors (a slice of its rows; repeated up to ``at_least`` rows)."""
        import torch

        out = []
        for arr in self.arrays.values():
            part = arr[rows] if rows is not None else arr
            if len(part) < at_least:
                part = np.concatenate([part] * -(-at_least // len(part)))[:at_least]
            out.append(torch.from_numpy(np.ascontiguousarray(part).copy()))
        return out

    def arguments(self, tensors: Sequence[Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.call == "keyword":
            return (), dict(zip(self.arrays, tensors, strict=True))
        return tuple(tensors), {}


def _sample_of(sample: object, module: Any) -> _Sample:
    """The sample as named arrays in the form the module is called with (module docstring)."""
    float_dtype = _float_dtype(module)
    names: tuple[str, ...] | None = None
    if isinstance(sample, tuple):
        arrays = {f"input_{i}": _numpy(value, f"input_{i}") for i, value in enumerate(sample)}
        names = _parameter_names(module, len(arrays))
        if names is not None:
            arrays = dict(zip(names, arrays.values(), strict=True))
        call: torch_runtime.Call = "positional"
        feature_names = None
    else:
        if isinstance(sample, Mapping):
            sample = {str(k): _numpy(v, str(k)) for k, v in sample.items()}
        elif _is_tensor(sample):
            sample = _numpy(sample, DEFAULT_INPUT)
        try:
            arrays, feature_names = sample_arrays(sample)
        except InvalidInput as exc:
            raise InvalidModel(f"the sample input cannot be used: {exc}") from exc
        call = "keyword" if isinstance(sample, Mapping) else "positional"
    rows = set()
    for name, arr in list(arrays.items()):
        if arr.dtype.kind not in "biuf":
            raise InvalidModel(
                f"sample input {name!r} is {arr.dtype}: a PyTorch module takes tensors of numbers or booleans "
                "(text models: turn text into token ids first, or serve them through the python runtime)"
            )
        if arr.ndim == 0:
            raise InvalidModel(f"sample input {name!r} is a scalar; give at least one row (the batch is dimension 0)")
        if arr.dtype.kind == "f":
            arrays[name] = arr.astype(float_dtype, copy=False)
        rows.add(arr.shape[0])
    if len(rows) != 1 or 0 in rows:
        raise InvalidModel(f"every sample input needs the same number of rows, at least one (got {sorted(rows)})")
    return _Sample(arrays, call, feature_names)


def _is_tensor(value: object) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _numpy(value: object, name: str) -> Any:
    if not _is_tensor(value):
        return value
    import torch

    assert isinstance(value, torch.Tensor)
    tensor = value.detach().cpu()
    if tensor.dtype in (torch.bfloat16, torch.float16):
        raise InvalidModel(
            f"sample input {name!r} is {tensor.dtype}; give float32 samples (precision is a serving setting)"
        )
    return tensor.numpy()


def _float_dtype(module: Any) -> np.dtype[Any]:
    """The float dtype the module computes in: its first floating parameter's or buffer's, else
    PyTorch's default (float32)."""
    import torch

    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point() and tensor.dtype in (torch.float32, torch.float64):
            return np.dtype(np.float64 if tensor.dtype == torch.float64 else np.float32)
    return np.dtype(np.float64 if torch.get_default_dtype() == torch.float64 else np.float32)


def _parameter_names(module: Any, count: int) -> tuple[str, ...] | None:
    """The names of ``forward``'s first ``count`` positional parameters, or None when it has fewer
    or they cannot be read (the inputs are then ``input_0``, ``input_1``...)."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        names = [argument.name for argument in getattr(module.forward, "schema").arguments[1:]]  # noqa: B009
    else:
        try:
            parameters = pyinspect.signature(module.forward).parameters.values()
        except (TypeError, ValueError):
            return None
        positional = (pyinspect.Parameter.POSITIONAL_ONLY, pyinspect.Parameter.POSITIONAL_OR_KEYWORD)
        names = [p.name for p in parameters if p.kind in positional]
    return tuple(names[:count]) if len(names) >= count else None


# --- outputs ------------------------------------------------------------------------------


def _outputs_of(result: Any, rows: int) -> tuple[torch_runtime.Returns, dict[str, np.ndarray]]:
    """The module's result as named arrays, and its form (module docstring)."""
    import torch

    returns: torch_runtime.Returns
    if isinstance(result, torch.Tensor):
        returns, named = "tensor", {"output": result}
    elif isinstance(result, Mapping) and all(isinstance(k, str) for k in result):
        returns, named = "mapping", dict(result)
    elif isinstance(result, tuple | list):
        fields = getattr(result, "_fields", None)
        names = [str(f) for f in fields] if fields else [f"output_{i}" for i in range(len(result))]
        returns, named = "sequence", dict(zip(names, result, strict=True))
    else:
        raise InvalidModel(
            f"the module returned a {type(result).__qualname__}; "
            "return a tensor, a dict of tensors, or a tuple of tensors"
        )
    arrays = {}
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise InvalidModel(f"the module's output {name!r} is a {type(value).__qualname__}, not a tensor")
        arrays[name] = torch_runtime.to_numpy(value)
    check_row_outputs(arrays, rows, "the module's")
    return returns, arrays


# --- modules ------------------------------------------------------------------------------


def _package_module(
    module: Any, workdir: Path, sample_input: object, runtime: str | None, source: str | None, *, trust: bool
) -> Packaged:
    import torch

    notes = [source] if source else []
    was_training = _set_training(module, False)
    try:
        taken = _sample_of(sample_input, module)
        with torch.inference_mode():
            returns, reference = _outputs_of(_run(module, taken, taken.tensors()), taken.rows)
        program = _export(module, taken)
    finally:
        _set_training(module, was_training)
    if was_training:
        notes.append("the module was in training mode: exported in eval mode (dropout off, batch norm frozen)")
    signature = Signature(
        input_specs(taken.arrays, taken.feature_names), output_specs(reference), example_of(taken.arrays)
    )
    manifest = torch_runtime.Manifest("exported", tuple(taken.arrays), taken.call, tuple(reference), returns)
    directory = new_directory(workdir)
    torch.export.save(program, str(directory / torch_runtime.EXPORTED))
    calls = torch_runtime.scan(directory / torch_runtime.EXPORTED).calls  # what every load will check
    if calls and not trust:
        raise UntrustedArtifact(
            f"the module exports to a graph that calls or evaluates more than PyTorch's aten and prims operators "
            f"({_calls(calls)}); loading it would resolve these by name and run them, so it is stored and served "
            f"only as trusted code. {TRUST_HINT}."
        )
    if calls:
        notes.append(f"trusted: the exported program calls {_calls(calls)}")
    manifest.write(directory)
    stored = _check_stored(directory, signature, taken, reference)
    notes.append(
        f"exported with torch.export (dynamic batch dimension) to {torch_runtime.EXPORTED}, an exported program "
        f"(no pickle); loaded back and verified on {taken.rows} sample rows together and {checked_rows(taken.rows)}, "
        f"max |Δ| = {stored:.2g}"
    )
    if runtime == "torch":
        converted, note = None, "torch runtime requested; ONNX export skipped"
    else:
        converted, note = _to_onnx(program, taken, reference)
        if converted is None and runtime == "onnx":
            raise InvalidModel(f"the ONNX runtime was requested but {note.rpartition(';')[0]}")
        if converted is None:
            # register() -> ingest package() -> PyTorch.package() -> package() -> here: the warning names the caller
            warnings.warn(ConversionWarning(note), stacklevel=5)
    notes.append(note)
    if converted is not None:
        (directory / onnx_runtime.FILENAME).write_bytes(converted)
        notes.append(f"the exported program ({torch_runtime.EXPORTED}) is kept beside it as the native copy")
        served = "onnx"
    else:
        served = "torch"
    notes.append(_describe(taken, returns, reference))
    return Packaged(
        directory, served, "torch", signature, environment.capture("torch"), tuple(notes), bool(calls), taken.arrays
    )


def _set_training(module: Any, mode: bool) -> bool:
    """Put ``module`` in training mode or not; return the mode it had. The module of an exported
    program keeps the mode it was exported in (its ``train()`` and ``eval()`` raise)."""
    was = bool(module.training)
    try:
        module.train(mode)
    except NotImplementedError:
        return False
    return was


def _run(module: Any, taken: _Sample, tensors: Sequence[Any]) -> Any:
    args, kwargs = taken.arguments(tensors)
    try:
        return module(*args, **kwargs)
    except Exception as exc:  # the user's forward raises what it raises
        how = "by keyword (" + ", ".join(taken.arrays) + ")" if taken.call == "keyword" else "positionally"
        raise InvalidModel(f"the module raised on the sample input, given {how}: {reason(exc)}") from exc


def _export(module: Any, taken: _Sample) -> Any:
    """``torch.export`` with dim 0 of every input dynamic. The sample is repeated to two rows when
    it has one: torch.export specialises a dimension of size 1 to a constant."""
    import torch

    batch = torch.export.Dim("batch")
    args, kwargs = taken.arguments(taken.tensors(at_least=2))
    dynamic: Any = {name: {0: batch} for name in kwargs} if kwargs else tuple({0: batch} for _ in args)
    try:
        return torch.export.export(module, args, kwargs, dynamic_shapes=dynamic, strict=False)
    except Exception as exc:  # torch.export raises UserError, Unsupported, constraint violations...
        log.info("torch.export failed", exc_info=True)
        raise InvalidModel(
            f"torch.export cannot export the module with a dynamic batch dimension: {reason(exc)}. Make forward "
            "work for any number of rows (no Python branching on tensor values or on the batch size; see "
            "torch.export's documentation), or register a TorchScript file with trust"
        ) from exc


def _check_stored(directory: Path, signature: Signature, taken: _Sample, reference: Mapping[str, np.ndarray]) -> float:
    """Load the stored artifact as the torch runtime would and compare it with the module on the
    sample and on each sample row alone (a batch of 1: a batch size the stored form fixed shows up
    here, and so does an answer that depends on the other rows)."""
    import torch

    runtime = torch_runtime.TorchRuntime()
    try:
        # The thread count as it is: load sets it process-wide, and registering must not change the caller's.
        runtime.load(directory, signature, threads=torch.get_num_threads())
        whole = runtime.predict(taken.arrays)
        alone = [(i, runtime.predict(row)) for i, row in rows_alone(taken.arrays)]
    except ModelportError as exc:
        raise InvalidModel(f"the stored model cannot be served: {exc.message}") from exc
    except Exception as exc:  # a module that works on the sample may still fail on one row
        raise InvalidModel(f"the stored model fails when loaded back: {reason(exc)}") from exc
    finally:
        runtime.unload()
    problem, diff = disagreement(whole, reference, atol=STORED_ATOL, rtol=STORED_RTOL)
    for i, one in alone:
        if problem:
            break
        problem, diff_one = disagreement(one, row_of(reference, i), atol=STORED_ATOL, rtol=STORED_RTOL)
        problem = problem and f"{problem} on sample row {i} alone"
        diff = max(diff, diff_one)
    if problem:
        raise InvalidModel(
            f"the stored model answers differently from the module ({problem}); "
            "a module whose answer for a row depends on the other rows of the batch cannot be batched"
        )
    return diff


def _to_onnx(program: Any, taken: _Sample, reference: Mapping[str, np.ndarray]) -> tuple[bytes | None, str]:
    """ONNX bytes from the exported program (batch dimension dynamic), verified on the sample and on
    one row; or None and why."""
    import torch

    native = "serving the exported program with the torch runtime"
    args, kwargs = taken.arguments(taken.tensors())
    try:
        with _quiet_exporter():
            exported = torch.onnx.export(
                program,
                args,
                kwargs=kwargs or None,
                dynamo=True,
                verbose=False,
                input_names=list(taken.arrays) if taken.call == "positional" else None,
                output_names=list(reference),
            )
        assert exported is not None
        model = exported.model_proto
        data: bytes = model.SerializeToString()
        session = onnx_runtime.session(data)
        graph_inputs = sorted(i.name for i in session.get_inputs())
        if graph_inputs != sorted(taken.arrays):
            return None, f"the ONNX graph's inputs are {graph_inputs}, not {sorted(taken.arrays)}; {native}"
        outputs = list(reference)
        whole = dict(zip(outputs, session.run(outputs, taken.arrays), strict=True))
        alone = [(i, dict(zip(outputs, session.run(outputs, row), strict=True))) for i, row in rows_alone(taken.arrays)]
    except Exception as exc:  # the exporter and ONNX Runtime raise many types for unsupported operators
        log.info("ONNX export failed", exc_info=True)
        return None, f"ONNX export failed: {whole_reason(exc)}; {native}"
    problem, diff = disagreement(whole, reference, atol=ONNX_ATOL, rtol=ONNX_RTOL)
    for i, one in alone:
        if problem:
            break
        problem, diff_one = disagreement(one, row_of(reference, i), atol=ONNX_ATOL, rtol=ONNX_RTOL)
        problem = problem and f"{problem} on sample row {i} alone"
        diff = max(diff, diff_one)
    if problem:
        return None, f"ONNX output disagrees with PyTorch on the sample ({problem}); {native}"
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), "?")
    return data, (
        f"converted to ONNX (opset {opset}) with a dynamic batch dimension; verified on {taken.rows} sample rows "
        f"together and {checked_rows(taken.rows)}, max |Δ| = {diff:.2g} (tolerance: atol {ONNX_ATOL:g}, "
        f"rtol {ONNX_RTOL:g})"
    )


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    # The exporter logs one line per torchvision operator it skips when torchvision is not installed
    # (4 lines of noise on every registration); its own logger, put back as it was afterwards.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # torch 2.13's ONNX decomposition step trips PyTorch's own deprecation of LeafSpec (raised
            # from copyreg while it copies a tree spec): inside torch, harmless, not ours to fix.
            warnings.filterwarnings(
                "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
            )
            yield
    finally:
        registration.setLevel(level)


def _describe(taken: _Sample, returns: str, reference: Mapping[str, np.ndarray]) -> str:
    how = "by keyword" if taken.call == "keyword" else "positionally"
    inputs = ", ".join(f"{name} {datatype_of(arr.dtype)}" for name, arr in taken.arrays.items())
    form = {"tensor": "a tensor", "mapping": "a dict", "sequence": "a tuple"}[returns]
    return f"inputs (given {how}): {inputs}; outputs ({form}): {', '.join(reference)}"


# --- TorchScript --------------------------------------------------------------------------


def _package_torchscript(
    module: Any, path: Path | None, workdir: Path, sample_input: object, runtime: str | None, source: str
) -> Packaged:
    """A trusted TorchScript module, stored as is and served by the torch runtime."""
    import torch

    if runtime == "onnx":
        raise InvalidModel(
            "a TorchScript module is served by the torch runtime: the ONNX export modelport makes starts from "
            "torch.export, which does not take TorchScript; register the Python module for ONNX"
        )
    module.eval()
    taken = _sample_of(sample_input, module)
    with torch.inference_mode():
        returns, reference = _outputs_of(_run(module, taken, taken.tensors()), taken.rows)
    signature = Signature(
        input_specs(taken.arrays, taken.feature_names), output_specs(reference), example_of(taken.arrays)
    )
    directory = new_directory(workdir)
    target = directory / torch_runtime.TORCHSCRIPT
    if path is not None:
        shutil.copyfile(path, target)
    else:
        with warnings.catch_warnings():
            # torch.jit.save is deprecated in favour of torch.export (PyTorch 2.10+); it still writes
            # the TorchScript archive the user asked to keep.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.save` is deprecated", category=DeprecationWarning)
            torch.jit.save(module, str(target))
    torch_runtime.Manifest("torchscript", tuple(taken.arrays), taken.call, tuple(reference), returns).write(directory)
    stored = _check_stored(directory, signature, taken, reference)
    notes = (
        f"{source}: stored as is and served by the torch runtime (trusted: a TorchScript program runs its own code)",
        f"loaded back and verified on {taken.rows} sample rows together and {checked_rows(taken.rows)}, "
        f"max |Δ| = {stored:.2g}",
        "ONNX export not tried: it starts from torch.export, which does not take TorchScript",
        _describe(taken, returns, reference),
    )
    return Packaged(directory, "torch", "torch", signature, environment.capture("torch"), notes, True, taken.arrays)
