package labdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/anneal-dev/anneal/netlimit"
	"github.com/miekg/dns"
)

// Start binds the DNS address (UDP and TCP) and the API address, and
// serves in the background until Close, or until ctx is done.
func (s *Server) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("lab dns %s: start: %w", s.name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("lab dns %s: start: %w", s.name, net.ErrClosed)
	case s.started:
		return fmt.Errorf("lab dns %s: started twice", s.name)
	}
	if err := s.listen(ctx); err != nil {
		return fmt.Errorf("lab dns %s: %w", s.name, err)
	}
	s.started = true
	s.stopCtx = context.AfterFunc(ctx, func() { _ = s.Close() })
	s.log.Info("lab dns serving", "addr", s.dnsAddr, "api", s.apiAddr, "zones", len(s.zones), "update", s.tsig != nil)
	return nil
}

// Close stops serving for good. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.stopCtx != nil {
		s.stopCtx()
	}
	err := s.unlisten()
	if err != nil {
		return fmt.Errorf("lab dns %s: close: %w", s.name, err)
	}
	return nil
}

// SetDown makes the server go away (down: every listener closed, so
// queries and API calls fail as with a stopped server) or come back (the
// same addresses bound again). Setting the state it is in does nothing.
func (s *Server) SetDown(down bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("lab dns %s: %w", s.name, net.ErrClosed)
	case !s.started:
		return fmt.Errorf("lab dns %s: not started", s.name)
	case s.down == down:
		return nil
	}
	if down {
		s.down = true
		s.log.Warn("lab dns going down (fault injection)", "addr", s.dnsAddr)
		if err := s.unlisten(); err != nil {
			return fmt.Errorf("lab dns %s: going down: %w", s.name, err)
		}
		return nil
	}
	if err := s.listen(context.Background()); err != nil {
		return fmt.Errorf("lab dns %s: coming back: %w", s.name, err)
	}
	s.down = false
	s.log.Warn("lab dns back up", "addr", s.dnsAddr)
	return nil
}

// Down reports whether SetDown(true) holds the server down.
func (s *Server) Down() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down
}

// listen binds and serves; the caller holds s.mu. The first bind of a
// port 0 address picks a port free for both UDP and TCP and keeps it, so
// that coming back from SetDown binds the same one.
func (s *Server) listen(ctx context.Context) error {
	tl, pc, err := bindDNS(ctx, s.dnsAddr)
	if err != nil {
		return err
	}
	s.dnsAddr = tl.Addr().String()
	var al net.Listener
	if s.apiAddr != "" {
		var lc net.ListenConfig
		if al, err = lc.Listen(ctx, "tcp", s.apiAddr); err != nil {
			tl.Close()
			pc.Close()
			return fmt.Errorf("API address: %w", err)
		}
		s.apiAddr = al.Addr().String()
	}
	s.udp = s.dnsServer(pc, nil)
	s.tcp = s.dnsServer(nil, tl)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		failed := make(chan error, 1)
		go func() {
			err := srv.ActivateAndServe()
			if err != nil {
				s.log.Error("lab dns serve", "err", err)
			}
			failed <- err
		}()
		select {
		case <-started:
		case err := <-failed:
			_ = s.unlisten()
			tl.Close()
			pc.Close()
			if al != nil {
				al.Close()
			}
			return fmt.Errorf("serve DNS: %w", err)
		}
	}
	if al != nil {
		// anneal is the one client, on loopback: no per-source bound. The
		// API bounds its one body itself (maxBody), answering 400 as
		// PowerDNS does: no server-wide bound before it.
		limits := netlimit.Limits{MaxConns: 1024, MaxConnsPerSource: -1, MaxBodyBytes: -1}
		s.api = netlimit.NewServer(s.apiHandler(), limits)
		s.api.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
		bounded := netlimit.NewListener(al, limits, s.log)
		go func(api *http.Server) {
			if err := api.Serve(bounded); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.log.Error("lab dns API serve", "err", err)
			}
		}(s.api)
	}
	return nil
}

// bindDNS binds TCP and UDP on one address; with port 0, on one free
// port for both (tried a few times: the UDP port may be taken).
func bindDNS(ctx context.Context, addr string) (net.Listener, net.PacketConn, error) {
	var lc net.ListenConfig
	var last error
	for range 10 {
		tl, err := lc.Listen(ctx, "tcp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("DNS address (TCP): %w", err)
		}
		pc, err := lc.ListenPacket(ctx, "udp", tl.Addr().String())
		if err == nil {
			return tl, pc, nil
		}
		tl.Close()
		last = err
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break
		}
	}
	return nil, nil, fmt.Errorf("DNS address (UDP): %w", last)
}

func (s *Server) dnsServer(pc net.PacketConn, l net.Listener) *dns.Server {
	srv := &dns.Server{
		PacketConn:    pc,
		Listener:      l,
		Handler:       dns.HandlerFunc(s.serveDNS),
		MsgAcceptFunc: acceptMsg,
		ReadTimeout:   5 * time.Second,
		WriteTimeout:  30 * time.Second,
	}
	if s.tsig != nil {
		srv.TsigSecret = map[string]string{s.tsig.name: s.tsig.secret}
	}
	return srv
}

// unlisten stops every listener; the caller holds s.mu.
func (s *Server) unlisten() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var errs []error
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv != nil {
			if err := srv.ShutdownContext(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
				errs = append(errs, err)
			}
		}
	}
	if s.api != nil {
		// Close, not Shutdown: a server that goes away drops its
		// connections, kept-alive ones included.
		if err := s.api.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	s.udp, s.tcp, s.api = nil, nil, nil
	return errors.Join(errs...)
}

// acceptMsg lets queries, NOTIFYs and UPDATEs through (miekg/dns's
// default refuses UPDATEs) and checks what it can from the header alone.
func acceptMsg(dh dns.Header) dns.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return dns.MsgIgnore
	}
	switch int(dh.Bits>>11) & 0xF {
	case dns.OpcodeQuery, dns.OpcodeNotify:
		if dh.Qdcount != 1 || dh.Ancount > 1 || dh.Nscount > 1 || dh.Arcount > 2 {
			return dns.MsgReject
		}
	case dns.OpcodeUpdate:
		if dh.Qdcount != 1 {
			return dns.MsgReject
		}
	default:
		return dns.MsgRejectNotImplemented
	}
	return dns.MsgAccept
}
