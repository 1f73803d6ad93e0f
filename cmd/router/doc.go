// Command router runs an indexgate edge router and manages its filter
// modules.
//
//	router run --id NAME --data-dir DIR --controller HOST:PORT[,...] (--pki-dir DIR | --tls-cert F --tls-key F --tls-ca F | --insecure) [flags]
//	router filters test FILE.wasm [--type legacy|ha] [--options OPTS]
//	router filters keygen --dir DIR
//	router filters sign --key PRIVATE-KEY FILE.wasm
//	router filters verify [--trusted-key PUB]... [--pin SHA256]... [--allow-unsigned] FILE.wasm
//	router filters swap --type TYPE FILE.wasm [--admin HOST:PORT] [--token-file F]
//	router filters shadow --type TYPE (FILE.wasm | --stop) [--admin HOST:PORT] [--token-file F]
//	router filters promote|rollback --type TYPE [--admin HOST:PORT] [--token-file F]
//
// It is wiring only: flags (and the YAML file of --config) become a
// router.Config (package router does the work), a host.Check, a call to
// package trust, or a request to a running router's admin API. Bad flags
// or input print one line and exit 2; runtime failures, refusals and
// failed checks exit 1. docs/router.md describes the flags, the data
// directory and the admin API.
package main
