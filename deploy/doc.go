// Package deploy holds the packaging of gpu-worker: the container image
// (Dockerfile), the systemd unit, the Kubernetes manifest and an example
// config file. Its tests lint them with parsers, since building images is
// not part of the test run.
package deploy
