package deploy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	sigsyaml "sigs.k8s.io/yaml"
)

// kedaDir holds KEDA's own CRDs, unmodified (third_party/keda/ORIGIN.yaml).
var kedaDir = filepath.Join(repoRoot, "third_party", "keda")

// doc is one YAML document of a manifest file.
type doc struct {
	file       string
	index      int
	raw        []byte
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

func (d doc) String() string {
	return fmt.Sprintf("%s #%d (%s %s)", d.file, d.index, d.Kind, d.Metadata.Name)
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// readDocs splits a multi-document YAML file.
func readDocs(t *testing.T, path string) []doc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []doc
	for i, part := range docSeparator.Split(string(b), -1) {
		if strings.TrimSpace(stripComments(part)) == "" {
			continue
		}
		d := doc{file: filepath.ToSlash(path), index: i, raw: []byte(part)}
		if err := sigsyaml.Unmarshal(d.raw, &d); err != nil || d.APIVersion == "" || d.Kind == "" || d.Metadata.Name == "" {
			t.Fatalf("%s #%d: no apiVersion, kind and metadata.name (%v)", path, i, err)
		}
		out = append(out, d)
	}
	return out
}

func stripComments(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// coreTypes are the built-in objects the manifests use, by apiVersion/kind.
var coreTypes = map[string]func() any{
	"v1/Namespace":                  func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                  func() any { return &corev1.ConfigMap{} },
	"v1/Service":                    func() any { return &corev1.Service{} },
	"apps/v1/Deployment":            func() any { return &appsv1.Deployment{} },
	"policy/v1/PodDisruptionBudget": func() any { return &policyv1.PodDisruptionBudget{} },
}

// decodeCore decodes a built-in object strictly into its k8s.io/api type:
// an unknown or misspelt field, a duplicate key or a wrong type fails.
func decodeCore(d doc) (any, error) {
	mk, ok := coreTypes[d.APIVersion+"/"+d.Kind]
	if !ok {
		return nil, fmt.Errorf("%s: no schema for %s/%s", d, d.APIVersion, d.Kind)
	}
	obj := mk()
	if err := sigsyaml.UnmarshalStrict(d.raw, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", d, err)
	}
	return obj, nil
}

// crdSchema validates custom objects as the API server does: the CRD's
// OpenAPI schema, pruning of unknown fields (reported, as kubectl's strict
// field validation does), and its CEL rules.
type crdSchema struct {
	apiVersion, kind string
	validator        validation.SchemaValidator
	structural       *structuralschema.Structural
	cel              *cel.Validator
}

func loadCRD(t testing.TB, name string) *crdSchema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(kedaDir, name))
	if err != nil {
		t.Fatal(err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := sigsyaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	for _, v := range crd.Spec.Versions {
		if !v.Served || !v.Storage || v.Schema == nil {
			continue
		}
		var props apiextensions.JSONSchemaProps
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, &props, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		sv, _, err := validation.NewSchemaValidator(&props)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		st, err := structuralschema.NewStructural(&props)
		if err != nil {
			t.Fatalf("%s: not a structural schema: %v", name, err)
		}
		return &crdSchema{apiVersion: crd.Spec.Group + "/" + v.Name, kind: crd.Spec.Names.Kind,
			validator: sv, structural: st, cel: cel.NewValidator(st, true, celconfig.PerCallLimit)}
	}
	t.Fatalf("%s: no served storage version with a schema", name)
	return nil
}

// validate returns every way the object breaks the schema.
func (c *crdSchema) validate(d doc) []string {
	// Decoded as the API server decodes a request body: whole numbers
	// become int64, as the schema and CEL expect.
	js, err := sigsyaml.YAMLToJSONStrict(d.raw)
	if err != nil {
		return []string{err.Error()}
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(js, &obj); err != nil {
		return []string{err.Error()}
	}
	var problems []string
	if d.APIVersion != c.apiVersion {
		problems = append(problems, fmt.Sprintf("apiVersion %s, want %s", d.APIVersion, c.apiVersion))
	}
	var errs field.ErrorList
	errs = append(errs, validation.ValidateCustomResource(nil, obj, c.validator)...)
	if c.cel != nil {
		celErrs, _ := c.cel.Validate(context.Background(), nil, c.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	for _, e := range errs {
		problems = append(problems, e.Error())
	}
	// The root's metadata is not in the CRD schema: the API server reads
	// it as ObjectMeta.
	if m, ok := obj["metadata"]; ok {
		b, _ := sigsyaml.Marshal(m)
		if err := sigsyaml.UnmarshalStrict(b, &metav1.ObjectMeta{}); err != nil {
			problems = append(problems, "metadata: "+err.Error())
		}
	}
	pruned := pruning.PruneWithOptions(obj, c.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range pruned {
		problems = append(problems, "unknown field "+p)
	}
	sort.Strings(problems)
	return problems
}

// checkDoc validates one document against its real schema.
func checkDoc(d doc, crds map[string]*crdSchema) error {
	if c, ok := crds[d.Kind]; ok {
		if problems := c.validate(d); len(problems) > 0 {
			return fmt.Errorf("%s:\n  %s", d, strings.Join(problems, "\n  "))
		}
		return nil
	}
	_, err := decodeCore(d)
	return err
}

func kedaCRDs(t testing.TB) map[string]*crdSchema {
	out := map[string]*crdSchema{}
	for _, name := range []string{"keda.sh_scaledobjects.yaml", "keda.sh_scaledjobs.yaml"} {
		c := loadCRD(t, name)
		out[c.kind] = c
	}
	return out
}

// manifestFiles are every Kubernetes manifest shipped.
func manifestFiles(t *testing.T) []string {
	files, _ := filepath.Glob(filepath.Join("keda", "*.yaml"))
	files = append(files, "kubernetes.yaml")
	if len(files) < 6 {
		t.Fatalf("manifests: %v", files)
	}
	return files
}

// Every object of every manifest decodes strictly into its Kubernetes
// type or validates against KEDA's CRD.
func TestManifestsMatchTheirSchemas(t *testing.T) {
	crds := kedaCRDs(t)
	kinds := map[string]int{}
	for _, f := range manifestFiles(t) {
		for _, d := range readDocs(t, f) {
			kinds[d.Kind]++
			if err := checkDoc(d, crds); err != nil {
				t.Error(err)
			}
		}
	}
	for _, k := range []string{"Namespace", "ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "ScaledJob"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in the manifests", k)
		}
	}
}

// The checks catch what they are for: a misspelt field anywhere, a value
// of the wrong type, a broken CEL rule.
func TestSchemaChecksCatchMistakes(t *testing.T) {
	crds := kedaCRDs(t)
	byKind := map[string]doc{}
	for _, f := range []string{"keda/workers.yaml", "keda/observer.yaml", "keda/scaledobject-prometheus.yaml", "keda/scaledjob.yaml"} {
		for _, d := range readDocs(t, filepath.FromSlash(f)) {
			if _, seen := byKind[d.Kind]; !seen {
				byKind[d.Kind] = d
			}
		}
	}
	for _, tc := range []struct {
		kind, old, new, want string
	}{
		{"Deployment", "terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", "unknown field"},
		{"Deployment", "      nodeSelector:", "      nodeSelecter:", "unknown field"},
		{"Service", "targetPort: metrics", "targetPort: metrics\n      tagetPort: x", "unknown field"},
		{"PodDisruptionBudget", "maxUnavailable: 1", "maxUnavaliable: 1", "unknown field"},
		{"ScaledObject", "cooldownPeriod:", "cooldownPeriods:", "unknown field spec.cooldownPeriods"},
		{"ScaledObject", "minReplicaCount: 0", "minReplicaCount: 9", "minReplicaCount must be less than or equal to maxReplicaCount"},
		{"ScaledObject", `threshold: "1"`, `threshold: 1`, "spec.triggers[0].metadata.threshold"},
		{"ScaledObject", "stabilizationWindowSeconds: 900", "stabilisationWindowSeconds: 900", "unknown field spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilisationWindowSeconds"},
		{"ScaledJob", "restartPolicy: OnFailure", "restartPolicy: OnFailure\n        restartPolicyy: Never", "unknown field spec.jobTargetRef.template.spec.restartPolicyy"},
		{"ScaledJob", "          nvidia.com/gpu.present", "          nvidia.com/gpu.present: \"true\"\n        nodeSelectors:\n          x", "unknown field spec.jobTargetRef.template.spec.nodeSelectors"},
		{"ScaledJob", "strategy: accurate", "strategy: accurate\n    pendingPodCondition: []", "unknown field spec.scalingStrategy.pendingPodCondition"},
		{"ScaledJob", "  name: gpu-worker\n", "  name: gpu-worker\n  lables: {}\n", "metadata: error unmarshaling JSON"},
	} {
		d, ok := byKind[tc.kind]
		if !ok {
			t.Fatalf("no %s to break", tc.kind)
		}
		if err := checkDoc(d, crds); err != nil {
			t.Fatalf("the shipped %s is not valid: %v", tc.kind, err)
		}
		broken := strings.Replace(string(d.raw), tc.old, tc.new, 1)
		if broken == string(d.raw) {
			t.Fatalf("%s: %q not found", tc.kind, tc.old)
		}
		d.raw = []byte(broken)
		err := checkDoc(d, crds)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s with %q: %v, want an error about %q", tc.kind, tc.new, err, tc.want)
		}
	}
}

// jobTemplate is a ScaledJob's jobTargetRef decoded strictly as the
// batch/v1 JobSpec KEDA makes of it.
func jobTemplate(t *testing.T, d doc) batchv1.JobSpec {
	t.Helper()
	var sj struct {
		Spec struct {
			JobTargetRef batchv1.JobSpec `json:"jobTargetRef"`
		} `json:"spec"`
	}
	var loose map[string]any
	sigsyaml.Unmarshal(d.raw, &loose)
	spec, _ := loose["spec"].(map[string]any)
	b, _ := sigsyaml.Marshal(map[string]any{"spec": map[string]any{"jobTargetRef": spec["jobTargetRef"]}})
	if err := sigsyaml.UnmarshalStrict(b, &sj); err != nil {
		t.Fatalf("%s: jobTargetRef: %v", d, err)
	}
	return sj.Spec.JobTargetRef
}
