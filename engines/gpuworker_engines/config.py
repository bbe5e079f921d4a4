"""Engine settings: one dataclass per command, the only home of its defaults.

A command's settings derive from Settings and declare every key with `knob()`:
its default, unit and help. From that one declaration come

    parsing        Settings.of(config): unknown keys fail, all of them named (nested
                   ones too); null or absent means the default; types are checked;
                   nested options are Settings dataclasses of their own
    presets        defaults that depend on another value (the model size, the base's
                   architecture), in the class's PRESETS, applied by preset()
    the schema     describe(): what `python -m gpuworker_engines schema` prints

This module imports nothing heavy, so the schema command runs without torch.
"""
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar

from .events import EngineError

GiB, MiB = 1 << 30, 1 << 20
UNITS = ("", "epochs", "steps", "seconds", "items", "bytes", "ratio")


def knob(default=MISSING, *, help: str, unit: str = "", kind: str | None = None,
         required: bool = False, choices: tuple | None = None, min=None, max=None):
    """A settings key: its default (a list or a Settings class is built fresh for each
    instance), what it means, its unit; `kind` "path" marks a str naming a file or folder."""
    assert unit in UNITS, unit
    meta = {"help": help, "unit": unit, "kind": kind, "required": required,
            "choices": choices, "min": min, "max": max}
    if required:
        return field(default=None, metadata=meta)
    if isinstance(default, list) or (isinstance(default, type) and issubclass(default, Settings)):
        factory = default if isinstance(default, type) else (lambda: list(default))
        return field(default_factory=factory, metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Settings:
    """Base of every command's settings (and of their nested options)."""
    NAME: ClassVar[str] = ""  # "stabletts train": how errors name the command
    # "<key>=<value>" -> {key: default}; the first applied preset that sets a key wins
    PRESETS: ClassVar[dict[str, dict]] = {}

    @classmethod
    def of(cls, config):
        """The settings of a run: config as parsed already, or a job's JSON object."""
        return config if isinstance(config, cls) else cls.from_dict(config)

    @classmethod
    def from_dict(cls, d, what: str | None = None):
        what = what or cls.NAME or cls.__name__
        unknown: list[str] = []
        missing: list[str] = []
        cfg = _parse(cls, d, what, unknown, missing, "")
        problems = [f"unknown key(s) for {what}: {'; '.join(unknown)}"] if unknown else []
        problems += [f"{what} needs {', '.join(missing)}"] if missing else []
        if problems:
            raise EngineError("config: " + "; and ".join(problems))
        cfg.settle()
        cfg.validate()
        return cfg

    def settle(self) -> None:
        """Fills what the settings themselves decide (e.g. a size preset); before validate()."""

    def validate(self) -> None:
        """Checks across keys (one key's choices and bounds are checked already)."""

    def preset(self, key: str, value=None) -> None:
        """Applies the preset "<key>=<value>" (value: this key's own) to the keys not given."""
        value = getattr(self, key) if value is None else value
        self._fill(self.PRESETS.get(f"{key}={value}", {}))

    def given(self, key: str) -> bool:
        """Whether the job's config set this key (not null)."""
        return key in self.__dict__.get("_given", ())

    def to_dict(self) -> dict:
        return {f.name: (getattr(self, f.name).to_dict() if isinstance(getattr(self, f.name), Settings)
                         else getattr(self, f.name)) for f in fields(self)}

    def _fill(self, values: dict) -> None:
        settled = self.__dict__.setdefault("_settled", set())
        for name, v in values.items():
            current = getattr(self, name)
            if isinstance(current, Settings):
                current._fill(v)
            elif not self.given(name) and name not in settled:
                setattr(self, name, v)
                settled.add(name)


def _parse(cls, d, what: str, unknown: list, missing: list, prefix: str):
    if not isinstance(d, dict):
        raise EngineError(f"config: {prefix.rstrip('.') or what} must be an object, not {d!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in _ordered(cls)}
    extra = sorted(set(d) - set(known))
    if extra:
        unknown.append(", ".join(repr(prefix + k) for k in extra)
                       + f" (known{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(known)})")
    values, given = {}, set()
    for name, f in known.items():
        v = d.get(name)
        if f.metadata.get("required") and v in (None, ""):
            missing.append(prefix + name)
            continue
        if v is None:
            continue
        base, _ = _unwrap(hints[name])
        if isinstance(base, type) and issubclass(base, Settings):
            v = _parse(base, v, what, unknown, missing, f"{prefix}{name}.")
        else:
            v = _coerce(prefix + name, base, v, f.metadata)
        values[name] = v
        given.add(name)
    cfg = cls(**values)
    cfg.__dict__["_given"] = given
    for name, sub in values.items():
        if isinstance(sub, Settings):
            sub.settle()
            sub.validate()
    return cfg


def _ordered(cls) -> list:
    """The fields of cls, the file caps (shared by most commands) last."""
    caps = {f.name for f in fields(FileCaps)}
    return sorted(fields(cls), key=lambda f: f.name in caps)


def _unwrap(hint):
    """(the type, whether null is allowed) of an annotation such as `int | None`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def _coerce(name: str, base, v, meta):
    bad = EngineError(f"config: {name} has a wrong type: {v!r}")
    if base is bool:
        if not isinstance(v, bool):
            raise bad
    elif base is int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
            raise bad
        v = int(v)
    elif base is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise bad
        v = float(v)
    elif base is str:
        if not isinstance(v, str):
            raise bad
    elif base == list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise EngineError(f"config: {name} must be a list of strings, not {v!r}")
        v = list(v)
    elif base is dict and not isinstance(v, dict):
        raise bad
    choices = meta.get("choices")
    if choices and v not in choices:
        raise EngineError(f"config: {name} must be one of {', '.join(map(str, choices))}, not {v!r}")
    if meta.get("min") is not None and v < meta["min"]:
        raise EngineError(f"config: {name} must be at least {meta['min']}, not {v!r}")
    if meta.get("max") is not None and v > meta["max"]:
        raise EngineError(f"config: {name} must be at most {meta['max']}, not {v!r}")
    return v


def known_values(cls, d: dict, what: str) -> dict:
    """The keys of d that the dataclass cls knows, type-checked; others are left out (a file
    written by a later version may hold more). Null keeps the default, unless it may be null."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if f.name not in d:
            continue
        base, nullable = _unwrap(hints[f.name])
        if d[f.name] is not None:
            out[f.name] = _coerce(f"{what}.{f.name}", base, d[f.name], {})
        elif nullable:
            out[f.name] = None
    return out


# --- the schema -----------------------------------------------------------------------------------

FORMAT = "gpuworker-engines-schema/1"


def describe(cls) -> dict:
    """One command's schema: summary, fields (recursively) and presets."""
    return {"summary": summary(cls), "fields": _fields(cls), "presets": cls.PRESETS}


def summary(cls) -> str:
    """The first line of the class's docstring (or of the nearest base's that has one)."""
    for c in cls.__mro__:
        doc = (c.__dict__.get("__doc__") or "").strip()
        if doc and not doc.startswith(c.__name__ + "("):  # not the signature dataclass writes
            return doc.splitlines()[0]
    return ""


def _fields(cls) -> dict:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in _ordered(cls):
        base, nullable = _unwrap(hints[f.name])
        meta = f.metadata
        entry = {"type": _type_name(base, meta)}
        if entry["type"] == "object":
            entry["help"] = meta["help"]
            entry["fields"] = _fields(base)
            out[f.name] = entry
            continue
        if meta.get("required"):
            entry["required"] = True
        else:
            entry["default"] = f.default_factory() if f.default is MISSING else f.default
        if nullable and not meta.get("required"):
            entry["nullable"] = True
        entry["unit"] = meta.get("unit", "")
        entry["help"] = meta["help"]
        for k in ("choices", "min", "max"):
            if meta.get(k) is not None:
                entry[k] = list(meta[k]) if k == "choices" else meta[k]
        out[f.name] = entry
    return out


def _type_name(base, meta) -> str:
    if meta.get("kind"):
        return meta["kind"]
    if isinstance(base, type) and issubclass(base, Settings):
        return "object"
    if base == list[str]:
        return "list[str]"
    names = {bool: "bool", int: "int", float: "float", str: "str", dict: "any"}
    if base not in names:
        raise TypeError(f"no schema type for {base!r}")
    return names[base]


# --- keys several commands share ------------------------------------------------------------------

@dataclass(kw_only=True)
class FileCaps(Settings):
    """Caps on files that may come from a project (see untrusted.py)."""
    max_unpacked_bytes: int = knob(
        16 * GiB, unit="bytes", min=1,
        help="most bytes an archive from a project may unpack to (a w2v-bert-2.0 artifact is about 2.4 GB)")
    max_archive_members: int = knob(
        10_000, unit="items", min=1, help="most members an archive from a project may hold")
    max_json_bytes: int = knob(
        32 * MiB, unit="bytes", min=1,
        help="largest JSON file read from a project (MMS's vocab.json, keyed by 1,000+ languages, is a few MB)")


def path_knob(help: str, required: bool = False):
    return knob(None, kind="path", required=required, help=help)


def device_knob():
    return knob("auto", choices=("auto", "cpu", "cuda"),
                help="where to run: auto takes a GPU when there is one (one per process under torchrun)")
