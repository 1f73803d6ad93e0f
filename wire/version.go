package wire

import (
	"errors"
	"fmt"
)

// Protocol versions this package speaks.
const (
	MinProtocol uint16 = 1
	MaxProtocol uint16 = 1
)

// ErrVersionMismatch reports that two version ranges do not overlap (or
// one of them is not a range). The message names both ranges.
var ErrVersionMismatch = errors.New("wire: no common protocol version")

// Negotiate returns the highest version in both [localMin, localMax] and
// [remoteMin, remoteMax].
func Negotiate(localMin, localMax, remoteMin, remoteMax uint16) (uint16, error) {
	if localMin == 0 || localMin > localMax || remoteMin == 0 || remoteMin > remoteMax {
		return 0, fmt.Errorf("%w: local [%d, %d], remote [%d, %d]: invalid range", ErrVersionMismatch, localMin, localMax, remoteMin, remoteMax)
	}
	lo, hi := max(localMin, remoteMin), min(localMax, remoteMax)
	if lo > hi {
		return 0, fmt.Errorf("%w: local [%d, %d], remote [%d, %d]", ErrVersionMismatch, localMin, localMax, remoteMin, remoteMax)
	}
	return hi, nil
}
