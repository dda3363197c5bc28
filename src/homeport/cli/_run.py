"""`homeport run`: import a program written for Modal and run an entrypoint or a function in its app."""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import inspect
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any

import rich_click as click

from .. import _modal_alias, _progress
from .._app import App
from .._function import Function
from ..exception import InvalidError


def import_program(ref: str, module_mode: bool = False) -> tuple[Any, str | None]:
    """Import `file.py[::name]` or a module path; `import modal` resolves to Homeport inside it."""
    _modal_alias.install()
    path_part, _, name = ref.partition("::")
    if module_mode:
        if os.getcwd() not in sys.path:  # as `python -m`: modules under the working directory (a console script's
            sys.path.insert(0, os.getcwd())  # own sys.path[0] is its bin/ directory)
        module = importlib.import_module(path_part)
        return module, name or None
    path = Path(path_part).resolve()
    if not path.exists():
        raise click.ClickException(f"No such file: {path_part}")
    sys.path.insert(0, str(path.parent))
    module_name = path.stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # not a file Python imports (e.g. `app.txt`)
        raise click.ClickException(f"Not a Python file: {path_part}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module, name or None


def find_app(module: Any) -> App:
    apps = [v for v in vars(module).values() if isinstance(v, App)]
    if not apps:
        raise click.ClickException(f"{module.__name__} defines no `modal.App` (or `homeport.App`).")
    named = [a for k, a in vars(module).items() if isinstance(a, App) and k in ("app", "stub")]
    return named[0] if named else apps[0]


def choose_target(app: App, module: Any, name: str | None) -> tuple[str, Any]:
    """("entrypoint", f) or ("function", Function) or ("method", (Cls, method name))."""
    entrypoints = app.registered_entrypoints
    functions = app.registered_functions
    if name:
        if "." in name:
            cls_name, _, meth = name.partition(".")
            obj = functions.get(cls_name)
            if obj is not None and meth in getattr(obj, "_methods", {}):
                return "method", (obj, meth)
            name = cls_name if cls_name in ("app", "stub") else name
            name = meth if cls_name in ("app", "stub") else name
        if name in entrypoints:
            return "entrypoint", entrypoints[name]
        if name in functions and isinstance(functions[name], Function):
            return "function", functions[name]
        choices = ", ".join(sorted([*entrypoints, *functions]))
        raise click.ClickException(f"'{name}' is not a local entrypoint or function of the app. Choose one of: {choices}")
    if len(entrypoints) == 1:
        return "entrypoint", next(iter(entrypoints.values()))
    fns = [f for f in functions.values() if isinstance(f, Function)]
    if not entrypoints and len(fns) == 1:
        return "function", fns[0]
    choices = ", ".join(sorted([*entrypoints, *functions]))
    raise click.ClickException(
        f"Specify what to run, e.g. `homeport run {module.__name__}.py::NAME`, with NAME one of: {choices}"
    )


class NoParserAvailable(InvalidError):
    """A parameter's annotation is a type that `homeport run` cannot parse from the command line."""


class _DateTime(click.ParamType):
    """`datetime.datetime` from ISO 8601: `2024-01-02`, `2024-01-02T03:04:05`, `2024-01-02 03:04:05+02:00`."""

    name = "datetime"

    def convert(self, value: Any, param: Any, ctx: Any) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value
        try:
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date and time, e.g. 2024-01-02 or 2024-01-02T03:04:05",
                      param, ctx)


_PARSERS: dict[Any, Any] = {str: str, int: int, float: float, datetime.datetime: _DateTime(), typing.Any: str,
                            inspect.Parameter.empty: str}
_BY_NAME = {"str": str, "int": int, "float": float, "bool": bool, "datetime.datetime": datetime.datetime,
            "datetime": datetime.datetime, "Any": typing.Any, "typing.Any": typing.Any}
SUPPORTED = "str, int, float, bool, datetime.datetime, typing.Any, or a Literal[...] of str or int values"


def _unwrap_optional(annotation: Any) -> Any:
    """`Optional[X]` and `X | None` parse as X (None is what leaving the option out gives)."""
    args = typing.get_args(annotation)
    union_types = (typing.Union, getattr(types, "UnionType", typing.Union))
    if typing.get_origin(annotation) in union_types and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return annotation


def _param_type(fn_name: str, param: str, annotation: Any) -> tuple[Any, bool]:
    """A click type for an annotation, and whether it is a boolean flag."""
    annotation = _BY_NAME.get(annotation, annotation) if isinstance(annotation, str) else annotation
    annotation = _unwrap_optional(annotation)
    if annotation is bool:
        return bool, True
    if annotation in _PARSERS:
        return _PARSERS[annotation], False
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values) or all(type(v) is int for v in values):
            return click.Choice([str(a) for a in values]), False
    raise NoParserAvailable(
        f"Parameter `{param}` of '{fn_name}' is annotated `{_type_name(annotation)}`, which `homeport run` cannot parse from "
        f"the command line. Annotate it with {SUPPORTED}, or call '{fn_name}' from a "
        "`@app.local_entrypoint()` that builds the value."
    )


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not typing.get_args(annotation):
        module = annotation.__module__
        return annotation.__qualname__ if module == "builtins" else f"{module}.{annotation.__qualname__}"
    return repr(annotation)


def parse_cli_args(f: Any, args: list[str]) -> dict[str, Any]:
    """`modal run`-style options from a function's parameters: `--name value`, `--flag/--no-flag`."""
    sig = inspect.signature(f)
    fn_name = getattr(f, "__name__", "fn")
    params: list[click.Parameter] = []
    try:
        hints = typing.get_type_hints(f)
    except Exception:
        hints = {}
    literals: dict[str, tuple] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
            continue
        ann = hints.get(p.name, p.annotation)
        typ, is_flag = _param_type(fn_name, p.name, ann)
        if isinstance(typ, click.Choice):
            literals[p.name] = typing.get_args(_unwrap_optional(ann))
        opt = "--" + p.name.replace("_", "-")
        required = p.default is inspect.Parameter.empty
        default = None if required else p.default
        if is_flag:
            params.append(click.Option([f"{opt}/--no-{p.name.replace('_', '-')}", p.name], default=bool(default), show_default=True))
        else:
            extra: dict[str, Any] = {} if required else {"default": default, "show_default": True}  # click 8.2+: None is a default
            params.append(click.Option([opt, p.name], type=typ, required=required, **extra))
    cmd = click.RichCommand(name=fn_name, params=params, callback=lambda **kw: kw, help=inspect.getdoc(f))
    result = cmd.main(args=args, prog_name=f"homeport run ...::{fn_name}", standalone_mode=False)
    if isinstance(result, int):  # --help was shown
        raise SystemExit(result)
    # A Literal's choices come through as strings: back to the values the function declared.
    for name, values in literals.items():
        if result.get(name) is not None:
            result[name] = next((v for v in values if str(v) == str(result[name])), result[name])
    return result


def run_program(ref: str, args: list[str], *, module_mode: bool, detach: bool, quiet: bool, write_result: str | None) -> None:
    os.environ.setdefault("HOMEPORT_MODAL_ALIAS", "1")
    if not quiet:
        from ._lines import LineGuard

        sys.stdout, sys.stderr = LineGuard(sys.stdout), LineGuard(sys.stderr)
    _progress.configure(quiet=quiet, maps=True)  # on a terminal: a bar for each big map
    module, name = import_program(ref, module_mode)
    app = find_app(module)
    kind, target = choose_target(app, module, name)
    if kind == "entrypoint":
        kwargs = parse_cli_args(target, args)
        call = lambda: target(**kwargs)  # noqa: E731
    elif kind == "method":
        cls, meth = target
        kwargs = parse_cli_args(getattr(cls._user_cls, meth), args)
        kwargs.pop("self", None)
        call = lambda: getattr(cls(), meth).remote(**kwargs)  # noqa: E731
    else:
        fn: Function = target
        if fn.is_generator:
            raise InvalidError("`homeport run` is not supported for generator functions")
        kwargs = parse_cli_args(fn._raw_f, args)
        call = (lambda: fn.spawn(**kwargs).get()) if detach else (lambda: fn.remote(**kwargs))
    app._print_urls = False  # the status lines show them
    with _status(app, quiet) as status, app.run(show_logs=not quiet, detach=detach):
        status.created()
        result = call()
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    if write_result:
        if not isinstance(result, (str, bytes)):
            raise click.ClickException(f"--write-result needs a str or bytes result, got {type(result).__name__}")
        Path(write_result).write_bytes(result.encode() if isinstance(result, str) else result)


def tree_lines(app: App) -> list[str]:
    """One line per function and class of the app, with the URL of each web endpoint."""
    urls = app.web_urls
    items: list[str] = []
    for name, obj in sorted(app.registered_functions.items()):
        kind = "function" if isinstance(obj, Function) else "class"
        own = [k for k in urls if k == name or k.startswith(name + ".")]
        if not own:
            items.append(f"Created {kind} {name}.")
        for key in sorted(own):
            items.append(f"Created web {'function' if key == name else 'endpoint'} {key} => [link]{urls[key]}[/link]")
    return [f"{'└──' if i == len(items) - 1 else '├──'} {line}" for i, line in enumerate(items)]


class _status:
    """Modal-style progress lines on stderr: what was created, and how the app ended."""

    def __init__(self, app: App, quiet: bool) -> None:
        from rich.console import Console

        self.app, self.quiet = app, quiet
        self.console = Console(stderr=True, highlight=False)

    def __enter__(self) -> _status:
        if not self.quiet:
            self.console.print(f"[green]✓[/green] Initialized app [bold]{self.app.name or '(unnamed)'}[/bold].")
        return self

    def created(self) -> None:
        if self.quiet:
            return
        lines = [f"[green]✓[/green] Created objects ({self.app.app_id})."]
        lines += tree_lines(self.app)
        self.console.print("\n".join(lines))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.quiet:
            return
        if exc_type is None:
            self.console.print("[green]✓[/green] App completed.")
        elif issubclass(exc_type, KeyboardInterrupt):
            if getattr(self.app, "_detached", False):
                self.console.print("[yellow]⨯[/yellow] Client interrupted; the detached app keeps running.")
            else:
                self.console.print("[yellow]⨯[/yellow] App stopped (interrupted).")
        else:
            self.console.print(f"[red]⨯[/red] App failed: {exc_type.__name__}.")


async def _await(x: Any) -> Any:
    return await x
