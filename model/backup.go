package model

import (
	"fmt"
	"io"
)

// WriteTo writes the whole store file as of this transaction's snapshot to
// w (bbolt's Tx.WriteTo), so a backup can be taken from a running store: a
// View transaction sees one consistent state while writers carry on. The
// result is a store file that Open accepts.
func (t *Tx) WriteTo(w io.Writer) (int64, error) {
	n, err := t.tx.WriteTo(w)
	if err != nil {
		return n, fmt.Errorf("model: write store snapshot: %w", err)
	}
	return n, nil
}
