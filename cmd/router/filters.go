package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
)

func newFiltersTestCmd() *cobra.Command {
	var typ, options, cacheDir string
	var callTimeout time.Duration
	cmd := &cobra.Command{
		Use:   "test FILE.wasm",
		Short: "Run the conformance checks a router runs before a module may serve",
		Long: `Test loads FILE.wasm exactly as a router would for serving an index type
(untrusted: no filesystem, network or environment, memory and time limits),
checks its imports, exports, ABI version and init, and runs the self-test
vectors. It prints one PASS/FAIL line per check and a summary, and exits 0
when every check passed, 1 otherwise.

Without --type the module is checked for legacy, and for ha when it refuses
legacy at init. Pass the --options you deploy the module with: the
self-test must pass with them.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageErr("%s takes exactly one FILE.wasm, got %d arguments", cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var types []abi.IndexType
			if typ != "" {
				t, err := abi.ParseIndexType(typ)
				if err != nil {
					return usageErr("--type %q: want legacy or ha", typ)
				}
				types = []abi.IndexType{t}
			} else {
				types = abi.IndexTypes[:]
			}
			if callTimeout <= 0 {
				return usageErr("--call-timeout %v: want a positive duration", callTimeout)
			}
			return filtersTest(cmd.Context(), cmd.OutOrStdout(), args[0], types, []byte(options), cacheDir, callTimeout)
		},
	}
	cmd.Flags().StringVar(&typ, "type", "", "index type the module is for: legacy or ha (default: detected)")
	cmd.Flags().StringVar(&options, "options", "", "options passed to the module's init")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "compilation cache directory (default: a temporary one)")
	cmd.Flags().DurationVar(&callTimeout, "call-timeout", host.DefaultCallTimeout, "deadline of every call into the module, as a router's --call-timeout")
	return cmd
}

// filtersTest checks the module at path against each candidate type until
// one gets past init, and prints that report.
func filtersTest(ctx context.Context, out io.Writer, path string, types []abi.IndexType, options []byte, cacheDir string, callTimeout time.Duration) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return failure(err)
	}
	if len(b) < len(wasmMagic) || string(b[:len(wasmMagic)]) != string(wasmMagic) {
		return failure(fmt.Errorf("%s is not a WebAssembly module (it does not start with \\0asm)", path))
	}
	if cacheDir == "" {
		// Detecting the type may check twice; one cache for both saves the
		// second compilation.
		tmp, err := os.MkdirTemp("", "router-filters-test-")
		if err != nil {
			return failure(err)
		}
		defer os.RemoveAll(tmp)
		cacheDir = tmp
	}
	m := host.Module{Name: path, Bytes: b, Trust: host.Untrusted, Options: options}
	var rep host.Report
	for i, t := range types {
		rep, err = host.Check(ctx, host.Config{CacheDir: cacheDir, CallTimeout: callTimeout}, t, m)
		if err == nil || i == len(types)-1 || !refusedType(&rep) {
			break
		}
	}
	printReport(out, &rep)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return failure(errors.New("interrupted"))
		}
		return failure(fmt.Errorf("%s: %w", path, err))
	}
	return nil
}

// refusedType reports a module that got as far as init and then refused
// the index type, so checking it for another type makes sense.
func refusedType(rep *host.Report) bool {
	for _, c := range rep.Checks {
		if !c.Pass && !c.Skipped {
			return c.Name == "init" || c.Name == "Info names the index type"
		}
	}
	return false
}

func printReport(out io.Writer, rep *host.Report) {
	fmt.Fprintf(out, "module %s\n  sha256 %s\n  checked for index type %s", rep.Name, rep.SHA256, rep.Type)
	if rep.Info.Name != "" {
		fmt.Fprintf(out, "; module reports %q version %q, ABI %d", rep.Info.Name, rep.Info.Version, rep.ABI)
	}
	fmt.Fprintln(out)
	var pass, fail, skip int
	for _, c := range rep.Checks {
		mark := "PASS"
		switch {
		case c.Skipped:
			mark = "SKIP"
			skip++
		case !c.Pass:
			mark = "FAIL"
			fail++
		default:
			pass++
		}
		if c.Detail != "" {
			fmt.Fprintf(out, "%s  %s: %s\n", mark, c.Name, firstLine(c.Detail))
		} else {
			fmt.Fprintf(out, "%s  %s\n", mark, c.Name)
		}
	}
	verdict := "PASS"
	if fail > 0 || pass == 0 {
		verdict = "FAIL"
	}
	fmt.Fprintf(out, "%s: %d passed, %d failed, %d skipped\n", verdict, pass, fail, skip)
}
