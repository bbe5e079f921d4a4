package contract

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// configs are every command struct the worker sends, with its engine.
func configs() []Config {
	return []Config{&StableTTSTrain{}, &StableTTSSynthesize{}, &StableTTSEvaluate{}, &StableTTSCheck{},
		NewCTCTrain("w2v2bert"), NewCTCTrain("mms"), NewCTCTranscribe("w2v2bert"), NewMMSTranscribe(), &HubFetch{}}
}

// enginesSchema is what the engines print now.
func enginesSchema(t *testing.T) []byte {
	t.Helper()
	python := os.Getenv("GPU_WORKER_PYTHON")
	if python == "" {
		out, err := exec.Command(filepath.Join("..", "scripts", "engines-env.sh")).Output()
		if err != nil {
			t.Fatalf("the engines' Python environment is required (scripts/engines-env.sh): %v", err)
		}
		python = filepath.Join(strings.TrimSpace(string(out)), "bin", "python")
	}
	cmd := exec.Command(python, "-m", "gpuworker_engines", "schema")
	cmd.Dir = filepath.Join("..", "engines")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python -m gpuworker_engines schema: %v", err)
	}
	return out
}

// The embedded schema is exactly the engines' own: a default changed in an
// engine reaches `gpu-worker models`, memory estimates and retries.
func TestEmbeddedSchemaIsTheEngines(t *testing.T) {
	var now, embedded any
	if err := json.Unmarshal(enginesSchema(t), &now); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(schemaJSON, &embedded); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(now, embedded) {
		t.Fatal("contract/schema.json differs from what the engines print: run `make schema`")
	}
	if _, err := Parse(schemaJSON); err != nil {
		t.Fatal(err)
	}
}

// Every field of every struct is a key of its command, of the schema's
// type; every key the engine requires is a field the worker fills.
func TestStructsMatchTheSchema(t *testing.T) {
	s := Engines()
	for _, c := range configs() {
		engine, command := c.Engine()
		cmd, ok := s.Command(engine, command)
		if !ok {
			t.Errorf("%T: the engines have no command %s %s", c, engine, command)
			continue
		}
		checkStruct(t, engine+" "+command, reflect.TypeOf(c).Elem(), cmd.Fields)
	}
}

func checkStruct(t *testing.T, where string, typ reflect.Type, fields map[string]Field) {
	t.Helper()
	sent := map[string]bool{}
	var walk func(reflect.Type)
	walk = func(typ reflect.Type) {
		for i := 0; i < typ.NumField(); i++ {
			sf := typ.Field(i)
			if sf.Anonymous {
				walk(sf.Type)
				continue
			}
			tag := sf.Tag.Get("json")
			if tag == "" || !sf.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			f, ok := fields[name]
			if !ok {
				t.Errorf("%s: %s (%s) is not a key the engine declares", where, name, sf.Name)
				continue
			}
			sent[name] = !strings.Contains(opts, "omitempty")
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if want := schemaType(ft); want != f.Type && !(want == "str" && f.Type == "path") {
				t.Errorf("%s: %s is %s in Go, %s in the engine", where, name, want, f.Type)
			}
			if ft.Kind() == reflect.Struct {
				checkStruct(t, where+" "+name, ft, f.Fields)
			}
		}
	}
	walk(typ)
	for name, f := range fields {
		if f.Required && !sent[name] {
			t.Errorf("%s: the engine requires %s; the worker does not always send it", where, name)
		}
	}
}

func schemaType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "int"
	case reflect.Float64:
		return "float"
	case reflect.Bool:
		return "bool"
	case reflect.String:
		return "str"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String {
			return "list[str]"
		}
	case reflect.Struct:
		return "object"
	}
	return t.String()
}

// A key the engine does not declare is refused before the engine starts,
// named, at any depth.
func TestCheckNamesUnknownKeys(t *testing.T) {
	s := Engines()
	type misspelt struct {
		StableTTSTrain
		SaveIntervall int `json:"save_intervall"`
	}
	err := s.Check("stabletts", "train", misspelt{SaveIntervall: 5})
	if err == nil || !strings.Contains(err.Error(), "save_intervall") {
		t.Fatalf("err = %v", err)
	}
	nested := map[string]any{"dataset": "d", "output_dir": "o", "lm": map[string]any{"ordr": 3}}
	if err := s.Check("w2v2bert", "train", nested); err == nil || !strings.Contains(err.Error(), "lm.ordr") {
		t.Fatalf("nested: err = %v", err)
	}
	if err := s.Check("stabletts", "train", &StableTTSTrain{Train: Train{Dataset: "d", OutputDir: "o", WarmupSteps: Ptr(0)}}); err != nil {
		t.Fatalf("a valid config refused: %v", err)
	}
}
