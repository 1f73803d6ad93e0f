package trust_test

import (
	"bytes"
	"testing"

	"github.com/indexgate/indexgate/trust"
)

// BenchmarkVerify measures Verify on a 2 MiB module (the size of a Go
// filter): the sha256 dominates, the ed25519 check adds a constant.
func BenchmarkVerify(b *testing.B) {
	kf, err := trust.GenerateKey(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	priv, err := trust.LoadPrivateKey(kf.Private)
	if err != nil {
		b.Fatal(err)
	}
	m := bytes.Repeat([]byte{0x5a}, 2<<20)
	sig, err := trust.Sign(m, priv)
	if err != nil {
		b.Fatal(err)
	}
	keyed, err := trust.NewPolicy(trust.Config{KeyFiles: []string{kf.Public}})
	if err != nil {
		b.Fatal(err)
	}
	d, _ := keyed.Verify(m, sig)
	pinned, err := trust.NewPolicy(trust.Config{Pins: []string{d.SHA256}})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		pol  *trust.Policy
		sig  []byte
		want trust.Reason
	}{{"pinned", pinned, nil, trust.Pinned}, {"signed", keyed, sig, trust.Signed}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(m)))
			for b.Loop() {
				if d, err := bc.pol.Verify(m, bc.sig); err != nil || d.Reason != bc.want {
					b.Fatal(d, err)
				}
			}
		})
	}
}
