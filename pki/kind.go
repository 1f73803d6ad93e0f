package pki

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// Kind is the role a certificate is issued for. A certificate carries
// exactly one kind, in its URI SAN, so a router certificate never passes
// where a controller certificate is expected and the other way round.
type Kind int

const (
	// Router certificates identify an edge router. They are valid for TLS
	// client authentication only.
	Router Kind = iota + 1
	// Controller certificates identify a controller. They are valid for
	// both TLS server and client authentication: a controller serves its
	// routers and dials its raft peers.
	Controller
)

// String returns "router" or "controller", the host part of the URI SAN.
func (k Kind) String() string {
	switch k {
	case Router:
		return "router"
	case Controller:
		return "controller"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// valid reports whether k is Router or Controller; the zero Kind is not,
// so forgetting to choose one is an error rather than a silent default.
func (k Kind) valid() bool { return k == Router || k == Controller }

// ParseKind parses "router" or "controller" (a CLI argument).
func ParseKind(s string) (Kind, error) {
	switch s {
	case "router":
		return Router, nil
	case "controller":
		return Controller, nil
	}
	return 0, fmt.Errorf("%w: kind %q: want router or controller", ErrInvalid, s)
}

// uriScheme is the scheme of the identity URI SAN:
// indexgate://KIND/NAME.
const uriScheme = "indexgate"

// maxNameLen bounds names: they end up in file names, a URI and a
// Subject CommonName (which X.509 limits to 64 characters).
const maxNameLen = 64

// ValidateName reports whether name can name a certificate: 1 to 64
// characters from [A-Za-z0-9._-], starting with a letter or digit. The
// alphabet keeps names safe as file names and URI paths without escaping;
// router ids and controller node ids that are to be checked against
// certificates must follow it.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrInvalid)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: name %q is longer than %d characters", ErrInvalid, name, maxNameLen)
	}
	for i, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			i > 0 && (r == '.' || r == '_' || r == '-')
		if !ok {
			return fmt.Errorf("%w: name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", ErrInvalid, name)
		}
	}
	return nil
}

// identityURI is the URI SAN of a certificate of kind k named name.
func identityURI(k Kind, name string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: k.String(), Path: "/" + name}
}

// identityOf reads the kind and name a certificate was issued for. It
// insists on exactly what Issue writes (one indexgate URI, a known kind, a
// valid name equal to the CommonName), because anything else was not
// issued by this package and must not be given the benefit of the doubt.
func identityOf(c *x509.Certificate) (Kind, string, error) {
	var u *url.URL
	for _, x := range c.URIs {
		if x.Scheme != uriScheme {
			continue
		}
		if u != nil {
			return 0, "", fmt.Errorf("certificate %q has more than one %s:// URI SAN", c.Subject.CommonName, uriScheme)
		}
		u = x
	}
	if u == nil {
		return 0, "", fmt.Errorf("certificate %q has no %s:// URI SAN: it was not issued for indexgate", c.Subject.CommonName, uriScheme)
	}
	var k Kind
	switch u.Host {
	case "router":
		k = Router
	case "controller":
		k = Controller
	default:
		return 0, "", fmt.Errorf("certificate URI SAN %q: unknown kind %q", u, u.Host)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return 0, "", fmt.Errorf("certificate URI SAN %q: unexpected parts", u)
	}
	name, ok := strings.CutPrefix(u.Path, "/")
	if !ok || ValidateName(name) != nil {
		return 0, "", fmt.Errorf("certificate URI SAN %q: invalid name", u)
	}
	if c.Subject.CommonName != name {
		return 0, "", fmt.Errorf("certificate URI SAN %q does not match its CommonName %q", u, c.Subject.CommonName)
	}
	return k, name, nil
}
