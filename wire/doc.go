// Package wire is the framing and the messages between a controller and
// its routers: length-prefixed frames carrying a message type byte and a
// msgpack body, protocol version negotiation, and a Conn that reads and
// writes whole frames with context and timeout handling.
//
// docs/protocol.md is the normative description; this package implements
// it.
//
// Bodies are msgpack arrays in the field order of the structs' as_array
// tags, so github.com/vmihailenco/msgpack/v5 reads what this package writes
// and the other way round (the tests check both directions). The codec is
// nevertheless written by hand, because frames come from the network: the
// library pre-allocates whatever element count a header claims (a five-byte
// array32 header aborts the process with an out-of-memory error) and skips
// nested values recursively without a depth limit (16 MiB of nested arrays
// overflow the stack, which no recover catches). The decoder here bounds
// every count by the bytes actually present and every nesting by a small
// depth, never panics, and reports ErrMalformed with the offset at fault.
package wire
