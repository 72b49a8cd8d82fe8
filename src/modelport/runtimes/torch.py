"""The PyTorch runtime: an exported program (``model.pt2``, ``torch.export``) or a trusted TorchScript file.

The artifact directory holds ``torch.json`` (the format, how the module is called and what its
outputs are named) and the model file. ``predict`` turns the named NumPy inputs into tensors on the
version's device, calls the module under ``torch.inference_mode()`` (and ``torch.autocast`` for
fp16/bf16), and returns every output as NumPy on the CPU in the signature's datatype: float
outputs of a reduced precision come back as float32, since NumPy has no bfloat16.

What loads without trust: a ``.pt2`` archive whose every member is plain data (JSON, raw tensor
bytes, sample inputs that ``torch.load(weights_only=True)`` reads) and whose graphs call only
PyTorch's aten and prims operators and shape arithmetic, checked by :func:`scan` on the file itself
at registration and at every load. ``torch.export.load`` unpickles some payloads with
``weights_only=False`` (pickled weights and constants, custom and opaque objects) and AOTInductor
archives hold compiled code: an archive with any of them is refused. The graph JSON is code too:
every node's target is resolved by name and called at predict (a custom, higher-order or Python
target can import a module the archive names), its shape expressions are parsed with ``sympy.sympify``
(``eval``) and its guards pasted into Python source that is executed; such an archive needs trust.
A TorchScript file is a program (its ``code/`` runs in the TorchScript interpreter, which calls any
registered operator), so :func:`inspect` reports it as running code and it is served only for
versions registered as trusted.

Threads: PyTorch's intra-op thread count is process-wide (``torch.set_num_threads``). ``load`` sets
it to ``threads`` (the server sizes that so workers x threads never exceeds the cores, as for the
ONNX runtime's sessions); every PyTorch model in one worker process shares the setting, and the last
load decides it. Predictions from several threads at once are safe: the module is in eval mode and
only read (no buffers are updated under ``inference_mode``).
"""

from __future__ import annotations

import ast
import io
import json
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from modelport.errors import InvalidModel, InvalidSetting, ModelNotReady, UntrustedArtifact
from modelport.runtimes.base import Capabilities
from modelport.types import Signature, dtype_of

MANIFEST = "torch.json"
EXPORTED = "model.pt2"
TORCHSCRIPT = "model.torchscript.pt"
PRECISIONS = ("fp32", "fp16", "bf16")
Format = Literal["exported", "torchscript"]
Call = Literal["positional", "keyword"]
Returns = Literal["tensor", "mapping", "sequence"]

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
# Members of a .pt2 archive that hold only data (relative to its root folder); see scan. The graphs
# (models/*.json) are read by _graph_findings.
_PLAIN = re.compile(
    r"archive_format|archive_version|version|byteorder|\.data/[\w.-]+|extra/[\w./-]+"
    r"|data/weights/weight_\d+|data/constants/tensor_\d+"
)
_WEIGHTS_CONFIG = re.compile(r"data/weights/[\w.-]+_weights_config\.json")
_CONSTANTS_CONFIG = re.compile(r"data/constants/[\w.-]+_constants_config\.json")
_SAMPLE_INPUTS = re.compile(r"data/sample_inputs/[\w.-]+\.pt")
_MODEL = re.compile(r"models/[\w.-]+\.json")

# What the graphs of a .pt2 may call and evaluate without trust; see _graph_findings. A node's target
# is resolved by name (getattr on torch, _operator or math) and called when the module runs: aten and
# prims operators registered in this PyTorch are kernels; anything else may be Python that the
# name reaches (torch.export.custom_ops._call_custom_autograd_function_in_pre_dispatch imports a
# module the archive names; higher-order ops, custom torch.ops namespaces, "#" extension ops and
# other torch./_operator./math. attributes call code). Allowed besides: the shape arithmetic on
# SymInts that torch.export writes for a dynamic batch (a reshape to `n * 2` rows is
# `_operator.mul`; `aten.sym_size.int` is an aten op): the serializer's own symbolic-operator set
# (_SYM_OPS in torch/_export/serde/serialize.py), deserialized as plain Python arithmetic.
# `_operator.getitem` is not in it: the serializer folds getitem into its producer and never writes it.
# The repo's MLP, CNN, token-id and two-input modules export to aten operators only.
_OPERATOR = re.compile(r"torch\.ops\.(aten|prims)\.(\w+)\.(\w+)")
_SHAPE_ARITHMETIC = frozenset(
    [f"_operator.{name}" for name in ("add", "sub", "mul", "floordiv", "truediv", "mod", "pow", "neg", "pos")]
    + [f"_operator.{name}" for name in ("and_", "or_", "lshift", "rshift", "eq", "ne", "lt", "le", "gt", "ge")]
    + [f"torch.sym_{name}" for name in ("not", "int", "float", "ite", "max", "min", "sqrt")]
    + ["math.trunc"]
)
# Shape expressions (``expr_str``) as torch.export writes them, sympy's srepr:
# "Mul(Integer(2), Symbol('s77', positive=True, integer=True))". torch.export.load parses each with
# sympy.sympify, an eval with sympy's and Python's builtins in scope, so only these calls, numbers,
# and shape symbols (s77, u0) pass; strings only as a Symbol's name or a Float's digits.
_SYMPY_CALLS = frozenset(
    {
        *("Integer", "Rational", "Add", "Mul", "Pow", "Max", "Min", "Abs", "Mod", "floor", "ceiling", "Not", "And"),
        *("Or", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality", "StrictLessThan", "StrictGreaterThan"),
        *("LessThan", "GreaterThan", "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt"),
        *("FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv"),
        *("IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal"),
        *("ToFloat", "Identity"),
    }
)
_SYMPY_CONSTANTS = frozenset({"oo", "zoo", "nan", "true", "false"})
_SYMBOL = re.compile(r"[a-z]+\d+")
_FLOAT_DIGITS = re.compile(r"[-+]?(\d[\d.]*|\.\d+)([eE][-+]?\d+)?|[-+]?inf|nan")
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


@dataclass(frozen=True)
class Manifest:
    """How the stored module is called: its inputs in call order, positionally or by keyword, and
    what it returns (one tensor, a mapping of named tensors, or a sequence) under which names."""

    format: Format
    inputs: tuple[str, ...]
    call: Call
    outputs: tuple[str, ...]
    returns: Returns

    @property
    def file(self) -> str:
        return EXPORTED if self.format == "exported" else TORCHSCRIPT

    def write(self, directory: Path) -> None:
        data = {
            "format": self.format,
            "file": self.file,
            "inputs": list(self.inputs),
            "call": self.call,
            "outputs": list(self.outputs),
            "returns": self.returns,
        }
        (Path(directory) / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def read(cls, artifact: Path) -> Manifest:
        path = Path(artifact) / MANIFEST
        try:
            data = json.loads(path.read_text())
            manifest = cls(
                format=data["format"],
                inputs=tuple(str(name) for name in data["inputs"]),
                call=data["call"],
                outputs=tuple(str(name) for name in data["outputs"]),
                returns=data["returns"],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidModel(f"PyTorch artifact {artifact} has no readable {MANIFEST}: {exc}") from exc
        checks = (
            (manifest.format, ("exported", "torchscript")),
            (manifest.call, ("positional", "keyword")),
            (manifest.returns, ("tensor", "mapping", "sequence")),
        )
        for value, allowed in checks:
            if value not in allowed:
                raise InvalidModel(f"{path}: {value!r} is none of {', '.join(allowed)}")
        return manifest


@dataclass(frozen=True)
class Contents:
    """What loading a ``.pt2`` archive would run besides reading data (:func:`scan`; both empty: nothing)."""

    parts: tuple[str, ...]  # members torch.export.load unpickles or loads as compiled code, or not known data
    calls: tuple[str, ...]  # what its graphs call or evaluate by name beyond aten/prims operators (see _OPERATOR)

    @property
    def runs_code(self) -> bool:
        return bool(self.parts or self.calls)

    def describe(self) -> str:
        """What runs, for messages ("" when nothing does)."""
        said = [f"pickled or compiled parts ({', '.join(self.parts)})"] if self.parts else []
        if self.calls:
            said.append(f"a graph that torch.export.load resolves and runs by name ({', '.join(self.calls[:3])})")
        return " and ".join(said)


@dataclass(frozen=True)
class Inspection:
    manifest: Manifest
    runs_code: bool  # loading runs code from the artifact: TorchScript, or a .pt2 with pickled parts or graph calls
    why: str  # what runs code, for messages ("" when nothing does)
    contents: Contents | None = None  # a .pt2's (None for TorchScript)


def inspect(artifact: Path) -> Inspection:
    """What loading ``artifact`` would run, judged from the model file itself (not the manifest's word)."""
    manifest = Manifest.read(artifact)
    path = Path(artifact) / manifest.file
    if not path.is_file():
        raise InvalidModel(f"PyTorch artifact {artifact} has no {manifest.file}")
    if manifest.format == "torchscript":
        return Inspection(manifest, True, "a TorchScript program (its code runs in the TorchScript interpreter)")
    contents = scan(path)
    return Inspection(manifest, contents.runs_code, contents.describe(), contents)


def scan(path: Path) -> Contents:
    """What a ``.pt2`` archive holds that ``torch.export.load`` would unpickle, load as compiled code,
    or resolve and run by name; the one check for registering a file and for every load."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename for info in archive.infolist() if not info.is_dir()]
            roots = {name.split("/", 1)[0] for name in names}
            if len(roots) != 1 or any("/" not in name for name in names):
                return Contents(("(not one root folder: not a torch.export.save archive)",), ())
            parts: list[str] = []
            calls: list[str] = []
            for name in names:
                member = name.split("/", 1)[1]
                if _MODEL.fullmatch(member):
                    calls.extend(f"{member}: {found}" for found in _graph_findings(archive.read(name)))
                elif _PLAIN.fullmatch(member):
                    continue
                elif _WEIGHTS_CONFIG.fullmatch(member) or _CONSTANTS_CONFIG.fullmatch(member):
                    parts.extend(f"{member}: {entry}" for entry in _pickled_entries(archive.read(name)))
                elif not (_SAMPLE_INPUTS.fullmatch(member) and _weights_only(archive.read(name))):
                    parts.append(member)
            if f"{roots.pop()}/archive_format" not in names:
                parts.append("(no archive_format: an older export format loaded with pickle)")
            return Contents(tuple(parts), tuple(calls))
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        return Contents((f"(unreadable: {exc})",), ())


def _graph_findings(data: bytes) -> list[str]:
    """What one serialized ExportedProgram (a ``models/*.json``) calls or evaluates by name beyond
    plain operators: node targets and operator arguments in every graph, nested ones (submodules,
    cond/map/while_loop branches) included; shape expressions; guards. A member that does not
    parse as one is a finding itself."""
    try:
        program = json.loads(data.decode("utf-8"))
        nodes, guards = program["graph_module"]["graph"]["nodes"], program.get("guards_code", [])
        if not isinstance(nodes, list) or not isinstance(guards, list):
            raise TypeError("nodes or guards_code is not a list")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        return [f"(unreadable graph: {type(exc).__name__})"]
    import torch

    registered = frozenset(torch._C._dispatch_get_all_op_names())
    found: dict[str, None] = {}  # in order, once each
    for key, value in _named(program):
        if key == "expr_str":
            if not (isinstance(value, str) and _plain_expression(value)):
                found[f"the shape expression {_short(value)}"] = None
        elif not (isinstance(value, str) and _plain_target(value, registered)):
            found[_short(value)] = None
    for guard in guards:
        if not (isinstance(guard, str) and _plain_guard(guard)):
            found[f"the guard {_short(guard)}"] = None
    return list(found)


def _named(program: object) -> Iterator[tuple[str, object]]:
    """Every node target ("target"), operator argument ("as_operator") and shape expression
    ("expr_str") anywhere in a serialized program: a walk of the whole JSON, so graphs nested in
    arguments are covered whatever holds them."""
    stack = [program]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if key == "nodes" and isinstance(value, list):
                    yield from (("target", node.get("target") if isinstance(node, dict) else node) for node in value)
                elif key in ("as_operator", "expr_str"):
                    yield key, value
                stack.append(value)


def _plain_target(target: str, registered: frozenset[str]) -> bool:
    """An aten or prims operator that this PyTorch registers (see _OPERATOR), or shape arithmetic."""
    if target in _SHAPE_ARITHMETIC:
        return True
    match = _OPERATOR.fullmatch(target)
    if match is None:
        return False
    namespace, name, overload = match.groups()
    return f"{namespace}::{name}" + ("" if overload == "default" else f".{overload}") in registered


def _plain_expression(text: str) -> bool:
    """A shape expression of sympy numbers, shape symbols and the calls in _SYMPY_CALLS."""
    try:
        return _sympy_node(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return False


def _sympy_node(node: ast.expr) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name, args = node.func.id, node.args
        if name in ("Symbol", "Float"):  # Symbol('s77', positive=True, integer=True), Float('2.5', precision=53)
            text = _SYMBOL if name == "Symbol" else _FLOAT_DIGITS
            flags = all(
                kw.arg and isinstance(kw.value, ast.Constant) and type(kw.value.value) in (bool, int)
                for kw in node.keywords
            )
            return len(args) == 1 and _constant(args[0], text.pattern) and flags
        return name in _SYMPY_CALLS and not node.keywords and all(_sympy_node(arg) for arg in args)
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool)
    if isinstance(node, ast.Name):
        return node.id in _SYMPY_CONSTANTS or _SYMBOL.fullmatch(node.id) is not None
    if isinstance(node, ast.UnaryOp):
        return _sympy_node(node.operand)
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, _ARITHMETIC) and _sympy_node(node.left) and _sympy_node(node.right)
    if isinstance(node, ast.Compare):
        return all(_sympy_node(side) for side in (node.left, *node.comparators))
    if isinstance(node, ast.BoolOp):
        return all(_sympy_node(value) for value in node.values)
    return False


def _plain_guard(code: str) -> bool:
    """A guard that compares input sizes, as torch.export writes for the two-input module:
    "L['extra'].size()[0] == L['ids'].size()[0]" (numbers and arithmetic too). ``module()`` pastes
    each guard into Python source that it executes, so nothing else passes, nor a character that
    could end the pasted expression early (a quote, a comment, a backslash, a line break)."""
    if any(char in code for char in '"#\\\n\r'):
        return False
    try:
        return _guard_node(ast.parse(code, mode="eval").body)
    except (SyntaxError, ValueError, RecursionError):
        return False


def _guard_node(node: ast.expr) -> bool:
    if isinstance(node, ast.Compare):
        return all(_guard_node(side) for side in (node.left, *node.comparators))
    if isinstance(node, ast.BoolOp):
        return all(_guard_node(value) for value in node.values)
    if isinstance(node, ast.UnaryOp):
        return _guard_node(node.operand)
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, _ARITHMETIC) and _guard_node(node.left) and _guard_node(node.right)
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float, bool)
    # L['name'].size()[0]: a dimension of an input
    return (
        isinstance(node, ast.Subscript)
        and _constant(node.slice, r"\d+")
        and isinstance(call := node.value, ast.Call)
        and not call.args
        and not call.keywords
        and isinstance(call.func, ast.Attribute)
        and call.func.attr in ("size", "stride")
        and _guard_input(call.func.value)
    )


def _guard_input(node: ast.expr) -> bool:
    """L['name'], L['name'][0], L['name']['key']: an input or a part of one."""
    if isinstance(node, ast.Name):
        return node.id == "L"
    return isinstance(node, ast.Subscript) and _constant(node.slice, r"\w+") and _guard_input(node.value)


def _constant(node: ast.expr, pattern: str) -> bool:
    """A str or int literal (not bool) whose text matches ``pattern``."""
    return (
        isinstance(node, ast.Constant)
        and type(node.value) in (str, int)
        and re.fullmatch(pattern, str(node.value)) is not None
    )


def _short(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _pickled_entries(config: bytes) -> list[str]:
    """Entries of a weights or constants config that are pickled, or not plain tensors."""
    try:
        entries = json.loads(config)["config"]
    except (ValueError, KeyError, TypeError):
        return ["(unreadable config)"]
    if not isinstance(entries, Mapping):
        return ["(unreadable config)"]
    bad = []
    for fqn, meta in entries.items():
        path = str(meta.get("path_name", "")) if isinstance(meta, Mapping) else ""
        plain = path.startswith(("weight_", "tensor_")) and meta.get("use_pickle") is False
        if not plain:
            bad.append(f"{fqn} ({path or 'no file'})")
    return bad


def _weights_only(data: bytes) -> bool:
    """Whether ``torch.load(weights_only=True)`` reads ``data`` (torch.export.load falls back to
    a full unpickling when it does not)."""
    import torch

    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # the restricted unpickler raises UnpicklingError, RuntimeError and others
        return False
    return True


def check_device(device: str) -> str:
    """``device`` as PyTorch names it, after checking this machine has it (InvalidSetting if not)."""
    if not _DEVICE.fullmatch(device):
        raise InvalidSetting(f"device {device!r} is not one the torch runtime knows; use cpu, cuda or cuda:N")
    if device == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        build = (
            "a CPU-only build of PyTorch" if torch.version.cuda is None else f"PyTorch for CUDA {torch.version.cuda}"
        )
        raise InvalidSetting(
            f"device {device!r} was asked for, but CUDA is not available here ({build} {torch.__version__}, "
            "no usable GPU); serve with --device cpu, or on a machine with a GPU and a CUDA build of PyTorch"
        )
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InvalidSetting(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def autocast(device: str, precision: str) -> Any:
    """The ``torch.autocast`` context for ``precision`` on ``device`` (None for fp32).

    Autocast runs matrix products and convolutions in the lower precision and keeps reductions,
    softmax and normalisation in float32, so it is safer than casting the whole module. On the CPU,
    bf16 is the precision to use (fast on CPUs with AVX-512 BF16/AMX, supported everywhere); fp16
    autocast also runs there but has few fast kernels, so it is slower than fp32 on most CPUs.
    """
    if precision not in PRECISIONS:
        raise InvalidSetting(f"precision {precision!r} is none of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.split(":")[0], dtype=dtype)


def load_module(path: Path, format: Format, *, device: str = "cpu") -> Any:
    """The callable module in ``path``: the exported program's module, or the TorchScript module.
    Callers check trust first (:func:`inspect`)."""
    import torch

    if format == "exported":
        module = torch.export.load(str(path)).module()
        return module.to(device)
    with warnings.catch_warnings():
        # torch.jit.load is deprecated in favour of torch.export (PyTorch 2.10+); TorchScript files
        # still load, and users still bring them.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning)
        module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    return module.eval()


def call(module: Any, manifest: Manifest, tensors: Sequence[Any]) -> Any:
    """Call ``module`` on ``tensors`` (in the manifest's input order) as it was registered."""
    if manifest.call == "keyword":
        return module(**dict(zip(manifest.inputs, tensors, strict=True)))
    return module(*tensors)


def named_outputs(result: Any, manifest: Manifest) -> dict[str, Any]:
    """The module's result as tensors by output name (the form registration recorded)."""
    if manifest.returns == "tensor":
        return {manifest.outputs[0]: result}
    if manifest.returns == "mapping":
        return {name: result[name] for name in manifest.outputs}
    return dict(zip(manifest.outputs, result, strict=True))


def to_numpy(tensor: Any, dtype: np.dtype[Any] | None = None) -> np.ndarray:
    """A tensor as a NumPy array on the CPU; reduced-precision floats become ``dtype`` (float32 by default)."""
    import torch

    tensor = tensor.detach()
    if tensor.dtype in (torch.bfloat16, torch.float16) or (dtype is not None and tensor.is_floating_point()):
        tensor = tensor.to(dtype=_torch_dtype(dtype or np.dtype(np.float32)))
    array: np.ndarray = tensor.cpu().numpy()
    return array


def _torch_dtype(dtype: np.dtype[Any]) -> Any:
    import torch

    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _tensors(inputs: Mapping[str, np.ndarray], names: Sequence[str], device: str) -> Iterator[Any]:
    import torch

    for name in names:
        arr = inputs[name]
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.ascontiguousarray(arr).copy()  # torch.from_numpy warns on read-only arrays
        tensor = torch.from_numpy(arr)
        yield tensor if device == "cpu" else tensor.to(device, non_blocking=True)


class TorchRuntime:
    kind: ClassVar[str] = "torch"
    # bounded_cost=False: a TorchScript program may loop on its input values, and a torch call
    # releases the GIL, so running it on a thread keeps the event loop serving meanwhile.
    capabilities: ClassVar[Capabilities] = Capabilities(
        batch_rows=True, thread_safe=True, runs_code=False, bounded_cost=False, devices=("cpu", "cuda")
    )

    def __init__(self) -> None:
        self._module: Any = None
        self._manifest: Manifest | None = None
        self._device = "cpu"
        self._precision = "fp32"
        self._dtypes: dict[str, np.dtype[Any] | None] = {}

    def load(
        self, artifact: Path, signature: Signature, *, threads: int = 1, device: str = "cpu", precision: str = "fp32"
    ) -> None:
        import torch

        device = check_device(device)
        autocast(device, precision)  # checks the precision's name
        found = inspect(artifact)
        manifest = found.manifest
        if found.contents is not None and found.contents.parts:
            # Graph calls are not refused here: a trusted version may store them, and the version's
            # trust (checked against this same inspection when it is served) decides.
            raise UntrustedArtifact(
                f"{Path(artifact) / manifest.file} holds {found.why}, which torch.export.load would unpickle or run; "
                "modelport stores exported programs without them, so this artifact was changed after registration"
            )
        outputs = [spec.name for spec in signature.outputs]
        unknown = [name for name in outputs if name not in manifest.outputs]
        unknown += [spec.name for spec in signature.inputs if spec.name not in manifest.inputs]
        if unknown:
            raise InvalidModel(
                f"PyTorch artifact {artifact} does not match its signature: no tensor named "
                f"{', '.join(map(repr, unknown))} (inputs: {', '.join(manifest.inputs)}; "
                f"outputs: {', '.join(manifest.outputs)})"
            )
        torch.set_num_threads(max(1, threads))  # process-wide: see the module docstring
        self._module = load_module(Path(artifact) / manifest.file, manifest.format, device=device)
        self._manifest = manifest
        self._device, self._precision = device, precision
        self._dtypes = {}
        for name in outputs:
            spec = signature.output(name)
            wanted = dtype_of(spec.datatype) if spec is not None else None
            self._dtypes[name] = wanted if wanted is not None and wanted.kind == "f" else None

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        module, manifest = self._module, self._manifest
        if module is None or manifest is None:
            raise ModelNotReady("the PyTorch model is not loaded; call load() first")
        tensors = list(_tensors(inputs, manifest.inputs, self._device))
        context: AbstractContextManager[Any] = autocast(self._device, self._precision) or nullcontext()
        with torch.inference_mode(), context:
            result = call(module, manifest, tensors)
        named = named_outputs(result, manifest)
        return {name: to_numpy(named[name], dtype) for name, dtype in self._dtypes.items()}

    def unload(self) -> None:
        self._module = self._manifest = None
        self._dtypes = {}
