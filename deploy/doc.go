// Package deploy holds the packaging of gpu-worker: the container image
// (Dockerfile), the systemd unit, the Kubernetes manifests (a fixed fleet in
// kubernetes.yaml, an elastic one scaled by KEDA in keda/), a Grafana
// dashboard and an example config file. Its tests lint them with parsers,
// decode every Kubernetes object strictly into its k8s.io/api type,
// validate KEDA's objects against KEDA's own CRDs, and evaluate the
// dashboard's and the scaler's queries in a real Prometheus; building
// images is not part of the test run.
package deploy
