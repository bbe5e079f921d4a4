"""Files that may come from a project, read as data and never as code.

Anyone with push rights to a project can put a file where a job will read it (a
resume checkpoint, a base model, an ASR artifact, a post-corrector, a sidecar
JSON). Every such file goes through this module:

    load_tensors   torch.load(weights_only=True): tensors, numbers, strings, lists,
                   tuples, dicts; a file that would import or call anything is refused
    read_json      at most max_json_bytes; nesting deeper than Python's recursion
                   limit is refused cleanly
    extract        a tar (plain or compressed) or zip archive: only regular files and
                   folders, no link, device or fifo, no absolute path or `..`, at
                   most max_archive_members members and max_unpacked_bytes in all
    read_zip_member one member of a zip (the post-corrector's .tm), with the same caps

A file that fails a check raises EngineError (kind "refused") whose message starts
with the path exactly as the config gave it (the worker maps local paths back to
project paths) and says what was refused: "<path>: refused: <why>". A refused
resume checkpoint fails the job: deleting it trains from the start.

What each project file is, and how it is read:
    StableTTS best/final_model.pt, published checkpoint_0.pt, vocos.pt
                        torch.save of a bare state_dict       load_tensors
    StableTTS <stem>.json sidecar, split.json                 read_json
    StableTTS resume_*.pt, CTC resumable_/portable_*.pt
                        torch.save of a dict of tensors and plain values (RNG
                        states as tensors)                    load_tensors
    asr_model.tar       tar (or zip) of: model.safetensors or adapter.<lang>.safetensors,
                        config/preprocessor/tokenizer JSON, vocab.json, card.json,
                        README.md, language_model/ (ARPA text, attrs.json,
                        unigrams.txt), alphabet.json, transmorgrifier.tm
                                                              extract + check_tree
    transmorgrifier.tm  zip of params.json, action.cb, char.cb (catboost binary)
                                                              read_zip_members

The caps are keys of every command's config that reads such files (config.FileCaps
holds them and their defaults): max_unpacked_bytes, max_archive_members, max_json_bytes.
"""
import contextlib
import json
import os
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import fields

from .config import GiB, MiB, FileCaps
from .events import EngineError

CHUNK = 1 << 20
REFUSED = "refused"  # the error event's kind for a file that failed a check
# weights formats that are pickles underneath: never read from a project
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".joblib")


_limits = FileCaps()


def configure(config) -> FileCaps:
    """Takes the caps a command's settings (or a config dict) set; the rest keep their defaults."""
    if not isinstance(config, FileCaps):
        names = {f.name for f in fields(FileCaps)}
        config = FileCaps.from_dict({k: v for k, v in config.items() if k in names}, "the file caps")
    global _limits
    _limits = FileCaps(**{f.name: getattr(config, f.name) for f in fields(FileCaps)})
    return _limits


def refused(shown: str, why: str) -> EngineError:
    return EngineError(f"{shown}: refused: {why}", kind=REFUSED)


def _size_note(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / MiB:.1f} MiB" if n >= MiB else f"{n} bytes"


# --- tensors ---------------------------------------------------------------------------------------

def load_tensors(path: str, shown: str | None = None):
    """A torch.save file read with weights_only=True, on the CPU."""
    shown = shown or path
    if not os.path.isfile(path):
        raise EngineError(f"{shown}: not found")
    if zipfile.is_zipfile(path):  # torch's own format; the legacy one has no members to count
        _check_zip_totals(path, shown)
    import torch  # here: commands that read no tensor file start without it
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - refusals and corrupt files raise many types
        if type(e).__name__ == "UnpicklingError":
            names = _unsafe_globals(path, str(e))
            why = f"it would run code when loaded: {names}" if names else _reason(str(e))
            raise refused(shown, f"not a plain tensor file ({why})") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EngineError(f"{shown}: not a readable tensor file ({type(e).__name__}: {first})") from None


def _unsafe_globals(path: str, message: str) -> str:
    """What the file would import or call, read from its pickle opcodes without running them
    (or from torch's refusal, for the legacy format)."""
    import torch
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - the listing is only for the message
        names = []
    names = names or re.findall(r"GLOBAL ([\w.]+)|function ([\w.]+)", message)
    names = [n if isinstance(n, str) else next(x for x in n if x) for n in names]
    return ", ".join(dict.fromkeys(names[:5]))


def _reason(message: str) -> str:
    """torch's own reason, without its advice to load the file unsafely."""
    boiler = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")
    for para in (p.strip() for p in message.split("\n\n")):
        if para and not para.startswith(boiler):
            return para.replace("WeightsUnpickler error:", "").strip()[:200]
    return "content other than tensors and plain values"


def _check_zip_totals(path: str, shown: str) -> None:
    try:
        with zipfile.ZipFile(path) as z:
            _zip_caps(z.infolist(), shown)
    except (zipfile.BadZipFile, OSError) as e:
        raise EngineError(f"{shown}: not a readable archive: {e}") from None


def _zip_caps(infos: list[zipfile.ZipInfo], shown: str) -> None:
    """A zip's central directory says how many members and bytes it unpacks to: checked first."""
    if len(infos) > _limits.max_archive_members:
        raise refused(shown, f"{len(infos)} members, more than max_archive_members "
                      f"({_limits.max_archive_members})")
    total = sum(i.file_size for i in infos)
    if total > _limits.max_unpacked_bytes:
        raise refused(shown, f"unpacks to {_size_note(total)}, more than max_unpacked_bytes "
                      f"({_size_note(_limits.max_unpacked_bytes)})")


# --- JSON ------------------------------------------------------------------------------------------

def read_json(path: str, shown: str | None = None):
    """A JSON file of at most max_json_bytes."""
    shown = shown or path
    cap = _limits.max_json_bytes
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise EngineError(f"{shown}: cannot read: {e.strerror or e}") from None
    if len(data) > cap:
        raise refused(shown, f"JSON larger than max_json_bytes ({_size_note(cap)})")
    return parse_json(data, shown)


def parse_json(data: bytes, shown: str):
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise refused(shown, "JSON nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise EngineError(f"{shown}: not valid JSON: {e}") from None


# --- archives --------------------------------------------------------------------------------------

def extract(src: str, into: str, shown: str | None = None) -> str:
    """Unpacks src into the folder `into` (replaced if it exists): written beside it first,
    renamed into place once every member passed."""
    shown = shown or src
    part = into.rstrip(os.sep) + ".part"
    _remove(part)
    os.makedirs(part)
    try:
        with open(src, "rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04":
            _unzip(src, part, shown)
        else:
            _untar(src, part, shown)
    except BaseException:
        _remove(part)
        raise
    _remove(into)
    os.replace(part, into)
    return into


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def _member_parts(name: str, shown: str) -> list[str]:
    """The path of a member as folder names, or a refusal for one that would leave the folder."""
    if not name or "\x00" in name:
        raise refused(shown, f"member {name!r} has no usable name")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise refused(shown, f"member {name!r} has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise refused(shown, f"member {name!r} points outside the folder (..)")
    return parts


def _make_dirs(root: str, parts: list[str], shown: str, name: str) -> str:
    """root/parts..., each level a real folder we made (never a link)."""
    path = root
    for p in parts:
        path = os.path.join(path, p)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise refused(shown, f"member {name!r} is both a file and a folder") from None
    return path


class _Budget:
    def __init__(self, shown: str):
        self.shown, self.members, self.bytes = shown, 0, 0

    def member(self) -> None:
        self.members += 1
        if self.members > _limits.max_archive_members:
            raise refused(self.shown, f"more than max_archive_members ({_limits.max_archive_members}) members")

    def check(self, more: int) -> None:
        if self.bytes + more > _limits.max_unpacked_bytes:
            raise refused(self.shown, f"unpacks to more than max_unpacked_bytes "
                          f"({_size_note(_limits.max_unpacked_bytes)})")

    def take(self, n: int) -> None:
        self.check(n)
        self.bytes += n


def _write_member(stream, root: str, parts: list[str], budget: _Budget, name: str) -> None:
    parent = _make_dirs(root, parts[:-1], budget.shown, name)
    path = os.path.join(parent, parts[-1])
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise refused(budget.shown, f"member {name!r} appears twice") from None
    with os.fdopen(fd, "wb") as out:
        while chunk := stream.read(CHUNK):
            budget.take(len(chunk))
            out.write(chunk)


def _tar_kind(m: tarfile.TarInfo) -> str:
    kinds = [(m.issym(), f"a symbolic link (to {m.linkname!r})"), (m.islnk(), f"a hard link (to {m.linkname!r})"),
             (m.ischr() or m.isblk(), "a device node"), (m.isfifo(), "a named pipe"), (m.issparse(), "a sparse file")]
    return next((what for hit, what in kinds if hit), "not a regular file or folder")


def _untar(src: str, root: str, shown: str) -> None:
    budget = _Budget(shown)
    try:
        with tarfile.open(src, mode="r:*") as tar:
            for m in tar:  # headers are read one at a time: the member cap bounds the work
                budget.member()
                parts = _member_parts(m.name, shown)
                if m.isdir():
                    _make_dirs(root, parts, shown, m.name)
                elif m.isreg() and not m.issparse() and parts:
                    budget.check(m.size)  # refuses before writing a byte of it
                    with tar.extractfile(m) as stream:
                        _write_member(stream, root, parts, budget, m.name)
                else:
                    raise refused(shown, f"member {m.name!r} is {_tar_kind(m)}")
    except EngineError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise EngineError(f"{shown}: not a readable tar or zip archive: {e}") from None


def _zip_kind(info: zipfile.ZipInfo) -> str | None:
    """None for a regular file or folder, else what it is."""
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: the archiver recorded no file type
    if info.flag_bits & 0x1:
        return "encrypted"
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "a device node, pipe or socket"
    return None


def _zip_infos(z: zipfile.ZipFile, shown: str) -> list[zipfile.ZipInfo]:
    infos = z.infolist()
    _zip_caps(infos, shown)
    for i in infos:
        kind = _zip_kind(i)
        if kind:
            raise refused(shown, f"member {i.filename!r} is {kind}")
        _member_parts(i.filename, shown)
    return infos


def _unzip(src: str, root: str, shown: str) -> None:
    budget = _Budget(shown)
    try:
        with zipfile.ZipFile(src) as z:
            for info in _zip_infos(z, shown):
                budget.member()
                parts = _member_parts(info.filename, shown)
                if info.is_dir():
                    _make_dirs(root, parts, shown, info.filename)
                elif parts:
                    with z.open(info) as stream:
                        _write_member(stream, root, parts, budget, info.filename)
    except EngineError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as e:
        raise EngineError(f"{shown}: not a readable zip archive: {e}") from None


def read_zip_members(path: str, allowed: set[str], shown: str | None = None) -> dict[str, bytes]:
    """The members of a small zip, in memory; any name outside `allowed` is refused."""
    shown = shown or path
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            budget = _Budget(shown)
            for info in _zip_infos(z, shown):
                budget.member()
                if info.filename not in allowed:
                    raise refused(shown, f"unexpected member {info.filename!r} "
                                  f"(expected only {', '.join(sorted(allowed))})")
                if info.filename in out:
                    raise refused(shown, f"member {info.filename!r} appears twice")
                with z.open(info) as stream:
                    data = bytearray()
                    while chunk := stream.read(CHUNK):
                        budget.take(len(chunk))
                        data += chunk
                out[info.filename] = bytes(data)
    except EngineError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as e:
        raise EngineError(f"{shown}: not a readable zip archive: {e}") from None
    return out


def check_tree(directory: str, shown: str) -> None:
    """A folder of project files: regular files and folders only, no pickle-based weights,
    every JSON file within the JSON caps."""
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise refused(shown, f"{rel} is a symbolic link")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise refused(shown, f"{rel} is not a regular file")
            if name in dirs:
                continue
            if name.lower().endswith(PICKLE_SUFFIXES):
                raise refused(shown, f"{rel} is a pickle-based weights file (it could run code when "
                              "loaded); models from a project carry safetensors")
            if name.lower().endswith(".json"):
                read_json(path, f"{shown}: {rel}")


@contextlib.contextmanager
def shown_as(local: str, shown: str):
    """EngineErrors raised inside name `shown` where they named the local folder `local`."""
    try:
        yield
    except EngineError as e:
        if local == shown or local not in str(e):
            raise
        raise EngineError(str(e).replace(local, shown), kind=e.kind) from None
