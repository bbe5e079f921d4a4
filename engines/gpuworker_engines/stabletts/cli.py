"""Commands of the stabletts engine: COMMANDS[name](config: dict, stop) -> result dict."""
from . import evaluate, synthesize, train

COMMANDS = {
    "train": train.run,
    "synthesize": synthesize.run,
    "evaluate": evaluate.run,
}
