package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the router failed at run time, or a module failed its checks
	exitUsage   = 2 // bad flags, arguments or configuration
)

// exitError carries the exit code an error maps to. Errors without one
// come from cobra's own argument handling: usage errors.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

func failure(err error) error { return &exitError{code: exitFailure, err: err} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs the command line args and returns the exit code; every
// error is one line on stderr.
func execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stderr)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitUsage
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	// Errors from package router already say where they come from.
	fmt.Fprintln(stderr, "router:", firstLine(strings.TrimPrefix(err.Error(), "router: ")))
	return code
}

func newRootCmd(stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "router",
		Short:         "indexgate edge router: applies the controller's change sets through WebAssembly filters",
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr("missing command: run `router run` or `router filters test` (see --help)")
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr("%v", err) })
	filters := &cobra.Command{
		Use:   "filters",
		Short: "Work with filter modules: check, sign, swap, canary, promote, roll back",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErr("missing command: run `router filters test|keygen|sign|verify|swap|shadow|promote|rollback` (see --help)")
		},
	}
	filters.AddCommand(newFiltersTestCmd(), newKeygenCmd(), newSignCmd(), newVerifyCmd(),
		newSwapCmd(), newShadowCmd(), newPromoteCmd(), newRollbackCmd())
	root.AddCommand(newRunCmd(stderr), filters)
	return root
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErr("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

// firstLine cuts a message at its first newline: a trap's error carries a
// wasm stack trace, and the report is one line.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
