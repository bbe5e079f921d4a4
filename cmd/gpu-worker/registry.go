package main

import (
	"gpu-worker/handlers"
	"gpu-worker/worker"
)

// registry maps job kinds to their handlers.
func registry() worker.Registry {
	return handlers.Registry()
}
