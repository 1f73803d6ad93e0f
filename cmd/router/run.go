package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/host"
	"github.com/indexgate/indexgate/pki"
	"github.com/indexgate/indexgate/router"
	"github.com/indexgate/indexgate/trust"
)

// defaultAdminAddr is the admin API's address when --admin is not given:
// loopback only. Its read-only endpoints need no token.
const defaultAdminAddr = "127.0.0.1:8720"

type runFlags struct {
	configFile                   string
	id, dataDir, admin, cacheDir string
	controllers                  []string
	tlsCert, tlsKey, tlsCA       string
	pkiDir                       string
	insecure                     bool
	adminTokenFile               string
	pins, trustedKeys            []string
	allowUnsigned                bool
	filters, filterOptions       []string
	filterDir                    string
	filterDirSettle              time.Duration
	memoryLimit                  string
	callTimeout                  time.Duration
	logFormat, logLevel          string
}

func newRunCmd(stderr io.Writer) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the router until SIGINT or SIGTERM",
		Long: `Run connects to the controller (trying each --controller address in turn)
over mutual TLS 1.3, applies its change sets through the filter modules and
serves the admin API: GET /v1/status, /v1/entities, /metrics and /healthz
(open), and, with the bearer token of --admin-token-file, PUT
/v1/filters/{type}, PUT and DELETE /v1/filters/{type}/shadow, POST
/v1/filters/{type}/promote and /v1/filters/{type}/rollback.

TLS: --tls-cert, --tls-key and --tls-ca, or --pki-dir DIR, which names the
files "controller pki issue --router ID" wrote (DIR/router-ID.crt and .key,
DIR/ca.crt); the certificate must be issued for --id. --insecure runs over
plaintext TCP instead and, without --admin-token-file, opens the mutating
admin endpoints: for development only.

Filter modules other than the built-ins must be pinned (--pin SHA256) or
signed by a --trusted-key (FILE.wasm.sig next to the module), unless
--allow-unsigned.

--config FILE reads options from a YAML mapping whose keys are the flag
names below without "--" (lists for repeatable flags); flags on the command
line win. Unknown keys are an error.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.configFile != "" {
				if err := applyConfigFile(cmd.Flags(), f.configFile); err != nil {
					return err
				}
			}
			cfg, err := f.config(stderr)
			if err != nil {
				return err
			}
			r, err := router.New(cmd.Context(), cfg)
			if errors.Is(err, router.ErrInvalidConfig) || errors.Is(err, router.ErrTLSRequired) {
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
	fl.StringVar(&f.configFile, "config", "", "YAML file of options (keys: these flag names); command-line flags win")
	fl.StringVar(&f.id, "id", "", "router name, reported to the controller; must match the TLS certificate's name (required)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for the router's store, compilation cache and hot-swapped filters (required)")
	fl.StringSliceVar(&f.controllers, "controller", nil, "controller address HOST:PORT; repeat or comma-separate for failover, tried in order (required)")
	fl.StringVar(&f.admin, "admin", defaultAdminAddr, "admin API listen address HOST:PORT; keep it on loopback")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "the router's TLS certificate, PEM (default with --pki-dir: DIR/router-ID.crt)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "the router's TLS private key, PEM (default with --pki-dir: DIR/router-ID.key)")
	fl.StringVar(&f.tlsCA, "tls-ca", "", "CA certificate the controller's certificate must chain to, PEM (default with --pki-dir: DIR/ca.crt)")
	fl.StringVar(&f.pkiDir, "pki-dir", "", "directory with the files of \"controller pki issue --router ID\": sets the --tls-* defaults")
	fl.BoolVar(&f.insecure, "insecure", false, "DEVELOPMENT ONLY: plaintext TCP to the controller, and without --admin-token-file open mutating admin endpoints")
	fl.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the bearer token (16+ bytes) the mutating admin endpoints require; re-read when it changes (default: those endpoints are disabled)")
	fl.StringArrayVar(&f.pins, "pin", nil, "sha256 of a filter module allowed to serve (trusted: no per-call deadline); repeatable")
	fl.StringArrayVar(&f.trustedKeys, "trusted-key", nil, "ed25519 public key file (router filters keygen): modules it signed may serve, trusted; repeatable")
	fl.BoolVar(&f.allowUnsigned, "allow-unsigned", false, "let modules that are neither pinned nor signed serve, untrusted (per-call deadline)")
	fl.StringArrayVar(&f.filters, "filter", nil, "filter module for an index type, TYPE=FILE.wasm (TYPE legacy or ha), with FILE.wasm.sig if present; wins over a hot-swapped module; repeatable")
	fl.StringArrayVar(&f.filterOptions, "filter-options", nil, "options passed to the module of an index type at init, TYPE=OPTIONS; repeatable")
	fl.StringVar(&f.filterDir, "filter-dir", "", "directory watched for legacy.wasm and ha.wasm (+ .sig): a new version is verified and hot-swapped in")
	fl.DurationVar(&f.filterDirSettle, "filter-dir-settle", router.DefaultFilterDirSettle, "how long a file in --filter-dir must stay unchanged before it is read")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "compilation cache directory (default DATA-DIR/cache)")
	fl.StringVar(&f.memoryLimit, "memory-limit", "", "memory cap per filter instance in bytes, a multiple of 64KiB; KiB/MiB/GiB suffixes accepted (default 64MiB)")
	fl.DurationVar(&f.callTimeout, "call-timeout", host.DefaultCallTimeout, "deadline of every call into an untrusted filter module (and its instantiation)")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// config turns the flags into a router.Config, reading the filter files.
func (f *runFlags) config(stderr io.Writer) (router.Config, error) {
	var cfg router.Config
	for _, req := range []struct{ name, v string }{{"--id", f.id}, {"--data-dir", f.dataDir}} {
		if req.v == "" {
			return cfg, usageErr("%s is required", req.name)
		}
	}
	if len(f.controllers) == 0 {
		return cfg, usageErr("--controller is required")
	}
	id, err := f.identity()
	if err != nil {
		return cfg, err
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
	sigs := map[abi.IndexType][]byte{}
	for _, kv := range f.filters {
		t, path, err := typeValue(kv)
		if err != nil {
			return cfg, usageErr("--filter %q: %v", kv, err)
		}
		if _, dup := modules[t]; dup {
			return cfg, usageErr("--filter: index type %s given twice", t)
		}
		b, sig, err := readModule(path)
		if err != nil {
			return cfg, usageErr("--filter %s: %v", kv, err)
		}
		modules[t] = host.Module{Name: path, Bytes: b}
		if sig != nil {
			sigs[t] = sig
		}
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
		ID:             f.id,
		DataDir:        f.dataDir,
		Controllers:    f.controllers,
		AdminAddr:      f.admin,
		TLS:            id,
		Insecure:       f.insecure,
		AdminTokenFile: f.adminTokenFile,
		Trust: trust.Config{
			Pins: f.pins, KeyFiles: f.trustedKeys, AllowUnsigned: f.allowUnsigned,
		},
		FilterDir:        f.filterDir,
		FilterDirSettle:  f.filterDirSettle,
		CacheDir:         f.cacheDir,
		MemoryLimitBytes: mem,
		CallTimeout:      f.callTimeout,
		Logger:           log,
	}
	if cfg.TLS.CertFile != "" {
		cfg.TLS.Logger = log
	}
	if len(modules) > 0 {
		cfg.Filters = modules
	}
	if len(sigs) > 0 {
		cfg.FilterSignatures = sigs
	}
	if err := cfg.Validate(); err != nil {
		return cfg, &exitError{code: exitUsage, err: err}
	}
	return cfg, nil
}

// identity resolves the TLS flags: --pki-dir gives the default file names
// for --id, and each --tls-* flag overrides its default.
func (f *runFlags) identity() (pki.Identity, error) {
	anyTLS := f.tlsCert != "" || f.tlsKey != "" || f.tlsCA != "" || f.pkiDir != ""
	if f.insecure {
		if anyTLS {
			return pki.Identity{}, usageErr("--insecure (plaintext) and --tls-*/--pki-dir (TLS) exclude each other")
		}
		return pki.Identity{}, nil
	}
	var id pki.Identity
	if f.pkiDir != "" {
		id = pki.IdentityFor(f.pkiDir, pki.Router, f.id)
	}
	for _, o := range []struct {
		dst *string
		v   string
	}{{&id.CertFile, f.tlsCert}, {&id.KeyFile, f.tlsKey}, {&id.CAFile, f.tlsCA}} {
		if o.v != "" {
			*o.dst = o.v
		}
	}
	if id.CertFile == "" || id.KeyFile == "" || id.CAFile == "" {
		return id, usageErr("TLS needs --tls-cert, --tls-key and --tls-ca (or --pki-dir DIR for the files \"controller pki issue --router %s\" wrote); --insecure runs over plaintext instead", f.id)
	}
	return id, nil
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

// readModule reads a module file and its detached signature, if any, and
// refuses what is plainly not wasm.
func readModule(path string) (module, sig []byte, err error) {
	module, sig, err = trust.LoadModule(path)
	if err != nil {
		return nil, nil, err
	}
	if !bytes.HasPrefix(module, wasmMagic) {
		return nil, nil, fmt.Errorf("%s is not a WebAssembly module (it does not start with \\0asm)", path)
	}
	return module, sig, nil
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
