// Package trust decides which WebAssembly filter modules a router lets
// decide its change sets: modules the operator pinned by digest, modules
// signed with a key the operator trusts, and (only when told to) modules
// nobody vouched for.
//
// # Threat model
//
// A filter's verdicts decide what a router applies: a hostile module can
// skip change sets (the router silently diverges) or apply stale ones (it
// rolls back), and the host's sandbox (no file system, no network, a
// memory cap, deadlines) does nothing about that, because verdicts are
// the module's job. Modules reach a router through its configuration and
// through the admin API's hot swap, so whoever can write either could
// change what the router does. A Policy closes that: the router verifies
// every module before loading or swapping it in, and refuses what is
// neither pinned (Config.Pins: exact sha256 digests, for a fixed set of
// modules) nor signed by a trusted key (Config.KeyFiles, Config.Keys:
// ed25519 public keys, so a release process signs once and every router
// accepts). Config.AllowUnsigned turns the check off for development.
//
// Not covered: a stolen signing key (remove its public key from the
// routers' configuration: nothing else revokes it), and downgrade (a
// signature has no expiry or version, so an older module the key once
// signed stays acceptable; pin instead where that matters). The built-in
// modules are compiled into the router and trusted by it without asking
// this package.
//
// # Signatures
//
// A signature is a detached text file next to the module (filter.wasm →
// filter.wasm.sig, see SignaturePath) that names its key and the module
// digest it covers; the format is documented on SignatureHeader and parsed
// strictly. Keys are ed25519: GenerateKey writes a pair, Sign makes a
// signature, LoadPrivateKey and LoadPublicKeys read keys, KeyID names one.
//
// # Wiring
//
// CLI: "router filters keygen --dir D" calls GenerateKey and prints the
// KeyID; "router filters sign --key D/filter-signing.key FILE.wasm" calls
// LoadPrivateKey and Sign and writes SignaturePath(FILE.wasm); "router
// filters verify FILE.wasm [--trusted-key F]... [--pin SHA256]...
// [--allow-unsigned]" calls LoadModule, NewPolicy and Verify and prints
// the Decision or the error.
//
// Router: build the Policy once at start from the same three flags (or
// their config file keys) and log Policy.String. Before host.Load of a
// configured or previously hot-swapped module and before every host.Swap
// from the admin API, call Verify with the module and its signature (a
// hot swap upload carries the signature alongside the module and the
// router persists it next to the module, TYPE.wasm.sig, so a restart
// verifies it again). On error do not load: the admin API answers 403
// with the error text, start-up fails with it. On success log the
// Decision and load the module as host.Trusted if Decision.Vouched(),
// host.Untrusted otherwise. Built-in modules skip Verify.
package trust
