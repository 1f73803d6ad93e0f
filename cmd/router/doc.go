// Command router runs an indexgate edge router and checks filter modules.
//
//	router run --id NAME --data-dir DIR --controller HOST:PORT[,HOST:PORT...] --insecure [flags]
//	router filters test FILE.wasm [--type legacy|ha] [--options OPTS]
//
// It is wiring only: flags become a router.Config (package router does the
// work) or a host.Check. Bad flags or input print one line and exit 2;
// runtime failures and failed checks exit 1. docs/router.md describes the
// flags, the data directory and the admin API.
package main
