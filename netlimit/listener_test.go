package netlimit

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// fdCount is the number of descriptors this process holds.
func fdCount(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("NOT RUN: no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// acceptor serves l: every accepted connection gets one byte, so that its
// client can tell it was accepted (a refused one reads an error).
type acceptor struct {
	l        *Listener
	accepted chan net.Conn
}

func startAcceptor(t *testing.T, lim Limits) *acceptor {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptor{l: NewListener(inner, lim, nil), accepted: make(chan net.Conn, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := a.l.Accept()
			if err != nil {
				return
			}
			if _, err := c.Write([]byte{'k'}); err != nil {
				t.Errorf("write to an accepted connection: %v", err)
			}
			a.accepted <- c
		}
	}()
	t.Cleanup(func() {
		a.l.Close()
		<-done
		close(a.accepted)
		for c := range a.accepted {
			c.Close()
		}
	})
	return a
}

// dial connects from src and reports whether the server accepted.
func (a *acceptor) dial(t *testing.T, src string) (net.Conn, bool) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", a.l.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return nil, false // reset before connect returned
	}
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	if n == 1 {
		return c, true
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("dial from %s: neither accepted nor refused in 30 s", src)
	}
	c.Close()
	return nil, false
}

// TestListenerBounds: per-source and total bounds, and each connection's
// slot released when the server closes it.
func TestListenerBounds(t *testing.T) {
	tests := []struct {
		name      string
		lim       Limits
		sources   []string // one dial each, in order
		accepted  []bool
		closeThen []string // after closing every accepted connection, these dial again
	}{
		{
			name:      "per source",
			lim:       Limits{MaxConns: 10, MaxConnsPerSource: 2},
			sources:   []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.2", "127.0.0.3"},
			accepted:  []bool{true, true, false, true, true, false, true},
			closeThen: []string{"127.0.0.1", "127.0.0.1"},
		},
		{
			name:      "total",
			lim:       Limits{MaxConns: 3, MaxConnsPerSource: 2},
			sources:   []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.1"},
			accepted:  []bool{true, true, true, false, false},
			closeThen: []string{"127.0.0.4", "127.0.0.5", "127.0.0.6"},
		},
		{
			name:      "per source off",
			lim:       Limits{MaxConns: 4, MaxConnsPerSource: -1},
			sources:   []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1"},
			accepted:  []bool{true, true, true, true, false},
			closeThen: []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := startAcceptor(t, tc.lim)
			var clients []net.Conn
			defer func() {
				for _, c := range clients {
					c.Close()
				}
			}()
			for i, src := range tc.sources {
				c, ok := a.dial(t, src)
				if ok != tc.accepted[i] {
					t.Fatalf("dial %d from %s: accepted %v, want %v", i, src, ok, tc.accepted[i])
				}
				if ok {
					clients = append(clients, c)
				}
			}
			if got := a.l.Refused(); got != int64(len(tc.sources)-len(clients)) {
				t.Errorf("Refused() = %d, want %d", got, len(tc.sources)-len(clients))
			}
			// The server closes what it accepted: every slot comes back.
			for range clients {
				(<-a.accepted).Close()
			}
			if n := a.l.Active(); n != 0 {
				t.Fatalf("Active() = %d after every connection closed", n)
			}
			for _, src := range tc.closeThen {
				c, ok := a.dial(t, src)
				if !ok {
					t.Fatalf("dial from %s after the slots were released: refused", src)
				}
				clients = append(clients, c)
			}
		})
	}
}

// TestListenerNoLeak: hundreds of refused connections leave no
// descriptor and no slot behind, and a closed connection's slot is freed
// once however often it is closed.
func TestListenerNoLeak(t *testing.T) {
	a := startAcceptor(t, Limits{MaxConns: 8, MaxConnsPerSource: 4})
	held := make([]net.Conn, 0, 4)
	for range 4 {
		c, ok := a.dial(t, "127.0.0.1")
		if !ok {
			t.Fatal("refused under the bound")
		}
		held = append(held, c)
	}
	server := make([]net.Conn, 0, 4)
	for range 4 {
		server = append(server, <-a.accepted)
	}
	base := fdCount(t)
	const flood = 300
	for i := range flood {
		if c, ok := a.dial(t, "127.0.0.1"); ok {
			c.Close()
			t.Fatalf("dial %d accepted over the per-source bound", i)
		}
	}
	if got := fdCount(t); got > base+2 {
		t.Errorf("%d descriptors after %d refused connections, %d before", got, flood, base)
	}
	if a.l.Refused() != flood {
		t.Errorf("Refused() = %d, want %d", a.l.Refused(), flood)
	}
	for _, c := range server {
		c.Close()
		c.Close() // twice: released once
	}
	for _, c := range held {
		c.Close()
	}
	if n := a.l.Active(); n != 0 {
		t.Errorf("Active() = %d after every connection closed", n)
	}
	a.l.mu.Lock()
	left := len(a.l.bySource)
	a.l.mu.Unlock()
	if left != 0 {
		t.Errorf("%d sources still counted after every connection closed", left)
	}
}

func TestSourceOf(t *testing.T) {
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 1}, "192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:3:4:5:6"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:ffff::1"), Port: 1}, "2001:db8:1:2::"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, "fe80::"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "invalid IP"},
	}
	for _, tc := range tests {
		if got := sourceOf(tc.addr); got.String() != tc.want {
			t.Errorf("sourceOf(%v) = %v, want %s", tc.addr, got, tc.want)
		}
	}
	if sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8::1")}) == sourceOf(&net.TCPAddr{IP: net.ParseIP("2001:db8:0:1::1")}) {
		t.Error("two /64s counted as one source")
	}
}
