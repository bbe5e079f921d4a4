"""Commands of the stabletts engine: COMMANDS[name](config: dict, stop) -> result dict."""
from . import check, evaluate, synthesize, train

COMMANDS = {
    "train": train.run,
    "synthesize": synthesize.run,
    "evaluate": evaluate.run,
    "check": check.run,
}
