package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/builtin"
	"github.com/indexgate/indexgate/router"
	"github.com/indexgate/indexgate/trust"
)

// adminTimeout bounds one admin API call: a swap compiles and self-tests
// the module first, which takes seconds for a large one.
const adminTimeout = 2 * time.Minute

// adminFlags are the flags of the commands that call a router's admin API.
type adminFlags struct {
	addr, tokenFile, typ string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&a.addr, "admin", defaultAdminAddr, "the router's admin API, HOST:PORT or http://HOST:PORT")
	fl.StringVar(&a.tokenFile, "token-file", "", "file holding the router's admin bearer token (its --admin-token-file)")
	fl.StringVar(&a.typ, "type", "", "index type: legacy or ha (required)")
}

// indexType parses --type.
func (a *adminFlags) indexType() (abi.IndexType, error) {
	if a.typ == "" {
		return abi.IndexNone, usageErr("--type is required (legacy or ha)")
	}
	t, err := abi.ParseIndexType(a.typ)
	if err != nil {
		return abi.IndexNone, usageErr("--type %q: want legacy or ha", a.typ)
	}
	return t, nil
}

// call sends one request to the admin API and decodes a 200 answer into
// out; any other answer is an error carrying the router's message.
func (a *adminFlags) call(ctx context.Context, method, path string, body []byte, header http.Header, out any) error {
	base := a.addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return usageErr("--admin %q: want HOST:PORT", a.addr)
	}
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return usageErr("--admin %q: %v", a.addr, err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if a.tokenFile != "" {
		tok, err := os.ReadFile(a.tokenFile)
		if err != nil {
			return usageErr("--token-file: %v", err)
		}
		req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(tok)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return failure(fmt.Errorf("admin API %s: %w", a.addr, err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return failure(fmt.Errorf("admin API %s: %w", a.addr, err))
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b))
		}
		return failure(fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Error))
	}
	if err := json.Unmarshal(b, out); err != nil {
		return failure(fmt.Errorf("%s %s: unexpected answer: %w", method, path, err))
	}
	return nil
}

// moduleRequest reads FILE and its signature FILE.sig into a request body
// and headers.
func moduleRequest(path string) ([]byte, http.Header, error) {
	module, sig, err := trust.LoadModule(path)
	if err != nil {
		return nil, nil, failure(err)
	}
	if !isWasmFile(module) {
		return nil, nil, failure(fmt.Errorf("%s is not a WebAssembly module (it does not start with \\0asm)", path))
	}
	h := http.Header{"Content-Type": {"application/wasm"}}
	if sig != nil {
		h.Set(router.SignatureHeader, base64.StdEncoding.EncodeToString(sig))
	}
	return module, h, nil
}

// swapResult is the admin API's answer to a swap, promotion or rollback.
type swapResult struct {
	Type           string `json:"type"`
	SHA256         string `json:"sha256"`
	PreviousSHA256 string `json:"previousSha256"`
	PauseMicros    int64  `json:"pauseMicros"`
	Name           string `json:"name"`
	Version        string `json:"version"`
	Trusted        bool   `json:"trusted"`
	Trust          string `json:"trust"`
	LastIndex      uint64 `json:"lastIndex"`
	Note           string `json:"note"`
}

func printSwap(w io.Writer, verb string, r *swapResult) {
	fmt.Fprintf(w, "%s %s: %s %s\n  sha256   %s\n  previous %s\n  trusted  %v (%s)\n  pause    %dµs, at index %d\n",
		verb, r.Type, r.Name, r.Version, r.SHA256, r.PreviousSHA256, r.Trusted, r.Trust, r.PauseMicros, r.LastIndex)
	if r.Note != "" {
		fmt.Fprintf(w, "  note     %s\n", r.Note)
	}
}

func printShadow(w io.Writer, verb string, t abi.IndexType, s *router.ShadowStatus) {
	fmt.Fprintf(w, "%s %s candidate: %s %s\n  sha256        %s\n  trusted       %v (%s)\n  decisions     %d\n  compared      %d\n  disagreements %d\n",
		verb, t, s.Name, s.Version, s.SHA256, s.Trusted, s.Trust, s.Decisions, s.Compared, s.Disagreements)
	for _, d := range s.FirstDisagreements {
		fmt.Fprintf(w, "    index %d term %d: active %s, candidate %s\n", d.Header.Index, d.Header.Term, d.Active, d.Candidate)
	}
	if s.Failed != "" {
		fmt.Fprintf(w, "  dropped       %s\n", s.Failed)
	}
}

func newSwapCmd() *cobra.Command {
	var a adminFlags
	var options string
	var useBuiltin bool
	cmd := &cobra.Command{
		Use:   "swap --type TYPE (FILE.wasm | --builtin) [--admin HOST:PORT] [--token-file FILE]",
		Short: "Hot-swap a filter module into a running router",
		Long: `Swap uploads FILE.wasm (and FILE.wasm.sig, if present) to the router's admin
API. The router verifies it against its trust policy, checks and self-tests
it while the old module keeps deciding, then swaps it in with the old
module's state and persists it. A refusal leaves the old module serving.
--builtin uploads the built-in module of the type (this binary's copy),
which a router always trusts: the way back from any custom module.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if useBuiltin {
				if len(args) != 0 {
					return usageErr("%s --builtin takes no FILE", cmd.CommandPath())
				}
				return nil
			}
			return oneFile(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.indexType()
			if err != nil {
				return err
			}
			var body []byte
			var h http.Header
			if useBuiltin {
				if options != "" {
					return usageErr("--options: the built-in module takes none")
				}
				if body, err = builtin.For(t); err != nil {
					return failure(err)
				}
				h = http.Header{"Content-Type": {"application/wasm"}}
			} else if body, h, err = moduleRequest(args[0]); err != nil {
				return err
			}
			var r swapResult
			if err := a.call(cmd.Context(), http.MethodPut, "/v1/filters/"+t.String()+optionsQuery(options), body, h, &r); err != nil {
				return err
			}
			printSwap(cmd.OutOrStdout(), "swapped", &r)
			return nil
		},
	}
	a.register(cmd)
	cmd.Flags().StringVar(&options, "options", "", "options passed to the module's init")
	cmd.Flags().BoolVar(&useBuiltin, "builtin", false, "swap the built-in module of the type back in")
	return cmd
}

func newShadowCmd() *cobra.Command {
	var a adminFlags
	var options string
	var stop bool
	cmd := &cobra.Command{
		Use:   "shadow --type TYPE (FILE.wasm | --stop) [--admin HOST:PORT] [--token-file FILE]",
		Short: "Run a candidate module beside the active one without acting on its verdicts",
		Long: `Shadow uploads FILE.wasm (and FILE.wasm.sig) as the candidate of an index
type: after the router's trust and load checks, it decides a copy of every
batch beside the active module, starting from the active module's state.
Its verdicts are only compared: GET /v1/status ("shadow") and the metrics
indexgate_filter_shadow_decisions_total and
indexgate_filter_shadow_disagreements_total count them. After a batch with
a disagreement the candidate is set back to the active module's state.
"router filters promote" makes it the active module; --stop drops it.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if stop {
				if len(args) != 0 {
					return usageErr("%s --stop takes no FILE", cmd.CommandPath())
				}
				return nil
			}
			return oneFile(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := a.indexType()
			if err != nil {
				return err
			}
			var s router.ShadowStatus
			path := "/v1/filters/" + t.String() + "/shadow"
			if stop {
				if err := a.call(cmd.Context(), http.MethodDelete, path, nil, nil, &s); err != nil {
					return err
				}
				printShadow(cmd.OutOrStdout(), "stopped", t, &s)
				return nil
			}
			body, h, err := moduleRequest(args[0])
			if err != nil {
				return err
			}
			if err := a.call(cmd.Context(), http.MethodPut, path+optionsQuery(options), body, h, &s); err != nil {
				return err
			}
			printShadow(cmd.OutOrStdout(), "shadowing", t, &s)
			return nil
		},
	}
	a.register(cmd)
	cmd.Flags().StringVar(&options, "options", "", "options passed to the candidate's init")
	cmd.Flags().BoolVar(&stop, "stop", false, "drop the candidate instead of starting one")
	return cmd
}

// newSwitchCmd builds promote and rollback, which only name a type.
func newSwitchCmd(use, short, long, verb string) *cobra.Command {
	var a adminFlags
	cmd := &cobra.Command{
		Use:   use + " --type TYPE [--admin HOST:PORT] [--token-file FILE]",
		Short: short,
		Long:  long,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			t, err := a.indexType()
			if err != nil {
				return err
			}
			var r swapResult
			if err := a.call(cmd.Context(), http.MethodPost, "/v1/filters/"+t.String()+"/"+use, nil, nil, &r); err != nil {
				return err
			}
			printSwap(cmd.OutOrStdout(), verb, &r)
			return nil
		},
	}
	a.register(cmd)
	return cmd
}

func newPromoteCmd() *cobra.Command {
	return newSwitchCmd("promote", "Make the shadow candidate the active module",
		`Promote swaps the shadow candidate in as the active module, with the active
module's state carried over (no decision is lost or repeated), and persists
it. The module it replaces is kept for "router filters rollback".`, "promoted")
}

func newRollbackCmd() *cobra.Command {
	return newSwitchCmd("rollback", "Return to the module the last swap, promotion or rollback replaced",
		`Rollback swaps the previous module of the type back in (state carried over)
and persists it. Rolling back twice rolls forward again. The previous module
is remembered while the router runs, not across restarts.`, "rolled back")
}

func optionsQuery(o string) string {
	if o == "" {
		return ""
	}
	return "?options=" + url.QueryEscape(o)
}

func isWasmFile(b []byte) bool { return bytes.HasPrefix(b, wasmMagic) }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
