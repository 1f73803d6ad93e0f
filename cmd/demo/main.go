// Command demo runs indexgate end to end on 127.0.0.1 (see internal/demo)
// and prints a one-line summary; `make demo` runs it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/internal/demo"
)

func main() {
	var cfg demo.Config
	cmd := &cobra.Command{
		Use:           "demo",
		Short:         "Run a controller and three routers on 127.0.0.1 under load and check they converge",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cfg.Out = cmd.OutOrStdout()
			res, err := demo.Run(ctx, cfg)
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), res.Line(false, err.Error()))
				return errSilent
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Line(true, ""))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.BinDir, "bin", "bin", "directory holding the controller and router binaries")
	f.StringVar(&cfg.SwapModule, "swap-module", "bin/examples/strictha.wasm", "wasm module hot-swapped into one router's ha slot")
	f.StringVar(&cfg.WorkDir, "work-dir", "", "keep data and logs here (default: a temp dir removed afterwards)")
	f.BoolVar(&cfg.Keep, "keep", false, "keep the work dir")
	f.IntVar(&cfg.Writers, "writers", 4, "concurrent writers")
	f.IntVar(&cfg.Batches, "batches", 100, "acknowledged POSTs between two steps of the story")
	f.DurationVar(&cfg.Pace, "pace", 10*time.Millisecond, "pause of each writer between two POSTs")
	f.IntVar(&cfg.BatchSize, "batch-size", 10, "changes per POST")
	f.DurationVar(&cfg.Timeout, "timeout", 3*time.Minute, "bound for the whole run")
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		if err != errSilent {
			fmt.Fprintln(os.Stderr, "demo:", err)
		}
		os.Exit(1)
	}
}

type silent struct{}

func (silent) Error() string { return "failed" }

var errSilent error = silent{}
