"""The user's own network: ``--model FILE.py:FUNCTION`` or ``--model package.module:FUNCTION``.

FUNCTION is called as ``FUNCTION(num_classes=..., input_shape=(C, H, W), **model_args)`` and returns
an ``nn.Module``. Importing the source runs the user's code: it runs only because the user named it.
A file source is recorded with its sha256, and rebuilding the model later (``io.load_model``)
refuses a file that has changed or vanished since, so the weights never meet another architecture.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from torch import nn

from cimtool.errors import CimtoolError

KIND = "user"  # the MODELS entry of every user model: its spec names the source


def parse_model_args(items: Iterable[str]) -> dict[str, Any]:
    """``key=value`` items as keyword arguments: int, float, true/false, else the text itself."""
    args: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise CimtoolError(f"--model-arg must be key=value with a Python name as key, got {item!r}")
        args[key.strip()] = _value(value.strip())
    return args


def _value(text: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _split(source: str) -> tuple[str, str]:
    where, sep, function = source.rpartition(":")
    if not sep or not where or not function.isidentifier():
        raise CimtoolError(f"--model {source!r}: expected FILE.py:FUNCTION or package.module:FUNCTION")
    return where, function


def function_name(source: str) -> str:
    return _split(source)[1]


def is_file(source: str) -> bool:
    return _split(source)[0].endswith(".py")


def resolved(source: str) -> str:
    """``source`` with a file's path made absolute, so a later stage finds it from any folder."""
    where, function = _split(source)
    return f"{Path(where).expanduser().resolve()}:{function}" if where.endswith(".py") else source


def file_sha256(source: str) -> str | None:
    """The sha256 of a file source (None for a module source); a one-line error if it is missing."""
    if not is_file(source):
        return None
    path = Path(_split(source)[0])
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise CimtoolError(f"model source {path}: cannot read it ({exc.strerror})") from None


def _module(where: str):
    if not where.endswith(".py"):
        try:
            return importlib.import_module(where)
        except ImportError as exc:
            raise CimtoolError(f"model source {where}: cannot import it ({exc})") from None
    path = Path(where)
    # one module name per file, so two sources never share (or overwrite) a sys.modules entry
    name = "cimtool_user_model_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's code: any error is theirs, shown in one line
        sys.modules.pop(name, None)
        raise CimtoolError(f"model source {path}: importing it failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return module


def function(source: str) -> Callable[..., nn.Module]:
    where, name = _split(source)
    fn = getattr(_module(where), name, None)
    if not callable(fn):
        raise CimtoolError(f"model source {where}: no function '{name}'")
    return fn


def build_user(spec: dict[str, Any]) -> nn.Module:
    """The MODELS entry's build: the recorded source, checked by hash, called with the recorded arguments."""
    source = spec["source"]
    recorded = spec.get("source_sha256")
    if recorded is not None:
        path = _split(source)[0]
        if not Path(path).is_file():
            raise CimtoolError(f"model source {path} is gone: the model was imported from it")
        if file_sha256(source) != recorded:
            raise CimtoolError(f"model source {path} has changed since the model was imported from it "
                               "(sha256 mismatch): re-import the model")
    try:
        model = function(source)(num_classes=spec["num_classes"], input_shape=tuple(spec["input_shape"]),
                                 **spec.get("model_args", {}))
    except CimtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: any error is theirs, shown in one line
        raise CimtoolError(f"model source {source}: calling it failed ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(model, nn.Module):
        raise CimtoolError(f"model source {source}: returned {type(model).__name__}, not a torch nn.Module")
    return model
