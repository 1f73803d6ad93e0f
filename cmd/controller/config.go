package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// configFlag is the --config flag: a YAML file whose keys are the
// command's long flag names (data-dir, pki-dir, admin-token-file, ...)
// and whose values are what the flag takes; a list becomes the comma
// list a slice flag takes. Flags on the command line override it. An
// unknown key is an error naming it, so a typo never silently falls back
// to a default.
const configFlag = "config"

// addConfigFlag registers --config on cmd and applies the file before the
// command validates its required flags.
func addConfigFlag(cmd *cobra.Command) {
	cmd.Flags().String(configFlag, "", "YAML file of options: keys are these flags' names without --, values as on the command line; flags given on the command line win")
	cmd.PreRunE = func(cmd *cobra.Command, _ []string) error {
		path, _ := cmd.Flags().GetString(configFlag)
		if path == "" {
			return nil
		}
		return applyConfigFile(cmd, path)
	}
}

// applyConfigFile sets every flag the file names that the command line
// did not set.
func applyConfigFile(cmd *cobra.Command, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return usageError{fmt.Errorf("--config: %w", err)}
	}
	var doc map[string]yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		return usageError{fmt.Errorf("--config %s: %s", path, oneLine(err))}
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f := cmd.Flags().Lookup(k)
		if f == nil || k == configFlag || k == "help" {
			return usageError{fmt.Errorf("--config %s: unknown key %q (keys are the flags of %q, see --help)", path, k, cmd.CommandPath())}
		}
		if f.Changed {
			continue // the command line wins
		}
		n := doc[k]
		var val string
		switch n.Kind {
		case yaml.ScalarNode:
			val = n.Value
		case yaml.SequenceNode:
			items := make([]string, 0, len(n.Content))
			for _, it := range n.Content {
				if it.Kind != yaml.ScalarNode {
					return usageError{fmt.Errorf("--config %s: key %q: list items must be plain values", path, k)}
				}
				items = append(items, it.Value)
			}
			val = strings.Join(items, ",")
		default:
			return usageError{fmt.Errorf("--config %s: key %q: want a value or a list, line %d", path, k, n.Line)}
		}
		if err := cmd.Flags().Set(k, val); err != nil {
			return usageError{fmt.Errorf("--config %s: key %q: %s", path, k, oneLine(err))}
		}
	}
	return nil
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
