package main

import (
	"gpu-worker/engine"
	"gpu-worker/handlers"
	"gpu-worker/worker"
)

// registry maps job kinds to their handlers, which run engines with runner.
func registry(runner engine.Runner) worker.Registry {
	return handlers.Registry(runner)
}
