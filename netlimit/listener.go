// Package netlimit bounds what network clients can hold of a server: a
// listener that caps concurrent connections in total and per source
// address and cuts writes that stop making progress, and an *http.Server
// with read-header, read and idle timeouts, header and body bounds.
//
// One client opening thousands of connections that send headers and one
// body byte, or a reader that stops reading a multi-gigabyte download,
// costs the server a bounded number of file descriptors for a bounded time.
package netlimit

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Limits' zero fields.
const (
	DefaultMaxConns          = 4096
	DefaultMaxConnsPerSource = 64
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 1 << 20
)

// Limits bound one server. A zero field takes its Default; a negative
// count or duration turns that bound off.
type Limits struct {
	// MaxConns bounds the connections open at once.
	MaxConns int
	// MaxConnsPerSource bounds the connections open at once from one
	// source: an IPv4 address, or an IPv6 /64 (one host's usual share).
	MaxConnsPerSource int
	// ReadHeaderTimeout bounds reading a request's headers (and a TLS
	// handshake).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. Once the
	// body is read, the response may take as long as it makes progress.
	ReadTimeout time.Duration
	// WriteTimeout is a progress deadline: a write that moves no bytes for
	// this long fails and the connection is closed. A slow steady download
	// is never cut; a reader that stalls is.
	WriteTimeout time.Duration
	// IdleTimeout bounds a kept-alive connection between requests.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
	// MaxBodyBytes bounds every request body (413 beyond); handlers may
	// bound theirs further.
	MaxBodyBytes int64
}

// WithDefaults returns l with its zero fields set to the defaults.
func (l Limits) WithDefaults() Limits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.MaxConns, DefaultMaxConns)
	def(&l.MaxConnsPerSource, DefaultMaxConnsPerSource)
	def(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	defDur(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defDur(&l.ReadTimeout, DefaultReadTimeout)
	defDur(&l.WriteTimeout, DefaultWriteTimeout)
	defDur(&l.IdleTimeout, DefaultIdleTimeout)
	if l.MaxBodyBytes == 0 {
		l.MaxBodyBytes = DefaultMaxBodyBytes
	}
	return l
}

// logEvery is how often refused connections are logged, aggregated.
const logEvery = 10 * time.Second

// writeChunk is the most a single write may move under one deadline: a
// download must move at least writeChunk per WriteTimeout.
const writeChunk = 256 << 10

// Listener is a net.Listener bounding concurrent connections. A
// connection over a bound is accepted and closed at once (reset), so that
// Accept never blocks on it and no descriptor is kept; refusals are logged
// at most once per 10 s, counted.
type Listener struct {
	net.Listener
	lim Limits
	log *slog.Logger

	mu       sync.Mutex
	active   int
	bySource map[netip.Addr]int
	// Refusals not yet logged, and when the last log line was written.
	overTotal, overSource int
	busiest               netip.Addr
	lastLog               time.Time

	refused atomic.Int64
}

// NewListener bounds inner by l (its zero fields take the defaults). log
// may be nil.
func NewListener(inner net.Listener, l Limits, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{Listener: inner, lim: l.WithDefaults(), log: log, bySource: map[netip.Addr]int{}}
}

// Accept returns the next connection within the bounds.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		if l.acquire(src) {
			return &conn{Conn: c, l: l, src: src, progress: l.lim.WriteTimeout}, nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset: no TIME_WAIT left behind for a refusal
		}
		_ = c.Close()
	}
}

// Close closes the listener and logs refusals not logged yet.
func (l *Listener) Close() error {
	l.mu.Lock()
	l.flushLocked(time.Now())
	l.mu.Unlock()
	return l.Listener.Close()
}

// Active is the number of connections open now.
func (l *Listener) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}

// Refused is the number of connections refused so far.
func (l *Listener) Refused() int64 { return l.refused.Load() }

func (l *Listener) acquire(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.lim.MaxConns > 0 && l.active >= l.lim.MaxConns:
		l.overTotal++
	case src.IsValid() && l.lim.MaxConnsPerSource > 0 && l.bySource[src] >= l.lim.MaxConnsPerSource:
		l.overSource++
		l.busiest = src
	default:
		l.active++
		if src.IsValid() {
			l.bySource[src]++
		}
		return true
	}
	l.refused.Add(1)
	if now := time.Now(); now.Sub(l.lastLog) >= logEvery {
		l.flushLocked(now)
	}
	return false
}

func (l *Listener) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if !src.IsValid() {
		return
	}
	if n := l.bySource[src] - 1; n > 0 {
		l.bySource[src] = n
	} else {
		delete(l.bySource, src)
	}
}

// flushLocked logs the refusals counted since the last line.
func (l *Listener) flushLocked(now time.Time) {
	if l.overTotal == 0 && l.overSource == 0 {
		return
	}
	attrs := []any{"listen", l.Addr().String(), "active", l.active,
		"over_max_conns", l.overTotal, "max_conns", l.lim.MaxConns,
		"over_max_conns_per_source", l.overSource, "max_conns_per_source", l.lim.MaxConnsPerSource}
	if l.busiest.IsValid() {
		attrs = append(attrs, "last_source", l.busiest.String())
	}
	if !l.lastLog.IsZero() {
		attrs = append(attrs, "since", now.Sub(l.lastLog).Round(time.Second).String())
	}
	l.log.Warn("connections refused: over the connection limits", attrs...)
	l.overTotal, l.overSource, l.busiest, l.lastLog = 0, 0, netip.Addr{}, now
}

// sourceOf is the key a connection counts against: its IPv4 address, or
// its IPv6 /64; the zero Addr when the address is not IP.
func sourceOf(a net.Addr) netip.Addr {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}
		}
		ip = ap.Addr()
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, err := ip.WithZone("").Prefix(64)
		if err != nil {
			return netip.Addr{}
		}
		return p.Addr()
	}
	return ip
}

// conn releases its slot when closed and extends its write deadline
// whenever a write makes progress.
type conn struct {
	net.Conn
	l        *Listener
	src      netip.Addr
	progress time.Duration
	once     sync.Once
	// explicit is a write deadline the server set itself (Unix ns, 0:
	// none): a write never waits past it.
	explicit atomic.Int64
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}

// CloseWrite lets net/http half-close before it closes a connection
// whose request it did not read (a 413): the client reads the answer
// instead of a reset.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

func (c *conn) SetDeadline(t time.Time) error {
	c.setExplicit(t)
	return c.Conn.SetDeadline(t)
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.setExplicit(t)
	return c.Conn.SetWriteDeadline(t)
}

func (c *conn) setExplicit(t time.Time) {
	if t.IsZero() {
		c.explicit.Store(0)
	} else {
		c.explicit.Store(t.UnixNano())
	}
}

// extend sets the write deadline one progress timeout ahead (or to the
// server's own deadline, when sooner).
func (c *conn) extend() error {
	d := time.Now().Add(c.progress)
	if e := c.explicit.Load(); e != 0 && e < d.UnixNano() {
		d = time.Unix(0, e)
	}
	return c.Conn.SetWriteDeadline(d)
}

func (c *conn) Write(p []byte) (int, error) {
	if c.progress <= 0 || len(p) == 0 {
		return c.Conn.Write(p)
	}
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), writeChunk)]
		if err := c.extend(); err != nil {
			return n, err
		}
		w, err := c.Conn.Write(chunk)
		n += w
		p = p[w:]
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// ReadFrom keeps the kernel's zero-copy path (sendfile, splice) for file
// downloads, one chunk per deadline.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := c.Conn.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{c}, r)
	}
	if c.progress <= 0 {
		return rf.ReadFrom(r)
	}
	remain := int64(-1) // unlimited
	if lr, ok := r.(*io.LimitedReader); ok {
		r, remain = lr.R, lr.N
		defer func() { lr.N = max(remain, 0) }()
	}
	var total int64
	for remain != 0 {
		n := int64(writeChunk)
		if remain > 0 {
			n = min(n, remain)
		}
		if err := c.extend(); err != nil {
			return total, err
		}
		w, err := rf.ReadFrom(&io.LimitedReader{R: r, N: n})
		total += w
		if remain > 0 {
			remain -= w
		}
		if err != nil || w < n {
			return total, err // an error, or r is exhausted
		}
	}
	return total, nil
}

// writerOnly hides conn's ReadFrom from io.Copy.
type writerOnly struct{ io.Writer }
