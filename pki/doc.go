// Package pki issues the certificates of an indexgate deployment and
// builds the mutual TLS 1.3 configurations of its links: router ↔
// controller, and controller ↔ controller (raft).
//
// # Threat model
//
// The network between routers and controllers is not trusted. Without
// TLS, anyone who can reach a controller can register as a router and read
// every change set, and anyone on the path can feed routers forged change
// sets. With this package each end proves who it is with a certificate
// from the deployment's own CA: a controller accepts only router
// certificates (and, on raft links, controller certificates), a router
// accepts only a controller certificate for the address it dialled, and a
// router may only use the id its certificate names. Stolen keys are
// contained by short leaf lifetimes (one year by default) rather than by
// revocation, which this package does not do; the CA key is the crown
// jewel and belongs on the machine that issues certificates only.
//
// # Identity
//
// A certificate names one Kind (Router or Controller) and one name, in the
// Subject CommonName and in a URI SAN indexgate://router/NAME or
// indexgate://controller/NAME. The kind is enforced twice: router
// certificates lack the server-authentication key usage, so TLS refuses
// one from a server, and PeerPolicy refuses a certificate of the wrong
// kind (a controller certificate used by a client posing as a router).
// Controller certificates also carry DNS and IP SANs so routers verify the
// controller's address as usual.
//
// # Files
//
// Init writes a CA (ca.crt, ca.key) and the controller's certificate into
// a directory; Issue adds more (KIND-NAME.crt, KIND-NAME.key). Keys are
// 0600, certificates 0644, and files are replaced atomically. Init refuses
// to replace a CA and Issue an existing certificate (ErrExists) unless
// told to Force. ECDSA P-256 by default, Ed25519 on request.
//
// # Wiring
//
// CLI: "controller pki init --dir D [--name N] [--host H]... [--force]"
// calls Init; "controller pki issue router|controller NAME --dir D
// [--host H]... [--validity 8760h] [--force]" calls ParseKind and Issue.
// Copy ca.crt and the router's pair to the router.
//
// Controller, listener for routers:
//
//	cfg, err := id.ServerTLS(pki.PeerPolicy{Kind: pki.Router})
//	ln = tls.NewListener(ln, cfg)
//	// per accepted conn: pki.Handshake(ctx, conn.(*tls.Conn)), then after
//	// reading Hello:
//	err = pki.PeerPolicy{Kind: pki.Router, Name: hello.RouterID}.Check(tc.ConnectionState())
//	// on error send wire.Error and close: the router claimed an id that is not its own.
//
// Router, dialling its controller (serverName "" lets tls.Dialer take it
// from the address):
//
//	cfg, err := id.ClientTLS("", pki.PeerPolicy{Kind: pki.Controller})
//	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
//
// Raft links: a StreamLayer whose Accept wraps connections with
// tls.Server(c, serverCfg) and whose Dial uses tls.Dialer with clientCfg,
// both built with PeerPolicy{Kind: pki.Controller} from the node's
// controller certificate (whose Hosts must then include the raft
// addresses).
//
// # Rotation
//
// The configurations re-read a side's certificate and key at the first
// handshake after either file changes: renew with Issue(..., Force: true)
// and running processes pick it up. A replacement that does not load or
// verify is logged (Identity.Logger) and the old certificate keeps
// serving. The CA file is read once; a new CA needs a restart.
package pki
