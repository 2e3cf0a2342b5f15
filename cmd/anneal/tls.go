package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/spf13/cobra"
)

// certReloader serves a certificate and key from files, read again when
// either file changes (a renewed certificate needs no restart). A pair that
// does not load keeps the previous one in service, and says why in the log.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger

	mu       sync.Mutex
	cert     *tls.Certificate
	certTime time.Time
	keyTime  time.Time
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if _, err := r.get(nil); err != nil {
		return nil, err
	}
	return r, nil
}

// get is tls.Config.GetCertificate.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cst, cerr := os.Stat(r.certFile)
	kst, kerr := os.Stat(r.keyFile)
	r.mu.Lock()
	defer r.mu.Unlock()
	if cerr == nil && kerr == nil && r.cert != nil && cst.ModTime().Equal(r.certTime) && kst.ModTime().Equal(r.keyTime) {
		return r.cert, nil
	}
	err := errors.Join(cerr, kerr)
	var cert tls.Certificate
	if err == nil {
		cert, err = tls.LoadX509KeyPair(r.certFile, r.keyFile)
	}
	if err != nil {
		if r.cert == nil {
			return nil, fmt.Errorf("TLS certificate %s and key %s: %w", r.certFile, r.keyFile, err)
		}
		r.log.Warn("TLS certificate not reloaded; the previous one stays in service", "cert", r.certFile, "err", err)
		return r.cert, nil
	}
	if r.cert != nil {
		r.log.Info("TLS certificate reloaded", "cert", r.certFile)
	}
	r.cert, r.certTime, r.keyTime = &cert, cst.ModTime(), kst.ModTime()
	return r.cert, nil
}

// serverTLS is the API's TLS configuration from --tls-cert and --tls-key
// (nil when neither is given; the caller checks they come together).
func serverTLS(certFile, keyFile string, log *slog.Logger) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	r, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.get}, nil
}

// apiFlags are how a command reaches a running anneal serve.
type apiFlags struct {
	server string
	ca     string

	once sync.Once
	hc   *http.Client
	err  error
}

func addAPIFlags(c *cobra.Command, server, usage string) *apiFlags {
	f := &apiFlags{}
	c.Flags().StringVar(&f.server, "server", server, usage)
	c.Flags().StringVar(&f.ca, "ca", "", "PEM file of the CA certificates to trust for an https --server (default: the system's)")
	return f
}

// client is the HTTP client for the API: the system's trust, or --ca's.
func (f *apiFlags) client() (*http.Client, error) {
	f.once.Do(func() { f.hc, f.err = f.newClient() })
	return f.hc, f.err
}

func (f *apiFlags) newClient() (*http.Client, error) {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", f.ca)
		}
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	}
	return &http.Client{Transport: t}, nil
}
