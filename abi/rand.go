//go:build !wasip1

package abi

import "crypto/rand"

// NewTimeline returns a random timeline. It is not built for wasip1: a
// filter never makes timelines, and crypto/rand was a sixth of every Go
// module's bytes.
func NewTimeline() Timeline {
	var t Timeline
	// crypto/rand.Read never fails on supported platforms (Go 1.24+).
	_, _ = rand.Read(t[:])
	return t
}
