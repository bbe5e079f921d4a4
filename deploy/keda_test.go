package deploy

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	sigsyaml "sigs.k8s.io/yaml"

	"gpu-worker/metrics"
)

// fleet is the elastic fleet's manifests, decoded.
type fleet struct {
	config      *corev1.ConfigMap
	observer    *appsv1.Deployment
	observerSvc *corev1.Service
	workers     *appsv1.Deployment
	pdb         *policyv1.PodDisruptionBudget
	scaledJob   doc
	scaled      map[string]doc // ScaledObject variants by file
}

func loadFleet(t *testing.T) fleet {
	t.Helper()
	f := fleet{scaled: map[string]doc{}}
	for _, path := range manifestFiles(t) {
		if !strings.HasPrefix(path, "keda") {
			continue
		}
		for _, d := range readDocs(t, path) {
			if d.Kind != "Namespace" && d.Metadata.Namespace != "gpu-worker" {
				t.Errorf("%s: outside the gpu-worker namespace", d)
			}
			switch d.Kind {
			case "ScaledObject":
				f.scaled[filepath.Base(path)] = d
				continue
			case "ScaledJob":
				f.scaledJob = d
				continue
			case "Namespace":
				continue
			}
			obj, err := decodeCore(d)
			if err != nil {
				t.Fatal(err)
			}
			switch o := obj.(type) {
			case *corev1.ConfigMap:
				f.config = o
			case *corev1.Service:
				f.observerSvc = o
			case *policyv1.PodDisruptionBudget:
				f.pdb = o
			case *appsv1.Deployment:
				if o.Name == "gpu-worker" {
					f.workers = o
				} else {
					f.observer = o
				}
			}
		}
	}
	if f.config == nil || f.observer == nil || f.observerSvc == nil || f.workers == nil || f.pdb == nil || f.scaledJob.raw == nil || len(f.scaled) != 2 {
		t.Fatalf("incomplete fleet: %+v", f)
	}
	return f
}

// workerPod checks what every GPU worker pod needs: a GPU, a GPU node, a
// grace period over the worker's stop timeout, the config and token, and
// settings the binary knows.
func workerPod(t *testing.T, name string, pod corev1.PodTemplateSpec, flags, env map[string]bool) {
	t.Helper()
	spec := pod.Spec
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second < shippedStopTimeout(t)+stopMargin {
		t.Errorf("%s: terminationGracePeriodSeconds must exceed the stop timeout %v by %v", name, shippedStopTimeout(t), stopMargin)
	}
	if spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Errorf("%s: no GPU node selector", name)
	}
	tolerated := false
	for _, tol := range spec.Tolerations {
		tolerated = tolerated || (tol.Key == "nvidia.com/gpu" && tol.Effect == corev1.TaintEffectNoSchedule)
	}
	if !tolerated {
		t.Errorf("%s: does not tolerate the GPU nodes' taint", name)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", name, len(spec.Containers))
	}
	c := spec.Containers[0]
	if q := c.Resources.Limits["nvidia.com/gpu"]; q.Value() != 1 {
		t.Errorf("%s: nvidia.com/gpu limit %v, want 1", name, q.String())
	}
	if len(c.Args) == 0 || c.Args[0] != "run" {
		t.Errorf("%s: args %v", name, c.Args)
	}
	checkArgs(t, name, c.Args[1:], flags)
	checkEnv(t, name, c, env)
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("%s: readiness is not the first scan (/readyz)", name)
	}
	if pod.Annotations["prometheus.io/scrape"] != "true" || pod.Annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] != "false" ||
		pod.Annotations["karpenter.sh/do-not-disrupt"] != "true" {
		t.Errorf("%s: annotations %v", name, pod.Annotations)
	}
}

func checkArgs(t *testing.T, name string, args []string, flags map[string]bool) {
	t.Helper()
	for _, a := range args {
		if f, ok := strings.CutPrefix(a, "--"); ok && !flags[strings.SplitN(f, "=", 2)[0]] {
			t.Errorf("%s: %s is not a flag of gpu-worker", name, a)
		}
	}
}

func checkEnv(t *testing.T, name string, c corev1.Container, env map[string]bool) {
	t.Helper()
	has := map[string]bool{}
	for _, e := range c.Env {
		has[e.Name] = true
		if ownVariable(e.Name) && !env[e.Name] {
			t.Errorf("%s: env %s is not a variable gpu-worker reads", name, e.Name)
		}
	}
	if has["GITLAB_TOKEN"] || !has["GPU_WORKER_CONFIG"] {
		t.Errorf("%s: needs GPU_WORKER_CONFIG, and the token as a file, not GITLAB_TOKEN", name)
	}
	// The token: --token-file naming a file of the secret volume.
	file := ""
	for i, a := range c.Args {
		if a == "--token-file" && i+1 < len(c.Args) {
			file = c.Args[i+1]
		}
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == "token" && m.ReadOnly && strings.HasPrefix(file, m.MountPath+"/") {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("%s: --token-file %q is not in the read-only token volume", name, file)
	}
}

func TestElasticFleet(t *testing.T) {
	flags, env := binarySettings(t)
	f := loadFleet(t)
	cfg := checkConfig(t, "keda/common.yaml config.yaml", []byte(f.config.Data["config.yaml"]), flags)
	for _, k := range []string{"claim-timeout", "max-job-retries", "stop-timeout", "listen-address"} {
		if cfg[k] == nil {
			t.Errorf("the shared config must set %s (observer and workers must agree)", k)
		}
	}
	_, listenPort, _ := strings.Cut(fmt.Sprint(cfg["listen-address"]), ":")
	if d, err := time.ParseDuration(fmt.Sprint(cfg["stop-timeout"])); err != nil || d != shippedStopTimeout(t) {
		t.Errorf("stop-timeout %v differs from the shipped %v (the grace periods are checked against that)", cfg["stop-timeout"], shippedStopTimeout(t))
	}

	// Workers: a Deployment the ScaledObject owns.
	if f.workers.Spec.Replicas != nil {
		t.Errorf("the worker Deployment sets replicas: re-applying it would fight the autoscaler")
	}
	workerPod(t, "workers.yaml", f.workers.Spec.Template, flags, env)
	sel, err := metav1.LabelSelectorAsSelector(f.pdb.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(f.workers.Spec.Template.Labels)) {
		t.Errorf("the PodDisruptionBudget does not select the workers (%v)", err)
	}
	if f.pdb.Spec.MaxUnavailable == nil || f.pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget: maxUnavailable %v, want 1", f.pdb.Spec.MaxUnavailable)
	}

	// The ScaledJob runs the same pod, exiting when idle.
	job := jobTemplate(t, f.scaledJob)
	workerPod(t, "scaledjob.yaml", job.Template, flags, env)
	args := job.Template.Spec.Containers[0].Args
	idle := ""
	for i, a := range args {
		if a == "--exit-when-idle" && i+1 < len(args) {
			idle = args[i+1]
		}
	}
	if d, err := time.ParseDuration(idle); err != nil || d < time.Minute {
		t.Errorf("scaledjob.yaml: --exit-when-idle %q: want a duration of a minute or more (a scrape must see the last outcome)", idle)
	}
	if p := job.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
		t.Errorf("scaledjob.yaml: restartPolicy %s", p)
	}
	a, b := f.workers.Spec.Template.DeepCopy(), job.Template.DeepCopy()
	for _, p := range []*corev1.PodTemplateSpec{a, b} {
		p.Spec.RestartPolicy = ""
		p.Spec.Containers[0].Args = nil
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("the ScaledJob's pod differs from the worker Deployment's beyond args and restart policy:\n%s\n%s", mustJSON(a), mustJSON(b))
	}

	// The observer: small, no GPU, scraped, behind a Service.
	obs := f.observer.Spec.Template
	c := obs.Spec.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "observe" {
		t.Errorf("observer args %v", c.Args)
	}
	checkArgs(t, "observer.yaml", c.Args[1:], flags)
	checkEnv(t, "observer.yaml", c, env)
	if _, gpu := c.Resources.Limits["nvidia.com/gpu"]; gpu || obs.Spec.NodeSelector != nil {
		t.Errorf("the observer must run on any node, without a GPU")
	}
	if c.Resources.Requests.Cpu().MilliValue() > 500 || c.Resources.Limits.Memory().Value() > 1<<30 {
		t.Errorf("the observer is not small: %v", c.Resources)
	}
	if obs.Annotations["prometheus.io/scrape"] != "true" || obs.Annotations["prometheus.io/port"] != listenPort {
		t.Errorf("observer scrape annotations %v, listen port %s", obs.Annotations, listenPort)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if fmt.Sprint(ports["metrics"]) != listenPort {
		t.Errorf("observer port %d, listen-address %v", ports["metrics"], cfg["listen-address"])
	}
	svc := f.observerSvc
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(obs.Labels)) || len(svc.Spec.Ports) != 1 ||
		ports[svc.Spec.Ports[0].TargetPort.String()] == 0 {
		t.Errorf("the observer Service does not reach the observer: %+v", svc.Spec)
	}
	if svc.Annotations["prometheus.io/scrape"] != "" {
		t.Errorf("scrape annotations on the Service too: the observer would be scraped twice")
	}
	queueURL := fmt.Sprintf("http://%s.%s.svc:%d/queue", svc.Name, svc.Namespace, svc.Spec.Ports[0].Port)

	// KEDA: every trigger reads what the observer serves.
	scalerKeys := kedaScalerMetadata(t)
	type trigger struct {
		Type     string            `json:"type"`
		Metadata map[string]string `json:"metadata"`
	}
	type scaledSpec struct {
		Spec struct {
			ScaleTargetRef  struct{ APIVersion, Kind, Name string } `json:"scaleTargetRef"`
			MinReplicaCount *int                                    `json:"minReplicaCount"`
			Triggers        []trigger                               `json:"triggers"`
		} `json:"spec"`
	}
	checkTriggers := func(name string, ts []trigger, wantValue string) {
		if len(ts) != 1 {
			t.Fatalf("%s: %d triggers", name, len(ts))
		}
		tr := ts[0]
		known, ok := scalerKeys[tr.Type]
		if !ok {
			t.Fatalf("%s: trigger type %s", name, tr.Type)
		}
		for k := range tr.Metadata {
			if !known[k] {
				t.Errorf("%s: %s is not a metadata field of KEDA's %s scaler", name, k, tr.Type)
			}
		}
		switch tr.Type {
		case "metrics-api":
			if tr.Metadata["url"] != queueURL {
				t.Errorf("%s: url %s, want the observer's %s", name, tr.Metadata["url"], queueURL)
			}
			if tr.Metadata["valueLocation"] != wantValue || !reportNumber(wantValue) {
				t.Errorf("%s: valueLocation %q, want %q (a number of /queue)", name, tr.Metadata["valueLocation"], wantValue)
			}
		case "prometheus":
			if _, err := url.Parse(tr.Metadata["serverAddress"]); err != nil || !strings.Contains(tr.Metadata["query"], "gpu_worker_jobs_runnable") {
				t.Errorf("%s: %v", name, tr.Metadata)
			}
			if tr.Metadata["ignoreNullValues"] != "false" {
				t.Errorf("%s: without ignoreNullValues: \"false\" a missing observer scales the fleet to zero under running jobs", name)
			}
		}
	}
	for name, d := range f.scaled {
		var spec scaledSpec
		if err := sigsyaml.Unmarshal(d.raw, &spec); err != nil {
			t.Fatal(err)
		}
		ref := spec.Spec.ScaleTargetRef
		if ref.Name != f.workers.Name || (ref.Kind != "" && ref.Kind != "Deployment") {
			t.Errorf("%s: scales %s %s, not the worker Deployment", name, ref.Kind, ref.Name)
		}
		if spec.Spec.MinReplicaCount == nil || *spec.Spec.MinReplicaCount != 0 {
			t.Errorf("%s: does not scale to zero", name)
		}
		// A Deployment must count running jobs too, or it would be
		// scaled down under them.
		checkTriggers(name, spec.Spec.Triggers, "wanted")
	}
	var sj scaledSpec
	if err := sigsyaml.Unmarshal(f.scaledJob.raw, &sj); err != nil {
		t.Fatal(err)
	}
	checkTriggers("scaledjob.yaml", sj.Spec.Triggers, "runnable")
}

// reportNumber reports whether name is a top-level number of /queue.
func reportNumber(name string) bool {
	typ := reflect.TypeOf(metrics.QueueReport{})
	for i := range typ.NumField() {
		f := typ.Field(i)
		if strings.Split(f.Tag.Get("json"), ",")[0] == name {
			return f.Type.Kind() == reflect.Int || f.Type.Kind() == reflect.Float64
		}
	}
	return false
}

// kedaScalerMetadata reads the trigger metadata names of the scalers the
// manifests use from KEDA's sources (third_party/keda/scalers).
func kedaScalerMetadata(t *testing.T) map[string]map[string]bool {
	t.Helper()
	tag := regexp.MustCompile(`keda:"name=([A-Za-z]+),\s*order=triggerMetadata`)
	out := map[string]map[string]bool{}
	for typ, file := range map[string]string{"prometheus": "prometheus_scaler.go.txt", "metrics-api": "metrics_api_scaler.go.txt"} {
		b, err := os.ReadFile(filepath.Join(kedaDir, "scalers", file))
		if err != nil {
			t.Fatal(err)
		}
		out[typ] = map[string]bool{}
		for _, m := range tag.FindAllStringSubmatch(string(b), -1) {
			out[typ][m[1]] = true
		}
		if len(out[typ]) < 5 {
			t.Fatalf("%s: found only %v", file, out[typ])
		}
	}
	return out
}

func mustJSON(v any) string {
	b, _ := json.MarshalIndent(v, "", " ")
	return string(b)
}
