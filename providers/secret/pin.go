package secret

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// A client that carries a secret talks to the one destination the grant
// allowed and nowhere else: not after a redirect (SameHostRedirects), and
// not to a URL a response names (a Redfish service root's links, say),
// since the next request would carry the session or the key there.

// PinDial makes tr connect only to addr (host:port as the grant checked
// it); any other address is refused before a byte is sent. tr is changed
// in place (pass a clone) and loses its proxy: a secret goes straight to
// its destination.
func PinDial(tr *http.Transport, addr string) {
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	tr.Proxy = nil
	tr.DialContext = func(ctx context.Context, network, to string) (net.Conn, error) {
		if !sameHostPort(to, addr) {
			return nil, fmt.Errorf("connection to %s refused: this client's secret goes only to %s", to, addr)
		}
		return dial(ctx, network, to)
	}
	if tls := tr.DialTLSContext; tls != nil {
		tr.DialTLSContext = func(ctx context.Context, network, to string) (net.Conn, error) {
			if !sameHostPort(to, addr) {
				return nil, fmt.Errorf("connection to %s refused: this client's secret goes only to %s", to, addr)
			}
			return tls(ctx, network, to)
		}
	}
}

// PinURL wraps base so that requests go only to the host and port of
// granted (a URL as the grant checked it).
func PinURL(base http.RoundTripper, granted *url.URL) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return pinnedTransport{base: base, addr: hostPort(granted)}
}

type pinnedTransport struct {
	base http.RoundTripper
	addr string
}

func (p pinnedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if to := hostPort(req.URL); !sameHostPort(to, p.addr) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("request to %s refused: this client's secret goes only to %s", to, p.addr)
	}
	return p.base.RoundTrip(req)
}

// hostPort is a URL's host:port, the port from the scheme when it has none.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func sameHostPort(a, b string) bool {
	ha, pa, err := net.SplitHostPort(a)
	if err != nil {
		return false
	}
	hb, pb, err := net.SplitHostPort(b)
	if err != nil {
		return false
	}
	return pa == pb && strings.EqualFold(strings.TrimSuffix(ha, "."), strings.TrimSuffix(hb, "."))
}
