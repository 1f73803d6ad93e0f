package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"

	"github.com/spf13/cobra"
)

// tokenFlag is the --admin-token-file flag of the commands that call a
// running controller's mutating admin endpoints.
type tokenFlag struct{ file string }

func (t *tokenFlag) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.file, "admin-token-file", "", "file holding the controller's admin bearer token (its --admin-token-file)")
}

// client reads the token file, if any.
func (t *tokenFlag) client() (adminClient, error) {
	if t.file == "" {
		return adminClient{}, nil
	}
	b, err := os.ReadFile(t.file)
	if err != nil {
		return adminClient{}, usageError{fmt.Errorf("--admin-token-file: %w", err)}
	}
	tok := string(bytes.TrimSpace(b))
	if tok == "" {
		return adminClient{}, usageError{fmt.Errorf("--admin-token-file %s is empty", t.file)}
	}
	return adminClient{token: tok}, nil
}

// adminClient calls a controller's admin API with the token, if any.
type adminClient struct{ token string }

func (ac adminClient) authorize(r *http.Request) {
	if ac.token != "" {
		r.Header.Set("Authorization", "Bearer "+ac.token)
	}
}
