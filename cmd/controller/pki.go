package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/indexgate/indexgate/controller"
	"github.com/indexgate/indexgate/pki"
)

// tlsFlags are run's certificate flags: three files, or a PKI directory
// laid out by "controller pki".
type tlsFlags struct {
	cert, key, ca string
	dir, name     string
}

func (f *tlsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.cert, "tls-cert", "", "this controller's certificate, PEM (with --tls-key and --tls-ca; or use --pki-dir)")
	fl.StringVar(&f.key, "tls-key", "", "the certificate's private key, PEM")
	fl.StringVar(&f.ca, "tls-ca", "", "the CA certificate routers' and peers' certificates must chain to, PEM")
	fl.StringVar(&f.dir, "pki-dir", "", `directory made by "controller pki init": uses ca.crt and controller-NAME.crt/.key`)
	fl.StringVar(&f.name, "tls-name", "", `with --pki-dir: NAME of controller-NAME.crt (default: --node-id, else "controller")`)
}

// identity resolves the flags into cfg.TLS.
func (f *tlsFlags) identity(cfg *controller.Config) error {
	files := f.cert != "" || f.key != "" || f.ca != ""
	switch {
	case f.dir != "" && files:
		return usageError{errors.New("pass --pki-dir or --tls-cert/--tls-key/--tls-ca, not both")}
	case f.name != "" && f.dir == "":
		return usageError{errors.New("--tls-name goes with --pki-dir")}
	case f.dir != "":
		name := f.name
		if name == "" {
			name = cfg.NodeID
		}
		if name == "" {
			name = pki.DefaultControllerName
		}
		cfg.TLS = pki.IdentityFor(f.dir, pki.Controller, name)
	case files:
		cfg.TLS = pki.Identity{CertFile: f.cert, KeyFile: f.key, CAFile: f.ca}
	}
	return nil
}

func newPKICmd(stdout io.Writer) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Create the deployment's CA and issue router and controller certificates",
		Long: `pki manages the certificates of mutual TLS between routers and controllers
and between the controllers of an HA cluster.

  controller pki init --dir D [--name controller] [--hosts H,...]
      creates the CA (ca.crt, ca.key) and the controller certificate
      controller-NAME.crt/.key in D.
  controller pki issue --dir D --router NAME
      issues router-NAME.crt/.key; NAME is the router's --id.
  controller pki issue --dir D --controller NAME [--hosts H,...]
      issues controller-NAME.crt/.key for another controller; --hosts are
      the names and addresses routers and raft peers dial it at.

Keep ca.key on this machine; copy ca.crt and a router's pair to the router.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newPKIInitCmd(stdout), newPKIIssueCmd(stdout))
	return cmd
}

func newPKIInitCmd(stdout io.Writer) *cobra.Command {
	var dir, name, alg string
	var hosts []string
	var opts pki.InitOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a CA and the controller's certificate in --dir",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if opts.Algorithm, err = pki.ParseAlgorithm(alg); err != nil {
				return usageError{fmt.Errorf("--algorithm: %w", err)}
			}
			opts.ControllerName = name
			opts.Hosts = append(opts.Hosts, hosts...)
			if err := opts.Validate(); err != nil {
				return usageError{err}
			}
			if err := pki.Init(dir, opts); err != nil {
				return pkiFailed(err)
			}
			id := pki.IdentityFor(dir, pki.Controller, name)
			fmt.Fprintf(stdout, "CA written to %s and %s\ncontroller certificate %s, key %s\n",
				filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile), id.CertFile, id.KeyFile)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "PKI directory to create (required)")
	f.StringVar(&name, "name", pki.DefaultControllerName, "name of the controller certificate")
	f.StringSliceVar(&opts.Hosts, "hosts", nil, "DNS names and IPs routers and raft peers dial the controller at, comma separated (default localhost,127.0.0.1)")
	f.StringArrayVar(&hosts, "host", nil, "one more host, repeatable (adds to --hosts)")
	f.StringVar(&alg, "algorithm", "", "key algorithm: ecdsa-p256 (default) or ed25519")
	f.DurationVar(&opts.CAValidity, "ca-validity", pki.DefaultCAValidity, "lifetime of the CA")
	f.DurationVar(&opts.Validity, "validity", pki.DefaultValidity, "lifetime of the controller certificate")
	f.BoolVar(&opts.Force, "force", false, "replace an existing CA (every certificate it issued stops working)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func newPKIIssueCmd(stdout io.Writer) *cobra.Command {
	var dir, router, ctrl, alg string
	var hosts []string
	var opts pki.IssueOptions
	cmd := &cobra.Command{
		Use:   "issue (--router NAME | --controller NAME | router NAME | controller NAME)",
		Short: "Issue a router or controller certificate signed by the CA in --dir",
		Args:  cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Hosts = append(opts.Hosts, hosts...)
			if len(args) == 1 {
				return usageError{errors.New("pass KIND NAME (router edge-1), or --router NAME or --controller NAME")}
			}
			if len(args) == 2 {
				if router != "" || ctrl != "" {
					return usageError{errors.New("pass KIND NAME or --router/--controller, not both")}
				}
				k, err := pki.ParseKind(args[0])
				if err != nil {
					return usageError{err}
				}
				if k == pki.Router {
					router = args[1]
				} else {
					ctrl = args[1]
				}
			}
			kind, name := pki.Router, router
			switch {
			case (router == "") == (ctrl == ""):
				return usageError{errors.New("pass exactly one of --router NAME and --controller NAME")}
			case ctrl != "":
				kind, name = pki.Controller, ctrl
			case len(opts.Hosts) > 0:
				return usageError{errors.New("--hosts goes with --controller: routers are never dialled")}
			}
			var err error
			if opts.Algorithm, err = pki.ParseAlgorithm(alg); err != nil {
				return usageError{fmt.Errorf("--algorithm: %w", err)}
			}
			if err := opts.Validate(); err != nil {
				return usageError{err}
			}
			cert, key, err := pki.Issue(dir, kind, name, opts)
			if err != nil {
				return pkiFailed(err)
			}
			fmt.Fprintf(stdout, "%s certificate %s, key %s\n", kind, cert, key)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "PKI directory made by pki init (required)")
	f.StringVar(&router, "router", "", "issue a router certificate named NAME (the router's --id)")
	f.StringVar(&ctrl, "controller", "", "issue a controller certificate named NAME (its --node-id)")
	f.StringSliceVar(&opts.Hosts, "hosts", nil, "with --controller: DNS names and IPs it is dialled at, comma separated (default localhost,127.0.0.1)")
	f.StringArrayVar(&hosts, "host", nil, "one more host, repeatable (adds to --hosts)")
	f.StringVar(&alg, "algorithm", "", "key algorithm: ecdsa-p256 or ed25519 (default: the CA's)")
	f.DurationVar(&opts.Validity, "validity", pki.DefaultValidity, "lifetime of the certificate")
	f.BoolVar(&opts.Force, "force", false, "replace an existing certificate of that name (renewal)")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

// pkiFailed classifies an error of package pki: bad arguments and an
// existing file are the user's to fix.
func pkiFailed(err error) error {
	if errors.Is(err, pki.ErrInvalid) || errors.Is(err, pki.ErrExists) {
		if errors.Is(err, pki.ErrExists) {
			err = fmt.Errorf("%w (pass --force to replace it)", err)
		}
		return usageError{err}
	}
	return runtimeError{err}
}
