package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// applyConfigFile sets every flag that the command line left unset from
// the YAML file at path: a mapping from flag names (without "--") to a
// value, or a list of values for a repeatable flag. It is strict: an
// unknown or repeated key, a list for a single-valued flag, or a value the
// flag refuses is an error naming the key and its line. Keeping the keys
// the flag names means the file needs no documentation of its own and
// cannot drift from the flags.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usageErr("--config: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return usageErr("--config %s: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file sets nothing
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return usageErr("--config %s: line %d: want a mapping of option: value", path, root.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		bad := func(format string, a ...any) error {
			return usageErr("--config %s: line %d: key %q: %s", path, k.Line, k.Value, fmt.Sprintf(format, a...))
		}
		fl := fs.Lookup(k.Value)
		if k.Kind != yaml.ScalarNode || fl == nil || k.Value == "config" || k.Value == "help" {
			return usageErr("--config %s: line %d: unknown key %q (the keys are the flags of router run, without --)", path, k.Line, k.Value)
		}
		if seen[k.Value] {
			return bad("given twice")
		}
		seen[k.Value] = true
		values, err := nodeValues(v, repeatable(fl))
		if err != nil {
			return bad("%v", err)
		}
		if fs.Changed(k.Value) {
			continue // the command line wins
		}
		for _, val := range values {
			if err := fs.Set(k.Value, val); err != nil {
				return bad("%v", err)
			}
		}
	}
	return nil
}

// repeatable reports a flag that takes several values.
func repeatable(fl *pflag.Flag) bool {
	t := fl.Value.Type()
	return strings.HasSuffix(t, "Slice") || strings.HasSuffix(t, "Array")
}

// nodeValues returns a node's value(s) as the strings a flag parses.
func nodeValues(v *yaml.Node, list bool) ([]string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return nil, fmt.Errorf("no value")
		}
		return []string{v.Value}, nil
	case yaml.SequenceNode:
		if !list {
			return nil, fmt.Errorf("takes one value, not a list")
		}
		out := make([]string, 0, len(v.Content))
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return nil, fmt.Errorf("line %d: list items must be plain values", item.Line)
			}
			out = append(out, item.Value)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a value or a list of values")
}
