package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/trust"
)

func oneFile(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return usageErr("%s takes exactly one FILE.wasm, got %d arguments", cmd.CommandPath(), len(args))
	}
	return nil
}

func newKeygenCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "keygen --dir DIR",
		Short: "Make an ed25519 key pair for signing filter modules",
		Long: `Keygen writes DIR/` + trust.PrivateKeyFile + ` (mode 0600: it belongs with whoever
releases modules, never on a router) and DIR/` + trust.PublicKeyFile + ` (give it to
routers with --trusted-key), and prints the key id. It refuses to replace
existing files.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageErr("--dir is required")
			}
			kf, err := trust.GenerateKey(dir)
			if err != nil {
				return failure(err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "key id  %s\nprivate %s (sign with it; keep it off routers)\npublic  %s (routers: --trusted-key %s)\n",
				kf.KeyID, kf.Private, kf.Public, kf.Public)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the key pair, created if missing (required)")
	return cmd
}

func newSignCmd() *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "sign --key PRIVATE-KEY FILE.wasm",
		Short: "Sign a filter module: writes FILE.wasm.sig",
		Long: `Sign writes the detached signature FILE.wasm.sig of FILE.wasm, made with the
private key of "router filters keygen". Routers that list the public key
with --trusted-key let the module serve, trusted. Ship the .sig file next to
the module: "router filters swap", --filter and --filter-dir pick it up.`,
		Args: oneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return usageErr("--key is required")
			}
			priv, err := trust.LoadPrivateKey(key)
			if err != nil {
				return failure(err)
			}
			module, err := os.ReadFile(args[0])
			if err != nil {
				return failure(err)
			}
			if !isWasmFile(module) {
				return failure(fmt.Errorf("%s is not a WebAssembly module (it does not start with \\0asm)", args[0]))
			}
			sig, err := trust.Sign(module, priv)
			if err != nil {
				return failure(err)
			}
			path := trust.SignaturePath(args[0])
			if err := os.WriteFile(path, sig, 0o644); err != nil {
				return failure(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n  sha256 %s\n", path, sha256Hex(module))
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "private key file from router filters keygen (required)")
	return cmd
}

func newVerifyCmd() *cobra.Command {
	var tc trust.Config
	cmd := &cobra.Command{
		Use:   "verify [--trusted-key PUB]... [--pin SHA256]... [--allow-unsigned] FILE.wasm",
		Short: "Check a filter module against a trust policy, as a router would",
		Long: `Verify reads FILE.wasm and FILE.wasm.sig (if present) and applies the same
trust policy a router started with these flags applies before a module may
serve. It prints the decision and exits 0 if the module would be accepted,
1 if refused (with what would make it acceptable).`,
		Args: oneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := tc.Validate(); err != nil {
				return usageErr("%v", err)
			}
			module, sig, err := trust.LoadModule(args[0])
			if err != nil {
				return failure(err)
			}
			policy, err := trust.NewPolicy(tc)
			if err != nil {
				return failure(err)
			}
			d, err := policy.Verify(module, sig)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "module %s\n  sha256 %s\n  policy %s\n", args[0], sha256Hex(module), policy)
			if err != nil {
				fmt.Fprintln(out, "REFUSED")
				if errors.Is(err, trust.ErrUntrusted) {
					return failure(err)
				}
				return failure(fmt.Errorf("%s: %w", args[0], err))
			}
			runs := "untrusted, with per-call deadlines"
			if d.Vouched() {
				runs = "trusted"
			}
			fmt.Fprintf(out, "ACCEPTED: %s (runs %s)\n  %s\n", d.Reason, runs, d)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVar(&tc.KeyFiles, "trusted-key", nil, "ed25519 public key file whose signatures are trusted; repeatable")
	fl.StringArrayVar(&tc.Pins, "pin", nil, "sha256 of a module trusted as it is; repeatable")
	fl.BoolVar(&tc.AllowUnsigned, "allow-unsigned", false, "accept modules nobody vouched for (they would run untrusted)")
	return cmd
}
