package main

import (
	"github.com/indexgate/indexgate/abi/guest"
	"github.com/indexgate/indexgate/filters/native"
)

func init() { guest.Register(native.Batched(native.NewLegacy())) }

// main is empty: the module is a WASI reactor (built with -buildmode=c-shared)
// whose work happens in the exports abi/guest provides.
func main() {}
