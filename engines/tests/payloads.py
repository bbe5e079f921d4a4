"""Hostile files as someone with push rights to a project would plant them: pickles that
run a command when unpickled, and archives that reach outside their folder."""
import io
import os
import re
import tarfile
import zipfile

import torch


class RunsCommand:
    """Unpickling this runs `touch marker` (os.system)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class RunsPython:
    """Unpickling this runs Python that creates the marker (builtins.exec)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def plant(path, marker, body: dict | None = None, how=RunsCommand, legacy=False) -> str:
    """torch.save of `body` (a plausible checkpoint dict) with a payload inside it."""
    obj = dict(body or {})
    obj["payload"] = how(str(marker))
    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)
    return str(path)


def carries_code(path) -> bool:
    """The planted file really names a callable (read from its opcodes, nothing runs)."""
    names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    return any(n in ("posix.system", "builtins.exec") for n in names)


def tar_with(path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode="w") -> str:
    with tarfile.open(str(path), mode) as t:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def member(name: str, kind=tarfile.REGTYPE, linkname: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, 0o644, size
    return info


CONFIG = (member("config.json"), b'{"model_type": "wav2vec2"}')


def hostile_tars(folder, marker) -> dict[str, str]:
    """One artifact per way out of the folder; each also holds a config.json (looks like a model)."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    pickled = io.BytesIO()
    torch.save({"w": RunsCommand(str(marker))}, pickled)
    zero = member("blob.bin.safetensors", size=64 << 20)
    out = {
        "symlink to /": [CONFIG, (member("root", tarfile.SYMTYPE, "/"), None),
                         (member("root/tmp/escaped.txt"), b"x")],
        "hard link": [CONFIG, (member("passwd", tarfile.LNKTYPE, "/etc/passwd"), None)],
        "dot-dot entry": [CONFIG, (member("../../escaped.txt"), b"x")],
        "absolute path": [CONFIG, (member("/tmp/escaped-abs.txt"), b"x")],
        "device node": [CONFIG, (member("null", tarfile.CHRTYPE), None)],
        "named pipe": [CONFIG, (member("fifo", tarfile.FIFOTYPE), None)],
        "pickled weights": [CONFIG, (member("pytorch_model.bin"), pickled.getvalue())],
    }
    paths = {name: tar_with(os.path.join(folder, re.sub(r"\W+", "_", name) + ".tar"), m)
             for name, m in out.items()}
    # a tar bomb: a 64 MiB member of zeros compresses to a few tens of KB
    bomb = os.path.join(folder, "bomb.tar.gz")
    with tarfile.open(bomb, "w:gz") as t:
        info = member("config.json")
        info.size = len(CONFIG[1])
        t.addfile(info, io.BytesIO(CONFIG[1]))
        t.addfile(zero, io.BytesIO(bytes(zero.size)))
    paths["tar bomb"] = bomb
    return paths


def zip_with(path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> str:
    with zipfile.ZipFile(str(path), "w", compression=zipfile.ZIP_DEFLATED) as z:
        for info, data in entries:
            z.writestr(info, data)
    return str(path)


def zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    return info, target.encode()
