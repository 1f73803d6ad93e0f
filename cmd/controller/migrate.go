package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/controller"
	"github.com/indexgate/indexgate/internal/adminhttp"
)

// pollInterval is how often migrate looks at the controller's status.
const pollInterval = 200 * time.Millisecond

func newMigrateCmd(stdout io.Writer) *cobra.Command {
	var admin, to, nodeID, raftAddr string
	var timeout time.Duration
	var tok tokenFlag
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Migrate a running legacy controller to HA mode (--to ha), or roll an HA cluster back to legacy mode (--to legacy)",
		Long: `migrate asks a running controller to switch modes and prints the progress until it is done.

  controller migrate --to ha --admin HOST:PORT --node-id ID --raft-addr HOST:PORT
      on a legacy controller: it becomes the first node of an HA cluster
      (other nodes then join with "controller run --ha --join").
  controller migrate --to legacy --admin HOST:PORT
      on any member of an HA cluster: the leader continues as the legacy
      controller, the other members retire.

docs/migration.md describes the steps and what happens on a crash.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := controller.MigrateRequest{NodeID: nodeID, RaftAddr: raftAddr}
			var err error
			if req.To, err = abi.ParseIndexType(to); err != nil {
				return usageError{fmt.Errorf("--to %q: want ha or legacy", to)}
			}
			if _, _, err := net.SplitHostPort(admin); err != nil {
				return usageError{fmt.Errorf("--admin %q: %v", admin, err)}
			}
			if req.To == abi.IndexHA && (nodeID == "" || raftAddr == "") {
				return usageError{errors.New("--to ha needs --node-id and --raft-addr")}
			}
			if req.To == abi.IndexLegacy && (nodeID != "" || raftAddr != "") {
				return usageError{errors.New("--node-id and --raft-addr only go with --to ha")}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			ac, err := tok.client()
			if err != nil {
				return err
			}
			return failed(migrate(ctx, stdout, ac, admin, req))
		},
	}
	f := cmd.Flags()
	f.StringVar(&admin, "admin", controller.DefaultAdminAddr, "admin address host:port of the controller")
	f.StringVar(&to, "to", "", "target mode: ha or legacy (required)")
	f.StringVar(&nodeID, "node-id", "", "with --to ha: the raft server id the controller takes")
	f.StringVar(&raftAddr, "raft-addr", "", "with --to ha: the raft transport address host:port")
	f.DurationVar(&timeout, "timeout", 10*time.Minute, "give up waiting after this long (the migration itself goes on)")
	tok.register(cmd)
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

// migrate starts the migration and prints its progress until it ends.
func migrate(ctx context.Context, out io.Writer, ac adminClient, admin string, req controller.MigrateRequest) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	var started struct {
		Node string `json:"node"`
	}
	if err := ac.call(ctx, http.MethodPost, admin, "/v1/migrate", body, &started); err != nil {
		return fmt.Errorf("migrate via %s: %w", admin, err)
	}
	// A rollback asked of a follower runs on the leader: follow it there.
	watch := admin
	var st controller.Status
	if err := ac.call(ctx, http.MethodGet, admin, "/v1/status", nil, &st); err == nil && st.NodeID != started.Node {
		for _, p := range st.Peers {
			if p.ID == started.Node && p.AdminAddr != "" {
				watch = p.AdminAddr
			}
		}
	}
	fmt.Fprintf(out, "migration to %s started on %s (%s)\n", req.To, started.Node, watch)
	last := ""
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up watching the migration on %s: %w (it goes on; see GET /v1/status)", watch, ctx.Err())
		case <-t.C:
		}
		var st controller.Status
		if err := ac.call(ctx, http.MethodGet, watch, "/v1/status", nil, &st); err != nil {
			continue // a busy or restarting controller: keep watching
		}
		m := st.Migration
		if m.To != req.To {
			continue
		}
		line := fmt.Sprintf("%3d%% %s", m.Progress, m.Step)
		if m.RoutersTotal > 0 || m.Step == controller.StepWaitingAcks {
			line += fmt.Sprintf(": %d/%d routers acked index %d", m.RoutersAcked, m.RoutersTotal, m.LastIndex)
		}
		if m.SnapshotBytes > 0 {
			line += fmt.Sprintf(" (snapshot %d bytes)", m.SnapshotBytes)
		}
		if line != last {
			fmt.Fprintln(out, line)
			last = line
		}
		switch m.Step {
		case controller.StepDone:
			if len(m.Stragglers) > 0 {
				fmt.Fprintf(out, "routers that had not acked (they catch up by replay): %s\n", strings.Join(m.Stragglers, ", "))
			}
			fmt.Fprintf(out, "migration to %s done: writes were paused %.1f ms; %s is at %s index %d\n", req.To, m.PauseMs, st.NodeID, st.Mode, st.Index)
			return nil
		case controller.StepFailed:
			return fmt.Errorf("migration to %s failed and was rolled back: %s", req.To, m.Error)
		}
	}
}

// call sends one admin API request and decodes a 2xx JSON answer into v;
// other answers become an error carrying the controller's message.
func (ac adminClient) call(ctx context.Context, method, admin, path string, body []byte, v any) error {
	err := adminhttp.Do(ctx, nil, adminhttp.Request{Method: method, URL: "http://" + admin + path, Body: body, Token: ac.token}, v)
	var he *adminhttp.Error
	if errors.As(err, &he) {
		return fmt.Errorf("HTTP %d: %s", he.Status, strings.TrimPrefix(he.Message, "controller: "))
	}
	return err
}
