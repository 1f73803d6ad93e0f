// Command controller runs the indexgate controller (legacy mode, or a
// member of an HA cluster on raft) and its maintenance tasks: migration
// between the modes, backup and restore of its store. It is wiring only:
// flags become a controller.Config or an admin API request, and the work is
// package controller's.
//
// Exit codes: 0 success, 1 runtime failure, 2 bad flags or configuration.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/controller"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks an error the user fixes by changing the command line.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// run executes the command line args and returns the exit code; errors are
// one line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	// One line, whatever the error: joined errors become "; ".
	msg := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "controller: "), "\n", "; ")
	fmt.Fprintf(stderr, "controller: %s\n", msg)
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, controller.ErrTLSNotConfigured) || errors.Is(err, controller.ErrInvalidConfig) {
		return exitUsage
	}
	if _, ok := err.(runtimeError); ok {
		return exitFailure
	}
	// Anything cobra itself reports (unknown command, missing required
	// flag, wrong arguments) is a usage error.
	return exitUsage
}

// runtimeError marks a failure of the work itself, not of the command line.
type runtimeError struct{ err error }

func (e runtimeError) Error() string { return e.err.Error() }
func (e runtimeError) Unwrap() error { return e.err }

// failed classifies an error returned by package controller.
func failed(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, controller.ErrTLSNotConfigured) || errors.Is(err, controller.ErrInvalidConfig) {
		return usageError{err}
	}
	return runtimeError{err}
}

// logFlags are the persistent logging flags.
type logFlags struct {
	format, level string
}

func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", f.level)}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch f.format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", f.format)}
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	var lf logFlags
	root := &cobra.Command{
		Use:           "controller",
		Short:         "The indexgate controller: commits change sets and streams them to routers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&lf.format, "log-format", "text", "log format: text or json")
	pf.StringVar(&lf.level, "log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newRunCmd(&lf, stderr), newMigrateCmd(stdout), newBackupCmd(stdout), newRestoreCmd(stdout), newPKICmd(stdout),
		newRoutersCmd(stdout), newValidateCmd(stdout))
	return root
}

func newRunCmd(lf *logFlags, stderr io.Writer) *cobra.Command {
	var cfg controller.Config
	var tf tlsFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the controller until SIGINT or SIGTERM",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := lf.logger(stderr)
			if err != nil {
				return err
			}
			if err := tf.identity(&cfg); err != nil {
				return err
			}
			cfg.Logger = log
			c, err := controller.New(cfg)
			if err != nil {
				return failed(err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			err = c.Run(ctx)
			if cerr := c.Close(); err == nil {
				err = cerr
			}
			return failed(err)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory of the controller's store (required)")
	f.StringVar(&cfg.ListenAddr, "listen", controller.DefaultListenAddr, "router-facing address host:port")
	f.StringVar(&cfg.AdminAddr, "admin", controller.DefaultAdminAddr, "admin HTTP address host:port")
	f.BoolVar(&cfg.Insecure, "insecure", false, "serve routers and raft in plaintext, and without --admin-token-file leave the admin API's writes open (demos and tests only)")
	f.StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "file holding the bearer token the admin API's writes, migrations, joins and backups require (shared by all HA members)")
	f.Uint64Var(&cfg.Retention, "retention", controller.DefaultRetention, "change sets kept in the log for replay")
	f.StringVar(&cfg.NodeID, "node-id", "", "this controller's name in Welcome frames and logs (default: the host name); the raft server id with --ha")
	f.BoolVar(&cfg.HA, "ha", false, "run as a member of an HA cluster (raft); a data directory that is already a member runs HA mode anyway")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "", "raft transport address host:port of a new HA member (default on restart: the one it joined with)")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", false, "with --ha: start a new cluster from this data directory's store (a legacy store is migrated offline)")
	f.StringVar(&cfg.Join, "join", "", "with --ha: admin address (http://host:port) of a member of the cluster to join")
	f.DurationVar(&cfg.AckTimeout, "ack-timeout", controller.DefaultAckTimeout, "how long a migration waits for routers to acknowledge the last index")
	tf.register(cmd)
	addConfigFlag(cmd)
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func newBackupCmd(stdout io.Writer) *cobra.Command {
	var dataDir, admin, out string
	var tok tokenFlag
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Write a backup of the store: of a running controller via --admin, of a stopped one via --data-dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (dataDir == "") == (admin == "") {
				return usageError{errors.New("pass exactly one of --data-dir (stopped controller) and --admin (running controller)")}
			}
			ac, err := tok.client()
			if err != nil {
				return err
			}
			n, err := writeAtomically(out, func(w io.Writer) (int64, error) {
				if admin != "" {
					return fetchBackup(cmd.Context(), ac, admin, w)
				}
				return controller.BackupStore(cmd.Context(), dataDir, w)
			})
			if err != nil {
				if errors.Is(err, controller.ErrInUse) {
					err = fmt.Errorf("%w (back up a running controller with --admin)", err)
				}
				return failed(err)
			}
			fmt.Fprintf(stdout, "backup written to %s (%d bytes)\n", out, n)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "data directory of a stopped controller")
	f.StringVar(&admin, "admin", "", "admin address host:port of a running controller")
	f.StringVar(&out, "out", "", "backup file to write (required)")
	tok.register(cmd)
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func newRestoreCmd(stdout io.Writer) *cobra.Command {
	var dataDir, from string
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Install a backup as the store of a stopped controller, on a new timeline",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			res, err := controller.Restore(cmd.Context(), dataDir, from)
			if err != nil {
				return failed(err)
			}
			fmt.Fprintf(stdout, "restored %s into %s: %s index %d, %d entities, new timeline %s (backup's was %s)\n",
				from, dataDir, res.Mode, res.Index, res.Entities, res.Timeline, res.OldTimeline)
			if res.Replaced != "" {
				fmt.Fprintf(stdout, "the previous store is kept at %s\n", res.Replaced)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data-dir", "", "data directory of the (stopped) controller (required)")
	f.StringVar(&from, "from", "", "backup file to install (required)")
	_ = cmd.MarkFlagRequired("data-dir")
	_ = cmd.MarkFlagRequired("from")
	return cmd
}

// fetchBackup streams GET /v1/backup of a running controller into w.
func fetchBackup(ctx context.Context, ac adminClient, admin string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/v1/backup", nil)
	if err != nil {
		return 0, usageError{fmt.Errorf("--admin %q: %w", admin, err)}
	}
	ac.authorize(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("backup via %s: %w", admin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		return 0, fmt.Errorf("backup via %s: HTTP %d: %s", admin, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return io.Copy(w, resp.Body)
}

// writeAtomically writes path through a temporary file in the same
// directory, synced and renamed into place, so a failed backup never
// leaves a truncated file under the final name.
func writeAtomically(path string, fill func(io.Writer) (int64, error)) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	n, err := fill(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	return n, err
}
