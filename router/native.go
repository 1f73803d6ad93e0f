package router

import (
	"context"
	"errors"
	"sync"

	"github.com/indexgate/indexgate/abi"
	"github.com/indexgate/indexgate/filters/native"
)

// nativeFilters is the decider of Config.NativeFilters: the reference Go
// strategies the built-in modules compile, without wasm, so that a
// benchmark can put a number on what the wasm host costs end to end.
type nativeFilters struct {
	mu sync.Mutex
	f  [numTypes]*native.Filter
}

func newNativeFilters() *nativeFilters {
	return &nativeFilters{f: [numTypes]*native.Filter{abi.IndexLegacy: native.NewLegacy(), abi.IndexHA: native.NewHA()}}
}

func (n *nativeFilters) filter(t abi.IndexType) (*native.Filter, error) {
	if !t.Valid() {
		return nil, abi.ErrUnknownIndexType
	}
	return n.f[t], nil
}

func (n *nativeFilters) Decide(_ context.Context, t abi.IndexType, hs []abi.Header, out []abi.Verdict) ([]abi.Verdict, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.filter(t)
	if err != nil {
		return out, err
	}
	for i := range hs {
		out = append(out, f.Decide(&hs[i]))
	}
	return out, nil
}

func (n *nativeFilters) ModeChange(_ context.Context, mc abi.ModeChange) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var errs []error
	for _, t := range abi.IndexTypes {
		errs = append(errs, n.f[t].ModeChange(mc))
	}
	return errors.Join(errs...)
}

func (n *nativeFilters) Restore(_ context.Context, t abi.IndexType, st abi.State) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.filter(t)
	if err != nil {
		return err
	}
	return f.Restore(st)
}

func (n *nativeFilters) State(_ context.Context, t abi.IndexType) (abi.State, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f, err := n.filter(t)
	if err != nil {
		return abi.State{}, err
	}
	return f.Snapshot(), nil
}
