package raftnode

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestConfigValidate(t *testing.T) {
	_, inmem := raft.NewInmemTransport("")
	base := func(f func(*Config)) Config {
		c := Config{NodeID: "n1", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0"}
		if f != nil {
			f(&c)
		}
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{"minimal tcp", base(nil), ""},
		{"inmem transport needs no address", base(func(c *Config) { c.RaftAddr = ""; c.Transport = inmem }), ""},
		{"missing node id", base(func(c *Config) { c.NodeID = "" }), "NodeID"},
		{"missing data dir", base(func(c *Config) { c.DataDir = "" }), "DataDir"},
		{"missing address", base(func(c *Config) { c.RaftAddr = "" }), "RaftAddr is required"},
		{"bad address", base(func(c *Config) { c.RaftAddr = "localhost" }), "RaftAddr"},
		{"all interfaces without advertise", base(func(c *Config) { c.RaftAddr = "0.0.0.0:7000" }), "set AdvertiseAddr"},
		{"all interfaces with advertise", base(func(c *Config) { c.RaftAddr = "0.0.0.0:7000"; c.AdvertiseAddr = "10.0.0.1:7000" }), ""},
		{"unspecified advertise", base(func(c *Config) { c.AdvertiseAddr = "[::]:7000" }), "not dialable"},
		{"advertise port 0", base(func(c *Config) { c.AdvertiseAddr = "10.0.0.1:0" }), "port 0"},
		{"transport and stream layer", base(func(c *Config) { c.Transport = inmem; c.StreamLayer = fakeStream{} }), "not both"},
		{"negative timeout", base(func(c *Config) { c.CommitTimeout = -time.Second }), "CommitTimeout"},
		{"lease above heartbeat", base(func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second }), "LeaderLeaseTimeout"},
		{"election below heartbeat", base(func(c *Config) { c.HeartbeatTimeout = 2 * time.Second; c.ElectionTimeout = time.Second }), "ElectionTimeout"},
		{"heartbeat too low", base(func(c *Config) {
			c.HeartbeatTimeout = time.Millisecond
			c.ElectionTimeout = time.Millisecond
			c.LeaderLeaseTimeout = time.Millisecond
		}), "too low"},
		{"only heartbeat set, lower", base(func(c *Config) { c.HeartbeatTimeout = 100 * time.Millisecond }), ""},
		{"only heartbeat set, higher", base(func(c *Config) { c.HeartbeatTimeout = 3 * time.Second }), ""},
		{"negative heartbeat", base(func(c *Config) { c.HeartbeatTimeout = -1 }), "HeartbeatTimeout"},
		{"max append entries too large", base(func(c *Config) { c.MaxAppendEntries = 1025 }), "MaxAppendEntries"},
		{"max append entries negative", base(func(c *Config) { c.MaxAppendEntries = -1 }), "MaxAppendEntries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Validate error %v does not wrap ErrInvalidConfig", err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("Validate error spans lines: %q", err)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{NodeID: "n1", DataDir: "d", RaftAddr: "127.0.0.1:0"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	rc := c.raftConfig(nil)
	tests := []struct {
		name      string
		got, want any
	}{
		{"HeartbeatTimeout", rc.HeartbeatTimeout, DefaultHeartbeatTimeout},
		{"ElectionTimeout", rc.ElectionTimeout, DefaultElectionTimeout},
		{"LeaderLeaseTimeout", rc.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout},
		{"CommitTimeout", rc.CommitTimeout, DefaultCommitTimeout},
		{"MaxAppendEntries", rc.MaxAppendEntries, DefaultMaxAppendEntries},
		{"SnapshotInterval", rc.SnapshotInterval, DefaultSnapshotInterval},
		{"SnapshotThreshold", rc.SnapshotThreshold, uint64(DefaultSnapshotThreshold)},
		{"TrailingLogs", rc.TrailingLogs, uint64(DefaultTrailingLogs)},
		{"NoSnapshotRestoreOnStart", rc.NoSnapshotRestoreOnStart, true},
		{"LocalID", rc.LocalID, raft.ServerID("n1")},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	// A snapshot must not outrun the log tail it is meant to be followed
	// by (consul #9609): the defaults keep several thresholds of tail.
	if rc.TrailingLogs < 2*rc.SnapshotThreshold {
		t.Errorf("TrailingLogs %d < 2 × SnapshotThreshold %d", rc.TrailingLogs, rc.SnapshotThreshold)
	}
}

type fakeStream struct{ raft.StreamLayer }
