package lab

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"slices"
	"time"
)

// selfSigned makes the listener's certificate: ECDSA P-256, self-signed,
// valid for a year from an hour ago, for every BMC host (IP addresses and
// names), localhost, 127.0.0.1 and ::1.
func selfSigned(hosts []string, now time.Time) (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "anneal lab BMCs", Organization: []string{"anneal lab"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	hosts = slices.Sorted(slices.Values(hosts))
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

// labCurves is the lab's key exchange: X25519 alone. Go's default adds the
// hybrid X25519MLKEM768, whose key shares cost most of a handshake, and the
// lab runs both ends of thousands of handshakes on one machine.
var labCurves = []tls.CurveID{tls.X25519}

// CertPEM is the listener's certificate in PEM, for curl --cacert.
func (f *Fleet) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.cert.Certificate[0]})
}

// RedirectClient returns an HTTP client for providers/bmc (bmc.Config's
// HTTPClient) that sends every connection to labAddr, the lab's listener,
// whatever the URL's host: the request keeps the site's BMC address in
// its Host header (and in TLS SNI for a name), by which the lab tells its
// BMCs apart. Like bmclib's own client it does not verify the BMC's
// certificate (BMCs' are self-signed; Fleet.CertPool verifies the lab's)
// and keeps no connection alive between requests; TLS sessions are
// resumed and the key exchange is X25519 alone, which makes a thousand
// BMCs' handshakes cheap. Its Transport is an *http.Transport, as bmclib
// requires.
func RedirectClient(labAddr string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, labAddr)
		},
		TLSClientConfig: &tls.Config{
			InsecureSkipVerify: true, // as bmclib's default client: BMC certificates are self-signed
			ClientSessionCache: tls.NewLRUClientSessionCache(4096),
			CurvePreferences:   labCurves,
		},
		DisableKeepAlives:   true,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
}
