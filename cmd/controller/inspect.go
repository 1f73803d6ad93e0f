package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/controller"
)

// errMismatch is validate's failure: the report is already printed.
var errMismatch = errors.New("validation failed: at least one router's model differs from the controller's or it did not answer")

func checkAdmin(admin string) error {
	if _, _, err := net.SplitHostPort(admin); err != nil {
		return usageError{fmt.Errorf("--admin %q: %v", admin, err)}
	}
	return nil
}

func newRoutersCmd(stdout io.Writer) *cobra.Command {
	var admin string
	var all bool
	cmd := &cobra.Command{
		Use:   "routers",
		Short: "List the routers of a running controller with their position and lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAdmin(admin); err != nil {
				return err
			}
			var st controller.Status
			if err := (adminClient{}).call(cmd.Context(), http.MethodGet, admin, "/v1/status", nil, &st); err != nil {
				return runtimeError{fmt.Errorf("status via %s: %w", admin, err)}
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "ROUTER\tSTATE\tTYPE\tACKED\tSENT\tLAG\tRESUME\tREMOTE\tSINCE\n")
			for _, r := range st.Routers {
				state, since := "connected", r.ConnectedAt
				if !r.Connected {
					if !all {
						continue
					}
					state, since = "gone", r.DisconnectedAt
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.ID, state, r.AckedType, r.AckedIndex, r.SentIndex,
					r.Lag, r.Resume, r.Remote, since.Format(time.RFC3339))
			}
			if err := tw.Flush(); err != nil {
				return runtimeError{err}
			}
			fmt.Fprintf(stdout, "controller %s: %s index %d\n", st.NodeID, st.Mode, st.Index)
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "admin", controller.DefaultAdminAddr, "admin address host:port of the controller")
	cmd.Flags().BoolVar(&all, "all", false, "also list routers that disconnected since the controller started")
	return cmd
}

func newValidateCmd(stdout io.Writer) *cobra.Command {
	var admin string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "Compare every connected router's model digest with the controller's; exit 1 on a mismatch",
		Long: `validate asks the controller to send every connected router a digest
request and compares each answer with the controller's digest at the same
position. A router that differs holds a model the change sets it was sent
do not explain: restart it with an empty store (it then gets a full state).
A router still catching up is asked again until --timeout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkAdmin(admin); err != nil {
				return err
			}
			if timeout <= 0 {
				return usageError{fmt.Errorf("--timeout %v must be positive", timeout)}
			}
			// The HTTP call gets a little longer than the controller's own
			// deadline, so the report arrives rather than a timeout.
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			var v controller.Validation
			if err := (adminClient{}).call(ctx, http.MethodGet, admin, "/v1/validate?timeout="+timeout.String(), nil, &v); err != nil {
				return runtimeError{fmt.Errorf("validate via %s: %w", admin, err)}
			}
			tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "ROUTER\tPOSITION\tENTITIES\tDIGEST\tRESULT\n")
			for _, r := range v.Routers {
				res := "ok"
				switch {
				case r.Error != "":
					res = "UNKNOWN: " + r.Error
				case !r.Match:
					res = "MISMATCH (controller " + r.ControllerDigest + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", r.ID, r.Position, r.Entities, r.Digest, res)
			}
			if err := tw.Flush(); err != nil {
				return runtimeError{err}
			}
			fmt.Fprintf(stdout, "controller at %s: %d entities, digest %s; %d routers checked\n", v.Position, v.Entities, v.Digest, len(v.Routers))
			if !v.OK {
				return runtimeError{errMismatch}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&admin, "admin", controller.DefaultAdminAddr, "admin address host:port of the controller")
	cmd.Flags().DurationVar(&timeout, "timeout", controller.DefaultValidateTimeout, "how long routers get to catch up and answer")
	return cmd
}
