package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/router"
)

// defaultAdminAddr is the admin API's address when --admin is not given:
// loopback only, the API has no authentication.
const defaultAdminAddr = "127.0.0.1:8720"

type runFlags struct {
	id, dataDir, admin, cacheDir string
	controllers                  []string
	filters, filterOptions       []string
	memoryLimit                  string
	insecure                     bool
	logFormat, logLevel          string
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the router until SIGINT or SIGTERM",
		Long: `Run connects to the controller (trying each --controller address in turn),
applies its change sets through the filter modules and serves the admin API
(GET /v1/status, GET /v1/entities, PUT /v1/filters/{type}, GET /metrics, GET /healthz).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config(stderr)
			if err != nil {
				return err
			}
			r, err := router.New(cmd.Context(), cfg)
			if errors.Is(err, router.ErrInvalidConfig) || errors.Is(err, router.ErrInsecureRequired) {
				return &exitError{code: exitUsage, err: err}
			}
			if err != nil {
				return failure(err)
			}
			err = r.Run(cmd.Context())
			if cerr := r.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return failure(err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "router name, reported to the controller (required)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the router's store, compilation cache and hot-swapped filters (required)")
	fl.StringSliceVar(&f.controllers, "controller", nil, "controller address HOST:PORT; repeat or comma-separate for failover, tried in order (required)")
	fl.StringVar(&f.admin, "admin", defaultAdminAddr, "admin API listen address HOST:PORT")
	fl.StringArrayVar(&f.filters, "filter", nil, "filter module for an index type, TYPE=FILE.wasm (TYPE legacy or ha); runs untrusted and wins over a hot-swapped module; repeatable")
	fl.StringArrayVar(&f.filterOptions, "filter-options", nil, "options passed to the module of an index type at init, TYPE=OPTIONS; repeatable")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "compilation cache directory (default DATA-DIR/cache)")
	fl.StringVar(&f.memoryLimit, "memory-limit", "", "memory cap per filter instance in bytes, a multiple of 64KiB; KiB/MiB/GiB suffixes accepted (default 64MiB)")
	fl.BoolVar(&f.insecure, "insecure", false, "connect to the controller over plaintext TCP (required until TLS is implemented)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// config turns the flags into a router.Config, reading the filter files.
func (f *runFlags) config(stderr io.Writer) (router.Config, error) {
	var cfg router.Config
	if !f.insecure {
		return cfg, usageErr("--insecure is required: TLS between controller and router is not implemented yet, so the connection is plaintext TCP")
	}
	for _, req := range []struct{ name, v string }{{"--id", f.id}, {"--data-dir", f.dataDir}} {
		if req.v == "" {
			return cfg, usageErr("%s is required", req.name)
		}
	}
	if len(f.controllers) == 0 {
		return cfg, usageErr("--controller is required")
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return cfg, err
	}
	mem, err := parseBytes(f.memoryLimit)
	if err != nil {
		return cfg, usageErr("--memory-limit %q: %v", f.memoryLimit, err)
	}
	options := map[abi.IndexType][]byte{}
	for _, kv := range f.filterOptions {
		t, v, err := typeValue(kv)
		if err != nil {
			return cfg, usageErr("--filter-options %q: %v", kv, err)
		}
		options[t] = []byte(v)
	}
	modules := map[abi.IndexType]host.Module{}
	for _, kv := range f.filters {
		t, path, err := typeValue(kv)
		if err != nil {
			return cfg, usageErr("--filter %q: %v", kv, err)
		}
		if _, dup := modules[t]; dup {
			return cfg, usageErr("--filter: index type %s given twice", t)
		}
		b, err := readModule(path)
		if err != nil {
			return cfg, usageErr("--filter %s: %v", kv, err)
		}
		modules[t] = host.Module{Name: path, Bytes: b, Trust: host.Untrusted}
	}
	for t, o := range options {
		m, ok := modules[t]
		if !ok {
			return cfg, usageErr("--filter-options for %s needs a --filter %s=FILE (the built-in takes no options)", t, t)
		}
		m.Options = o
		modules[t] = m
	}
	cfg = router.Config{
		ID:               f.id,
		DataDir:          f.dataDir,
		Controllers:      f.controllers,
		AdminAddr:        f.admin,
		Insecure:         f.insecure,
		CacheDir:         f.cacheDir,
		MemoryLimitBytes: mem,
		Logger:           log,
	}
	if len(modules) > 0 {
		cfg.Filters = modules
	}
	if err := cfg.Validate(); err != nil {
		return cfg, &exitError{code: exitUsage, err: err}
	}
	return cfg, nil
}

// typeValue splits TYPE=VALUE.
func typeValue(kv string) (abi.IndexType, string, error) {
	name, v, ok := strings.Cut(kv, "=")
	if !ok || v == "" {
		return abi.IndexNone, "", errors.New("want TYPE=VALUE with TYPE legacy or ha")
	}
	t, err := abi.ParseIndexType(name)
	if err != nil {
		return abi.IndexNone, "", fmt.Errorf("unknown index type %q (want legacy or ha)", name)
	}
	return t, v, nil
}

// wasmMagic starts every WebAssembly binary.
var wasmMagic = []byte("\x00asm")

// readModule reads a module file and refuses what is plainly not wasm.
func readModule(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(b, wasmMagic) {
		return nil, fmt.Errorf("%s is not a WebAssembly module (it does not start with \\0asm)", path)
	}
	return b, nil
}

// parseBytes parses a byte count with an optional KiB/MiB/GiB suffix; ""
// is 0 (the default).
func parseBytes(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	mult := uint64(1)
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return 0, errors.New("not a byte count (e.g. 67108864 or 64MiB)")
	}
	if n > (1<<64-1)/mult {
		return 0, errors.New("too large")
	}
	return n * mult, nil
}

// newLogger builds the slog logger of --log-format and --log-level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, usageErr("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageErr("--log-format %q: want text or json", format)
}
