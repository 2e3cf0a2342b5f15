package test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/miekg/dns"
)

// holdProxy relays DNS between anneal and a server, over TCP and UDP on one
// address, until it holds: from then on it relays nothing, in either
// direction, so whatever anneal sends waits for an answer that never comes
// and an apply cannot go on. It holds at the first read (any message but an
// UPDATE) of the holdAt-th zone that anneal reads after writing to it.
// anneal reads a zone back only once the server has answered every UPDATE
// it sent for it, so when the proxy holds, those holdAt zones are complete
// on the server (ReadBack names them).
//
// Before that, it relays only the first UPDATE for the zone stall (if set):
// the others get no answer, so that zone is partly written when the proxy
// holds, however fast the server and anneal are.
type holdProxy struct {
	// Addr is where anneal should send: 127.0.0.1:PORT, TCP and UDP.
	Addr string

	t        testing.TB
	upstream string
	zones    []string // canonical names, to find a message's zone
	holdAt   int
	stall    string

	tcp net.Listener
	udp net.PacketConn

	// gate makes holding atomic: a message is relayed with gate read-locked
	// and only if held is false; hold sets held with gate locked.
	gate    sync.RWMutex
	held    bool
	holding chan struct{} // closed when held is set

	mu       sync.Mutex
	written  map[string]bool // zones an UPDATE was relayed for
	readBack []string        // zones read after being written, in order
	inflight int             // UPDATEs relayed that the server has not answered
	answered *sync.Cond      // broadcast when inflight drops
	conns    map[net.Conn]bool
	closed   bool
	errs     []error

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// flow is one client's exchange with the server: a TCP connection, or one
// UDP query.
type flow struct {
	client, up net.Conn
	pending    map[uint16]int // UPDATE IDs relayed, not answered (under mu)
	npending   int
	clientDone bool // TCP: the client closed its side
}

// startHoldProxy starts a proxy to upstream, closed when the test ends.
func startHoldProxy(t testing.TB, upstream string, zones []string, holdAt int, stall string) *holdProxy {
	t.Helper()
	p := &holdProxy{
		t:        t,
		upstream: upstream,
		holdAt:   holdAt,
		stall:    dns.CanonicalName(stall),
		holding:  make(chan struct{}),
		written:  map[string]bool{},
		conns:    map[net.Conn]bool{},
	}
	p.answered = sync.NewCond(&p.mu)
	for _, z := range zones {
		p.zones = append(p.zones, dns.CanonicalName(z))
	}
	// The UDP port of the TCP listener's number may be taken: try a few.
	for attempt := 0; p.udp == nil; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("holdProxy: %v", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			l.Close()
			if attempt == 4 {
				t.Fatalf("holdProxy: %v", err)
			}
			continue
		}
		p.tcp, p.udp, p.Addr = l, u, l.Addr().String()
	}
	p.wg.Add(2)
	go p.acceptTCP()
	go p.serveUDP()
	t.Cleanup(p.Close)
	return p
}

// Held is closed when the proxy holds.
func (p *holdProxy) Held() <-chan struct{} { return p.holding }

// ReadBack lists the zones anneal read after writing to them, the last
// one the read the proxy held at.
func (p *holdProxy) ReadBack() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, len(p.readBack))
	for i, z := range p.readBack {
		out[i] = strings.TrimSuffix(z, ".")
	}
	return out
}

// Settle returns once the proxy holds and the server has answered every
// UPDATE it relayed: the server's zones then change no more through it.
func (p *holdProxy) Settle() {
	<-p.holding
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.inflight > 0 {
		p.answered.Wait()
	}
}

// Close stops the proxy, closing every connection, and reports what went
// wrong in it.
func (p *holdProxy) Close() {
	p.closeOnce.Do(func() {
		p.tcp.Close()
		p.udp.Close()
		p.mu.Lock()
		p.closed = true
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
		for _, err := range p.errs {
			p.t.Errorf("holdProxy: %v", err)
		}
	})
}

// track registers a connection for Close; false if the proxy is closed.
func (p *holdProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *holdProxy) release(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *holdProxy) fail(err error) {
	p.mu.Lock()
	p.errs = append(p.errs, err)
	p.mu.Unlock()
}

// zoneOf returns the zone a name is in, or "".
func (p *holdProxy) zoneOf(name string) string {
	name = dns.CanonicalName(name)
	best := ""
	for _, z := range p.zones {
		if dns.IsSubDomain(z, name) && len(z) > len(best) {
			best = z
		}
	}
	return best
}

// toServer relays one message from anneal to the server with send, unless
// the proxy holds, or this message makes it hold.
func (p *holdProxy) toServer(raw []byte, f *flow, send func() error) {
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil || len(m.Question) != 1 {
		p.fail(fmt.Errorf("a message from anneal with %d questions (%v): not relayed", len(m.Question), err))
		return
	}
	zone := p.zoneOf(m.Question[0].Name)
	update := m.Opcode == dns.OpcodeUpdate
	if !update && zone != "" {
		p.mu.Lock()
		holdNow := false
		if p.written[zone] && !p.isReadBack(zone) {
			p.readBack = append(p.readBack, zone)
			holdNow = len(p.readBack) == p.holdAt
		}
		p.mu.Unlock()
		if holdNow {
			p.gate.Lock()
			if !p.held {
				p.held = true
				close(p.holding)
			}
			p.gate.Unlock()
		}
	}
	p.gate.RLock()
	defer p.gate.RUnlock()
	if p.held {
		return
	}
	if update {
		p.mu.Lock()
		if zone == p.stall && p.written[zone] {
			p.mu.Unlock()
			return
		}
		p.written[zone] = true
		f.pending[m.Id]++
		f.npending++
		p.inflight++
		p.mu.Unlock()
	}
	if err := send(); err != nil {
		// The answer side sees the connection fail too and settles
		// what is pending on it.
		return
	}
}

func (p *holdProxy) isReadBack(zone string) bool {
	for _, z := range p.readBack {
		if z == zone {
			return true
		}
	}
	return false
}

// fromServer notes the server's answer to a relayed UPDATE and relays it
// with send unless the proxy holds. It returns whether the flow is over:
// its client gone and nothing pending.
func (p *holdProxy) fromServer(raw []byte, f *flow, send func() error) (over bool) {
	if len(raw) >= 2 {
		id := binary.BigEndian.Uint16(raw)
		p.mu.Lock()
		if f.pending[id] > 0 {
			f.pending[id]--
			f.npending--
			p.inflight--
			p.answered.Broadcast()
		}
		over = f.clientDone && f.npending == 0
		p.mu.Unlock()
	}
	p.gate.RLock()
	defer p.gate.RUnlock()
	if !p.held {
		_ = send() // the client may have gone: nothing to do about it
	}
	return over
}

// serverGone settles a flow whose server side ended: what it had not
// answered, it never will.
func (p *holdProxy) serverGone(f *flow) {
	p.mu.Lock()
	p.inflight -= f.npending
	f.npending = 0
	clear(f.pending)
	p.answered.Broadcast()
	p.mu.Unlock()
	p.release(f.up)
}

func (p *holdProxy) acceptTCP() {
	defer p.wg.Done()
	for {
		c, err := p.tcp.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serveTCP(c)
	}
}

// serveTCP relays one TCP connection, message by message (RFC 1035 4.2.2
// framing), to its own connection to the server.
func (p *holdProxy) serveTCP(c net.Conn) {
	defer p.wg.Done()
	defer p.release(c)
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		p.fail(err)
		return
	}
	if !p.track(up) {
		return
	}
	f := &flow{client: c, up: up, pending: map[uint16]int{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer p.serverGone(f)
		for {
			msg, err := readFrame(up)
			if err != nil {
				return
			}
			if p.fromServer(msg, f, func() error { return writeFrame(c, msg) }) {
				return
			}
		}
	}()
	for {
		msg, err := readFrame(c)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, io.ErrUnexpectedEOF) && !isReset(err) {
				p.fail(fmt.Errorf("read from anneal: %w", err))
			}
			break
		}
		p.toServer(msg, f, func() error { return writeFrame(up, msg) })
	}
	// The client is gone: the server connection ends once it has answered
	// every UPDATE relayed on it (at once if there are none).
	p.mu.Lock()
	f.clientDone = true
	idle := f.npending == 0
	p.mu.Unlock()
	if idle {
		p.release(up)
	}
}

// serveUDP relays each query from its own socket to the server, and the
// one answer back.
func (p *holdProxy) serveUDP() {
	defer p.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := p.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		msg := bytes.Clone(buf[:n])
		up, err := net.Dial("udp", p.upstream)
		if err != nil {
			p.fail(err)
			continue
		}
		if !p.track(up) {
			return
		}
		f := &flow{up: up, pending: map[uint16]int{}, clientDone: true}
		p.toServer(msg, f, func() error { _, err := up.Write(msg); return err })
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.serverGone(f)
			ans := make([]byte, 65535)
			n, err := up.Read(ans)
			if err != nil {
				return
			}
			p.fromServer(ans[:n], f, func() error { _, err := p.udp.WriteTo(ans[:n], from); return err })
		}()
	}
}

func readFrame(c net.Conn) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func writeFrame(c net.Conn, msg []byte) error {
	_, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(msg))), msg...))
	return err
}

// isReset reports a connection its peer reset: a killed anneal's, with
// data it had not read.
func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }
