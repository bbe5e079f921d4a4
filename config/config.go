// Package config resolves command-line settings from flags, the
// environment and an optional YAML file, in that order of precedence.
package config

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"strings"

	"gopkg.in/yaml.v3"
)

// Set is a FlagSet whose unset flags fall back to an environment variable
// and then to a config file key of the flag's name.
type Set struct {
	*flag.FlagSet
	env     map[string]string // flag name → environment variable
	aliases map[string]string // alias → flag name
	cmdline map[string]bool   // flags given on the command line (by name or alias)
}

// New makes a Set; --config FILE names the YAML file (keys = flag names).
func New(name string) *Set {
	s := &Set{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), env: map[string]string{}, aliases: map[string]string{}}
	s.String("config", "", "YAML config file; keys are flag names (env GPU_WORKER_CONFIG)")
	s.env["config"] = "GPU_WORKER_CONFIG"
	return s
}

// Env ties a flag to an environment variable and says so in --help.
func (s *Set) Env(flagName, variable string) {
	s.env[flagName] = variable
	if f := s.Lookup(flagName); f != nil {
		f.Usage += " (env " + variable + ")"
	}
}

// Alias lets --alias set flag name, as a short spelling of it; a value given
// through the alias outranks the environment and the file like the flag's own.
func (s *Set) Alias(alias, name string) {
	f := s.Lookup(name)
	if f == nil {
		panic("config: alias " + alias + " of unknown flag " + name)
	}
	s.Var(f.Value, alias, "same as --"+name)
	s.aliases[alias] = name
}

// FromCommandLine reports whether the flag (or an alias of it) was given on
// the command line, not filled from the environment or the config file.
func (s *Set) FromCommandLine(name string) bool { return s.cmdline[name] }

// Parse applies flags, then the environment, then the config file.
func (s *Set) Parse(args []string) error {
	if err := s.FlagSet.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	s.Visit(func(f *flag.Flag) {
		set[f.Name] = true
		if name, ok := s.aliases[f.Name]; ok {
			set[name] = true
		}
	})
	// Set marks the flags the environment and the file fill as set too;
	// only these came from the command line.
	s.cmdline = maps.Clone(set)
	apply := func(name, value, from string) error {
		if err := s.Set(name, value); err != nil {
			return fmt.Errorf("%s: invalid value %q for %s: %w", from, value, name, err)
		}
		set[name] = true
		return nil
	}
	// The config file path itself may come from the environment.
	if v, ok := os.LookupEnv(s.env["config"]); ok && !set["config"] && v != "" {
		if err := apply("config", v, "environment "+s.env["config"]); err != nil {
			return err
		}
	}
	for name, variable := range s.env {
		if v, ok := os.LookupEnv(variable); ok && !set[name] && v != "" {
			if err := apply(name, v, "environment "+variable); err != nil {
				return err
			}
		}
	}
	path := s.Lookup("config").Value.String()
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config file: %w", err)
	}
	var file map[string]any
	if err := yaml.Unmarshal(data, &file); err != nil {
		return fmt.Errorf("parse config file %s: %w", path, err)
	}
	for key, v := range file {
		name := strings.ReplaceAll(key, "_", "-")
		if canonical, ok := s.aliases[name]; ok {
			name = canonical
		}
		if s.Lookup(name) == nil {
			return fmt.Errorf("config file %s: unknown setting %q", path, key)
		}
		if set[name] {
			continue
		}
		var value string
		switch x := v.(type) {
		case []any:
			parts := make([]string, len(x))
			for i, p := range x {
				parts[i] = fmt.Sprint(p)
			}
			value = strings.Join(parts, ",")
		default:
			value = fmt.Sprint(x)
		}
		if err := apply(name, value, "config file "+path); err != nil {
			return err
		}
	}
	return nil
}
