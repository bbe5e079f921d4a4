package deploy

import (
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestKubernetesManifest(t *testing.T) {
	flags, env := binarySettings(t)
	f, err := os.Open("kubernetes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	type meta struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	}
	kinds := map[string]yaml.Node{}
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Metadata   meta   `yaml:"metadata"`
		}
		if err := n.Decode(&head); err != nil || head.APIVersion == "" || head.Kind == "" || head.Metadata.Name == "" {
			t.Fatalf("document without apiVersion/kind/metadata.name: %+v %v", head, err)
		}
		if head.Kind != "Namespace" && head.Metadata.Namespace != "gpu-worker" {
			t.Errorf("%s %s outside the namespace", head.Kind, head.Metadata.Name)
		}
		kinds[head.Kind] = n
	}
	for _, k := range []string{"Namespace", "ConfigMap", "Deployment", "Service"} {
		if _, ok := kinds[k]; !ok {
			t.Fatalf("no %s", k)
		}
	}
	var cm struct {
		Data map[string]string `yaml:"data"`
	}
	n := kinds["ConfigMap"]
	n.Decode(&cm)
	cfg := checkConfig(t, "ConfigMap config.yaml", []byte(cm.Data["config.yaml"]), flags)

	type port struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	}
	var dep struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Template struct {
				Metadata meta `yaml:"metadata"`
				Spec     struct {
					Grace      int `yaml:"terminationGracePeriodSeconds"`
					Containers []struct {
						Image string   `yaml:"image"`
						Args  []string `yaml:"args"`
						Env   []struct {
							Name string `yaml:"name"`
						} `yaml:"env"`
						Ports     []port `yaml:"ports"`
						Resources struct {
							Limits map[string]any `yaml:"limits"`
						} `yaml:"resources"`
						Liveness struct {
							HTTPGet struct {
								Path string `yaml:"path"`
								Port any    `yaml:"port"`
							} `yaml:"httpGet"`
						} `yaml:"livenessProbe"`
						Mounts []struct {
							Name string `yaml:"name"`
						} `yaml:"volumeMounts"`
					} `yaml:"containers"`
					Volumes []struct {
						Name string `yaml:"name"`
					} `yaml:"volumes"`
				} `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	n = kinds["Deployment"]
	if err := n.Decode(&dep); err != nil {
		t.Fatal(err)
	}
	pod := dep.Spec.Template
	for k, v := range dep.Spec.Selector.MatchLabels {
		if pod.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod labels", k, v)
		}
	}
	if d := time.Duration(pod.Spec.Grace) * time.Second; d < shippedStopTimeout(t)+stopMargin {
		t.Errorf("terminationGracePeriodSeconds %d: must exceed the worker's stop timeout (%v) by %v", pod.Spec.Grace, shippedStopTimeout(t), stopMargin)
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("containers: %d", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	if c.Image == "" || len(c.Args) == 0 || c.Args[0] != "run" {
		t.Errorf("container image %q args %v", c.Image, c.Args)
	}
	if i := slices.Index(c.Args, "--token-file"); i < 0 || i+1 >= len(c.Args) || !strings.HasPrefix(c.Args[i+1], "/var/run/secrets/") {
		t.Errorf("args %v: want --token-file from a secret volume", c.Args)
	}
	for _, e := range c.Env {
		if e.Name == "GITLAB_TOKEN" {
			t.Errorf("the token sits in the container's environment; mount it as a file")
		}
	}
	if c.Resources.Limits["nvidia.com/gpu"] == nil {
		t.Errorf("no nvidia.com/gpu limit: the pod would land without a GPU")
	}
	for _, e := range c.Env {
		if ownVariable(e.Name) && !env[e.Name] {
			t.Errorf("env %s is not a variable the worker reads", e.Name)
		}
	}
	_, listenPort, _ := strings.Cut(cfg["listen-address"].(string), ":")
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if strconv.Itoa(ports["metrics"]) != listenPort {
		t.Errorf("metrics port %d does not match listen-address %v", ports["metrics"], cfg["listen-address"])
	}
	if c.Liveness.HTTPGet.Path != "/healthz" || c.Liveness.HTTPGet.Port != "metrics" {
		t.Errorf("liveness probe %+v", c.Liveness.HTTPGet)
	}
	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = true
	}
	for _, m := range c.Mounts {
		if !vols[m.Name] {
			t.Errorf("mount %s has no volume", m.Name)
		}
	}
	var svc struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	n = kinds["Service"]
	n.Decode(&svc)
	for k, v := range svc.Spec.Selector {
		if pod.Metadata.Labels[k] != v {
			t.Errorf("service selector %s=%s matches no pod", k, v)
		}
	}
	for _, p := range svc.Spec.Ports {
		if _, ok := ports[p.TargetPort]; !ok {
			t.Errorf("service targetPort %s is not a container port", p.TargetPort)
		}
	}
}
