"""Command-line entry: python -m gpuworker_engines <engine> <command> --config FILE,
and python -m gpuworker_engines schema (every command's settings, as JSON)."""
import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from . import events
from .config import FileCaps


def engines() -> list[str]:
    """Every sub-package with a cli module is an engine: adding one needs no list here.

    Its cli module exposes COMMANDS: dict[str, callable(config, stop) -> dict], and its
    config module (which imports no torch) CONFIGS: dict[str, Settings class], the
    settings of each command.
    """
    root = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(root)])
                  if m.ispkg and (root / m.name / "cli.py").exists())


def configs(engine: str) -> dict:
    return importlib.import_module(f"gpuworker_engines.{engine}.config").CONFIGS


def schema() -> dict:
    """What every command of every engine accepts: printed from the settings dataclasses."""
    from .config import FORMAT, describe
    return {"format": FORMAT, "engines": {
        e: {name: describe(cls) for name, cls in configs(e).items()} for e in engines()}}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["schema"]:
        json.dump(schema(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    events.watch_parent()
    parser = argparse.ArgumentParser(prog="gpuworker_engines",
                                     epilog="`python -m gpuworker_engines schema` prints every setting")
    parser.add_argument("engine", choices=engines())
    parser.add_argument("command")
    parser.add_argument("--config", required=True, help="path to the run's config.json")
    parser.add_argument("--resume", default=None, help="resumable checkpoint to continue from")
    args = parser.parse_args(argv)

    module = importlib.import_module(f"gpuworker_engines.{args.engine}.cli")
    command = module.COMMANDS.get(args.command)
    if command is None:
        parser.error(f"engine {args.engine} has no command {args.command!r} "
                     f"(has: {', '.join(sorted(module.COMMANDS))})")
    try:
        with open(args.config, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        events.error(f"read config {args.config}: {e}")
        return 2
    if args.resume:
        config["resume"] = args.resume
    stop = events.install_stop_handler()
    try:
        settings = configs(args.engine)[args.command].of(config)
        from . import untrusted  # here: the schema command above runs without torch
        if isinstance(settings, FileCaps):
            untrusted.configure(settings)  # caps on files that may come from a project
        result = command(settings, stop)
    except events.Interrupted as e:
        # a resumable checkpoint was saved and reported before raising
        print(f"interrupted: {e}", file=sys.stderr)
        return events.EXIT_INTERRUPTED
    except events.EngineError as e:
        events.error(str(e), kind=e.kind)
        return 1
    except Exception as e:  # noqa: BLE001 - report anything else to the worker
        if events.is_oom(e):
            events.error(f"out of memory: {e}", kind="oom")
        else:
            events.error(f"{type(e).__name__}: {e}")
        import traceback
        traceback.print_exc(file=sys.stderr)
        return 1
    events.emit("result", **(result or {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
