// Package model is the entity store both the controller and the routers keep
// on bbolt: validated change sets applied atomically, an O(1) entity count, a
// digest anyone can recompute, and a staging area that swaps a chunked full
// state in only when it is complete.
//
// Entities are (kind, id) → value strings. Their bbolt key is kind, a 0x00
// byte, then id; kinds and ids may not contain NUL, so bbolt's bytewise key
// order is exactly "by kind, then by id" and the digest can stream the bucket
// in key order without sorting.
//
// A Tx also hands out ordinary bbolt buckets so that callers keep their own
// data (positions, change log, filter state) in the same transaction as the
// entity changes: a position must never be committed without the changes it
// stands for, nor the other way round.
package model
