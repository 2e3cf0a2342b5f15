package netlimit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve runs h on a loopback NewServer and Listener of lim until the test
// ends; it returns the address.
func serve(t *testing.T, lim Limits, h http.Handler) string {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(h, lim)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(NewListener(inner, lim, nil))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return inner.Addr().String()
}

// TestSlowBodyCut: a request that sends its headers and one body byte,
// then stalls, is closed after ReadTimeout.
func TestSlowBodyCut(t *testing.T) {
	handlerErr := make(chan error, 1)
	addr := serve(t, Limits{ReadTimeout: 300 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		handlerErr <- err
	}))
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.ReadAll(c) // until the server closes
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the stalled request was not closed in 30 s")
	}
	if err := <-handlerErr; err == nil {
		t.Error("the handler read a stalled body to its end")
	}
}

// TestLongResponseNotCut: a response that takes longer than ReadTimeout
// and the progress timeout together, while making progress, completes and
// its request's context stays alive.
func TestLongResponseNotCut(t *testing.T) {
	const parts = 12
	lim := Limits{ReadTimeout: 150 * time.Millisecond, WriteTimeout: 150 * time.Millisecond}
	tests := []struct {
		name string
		body string
	}{
		{"no body", ""},
		{"body", `{"read":"first"}`},
	}
	addr := serve(t, lim, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		tick := time.NewTicker(50 * time.Millisecond) // pacing: parts × 50 ms > both timeouts
		defer tick.Stop()
		for i := range parts {
			<-tick.C
			fmt.Fprintf(w, "part %d\n", i)
			_ = http.NewResponseController(w).Flush()
		}
		fmt.Fprintf(w, "context: %v\n", r.Context().Err())
	}))
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodGet
			if tc.body != "" {
				method = http.MethodPost
			}
			req, _ := http.NewRequest(method, "http://"+addr+"/", strings.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read after %q: %v", got, err)
			}
			if !strings.Contains(string(got), fmt.Sprintf("part %d\n", parts-1)) || !strings.HasSuffix(string(got), "context: <nil>\n") {
				t.Errorf("response:\n%s", got)
			}
		})
	}
}

// TestStalledReaderCut: a client that stops reading a long download has
// its connection cut once no write progressed for WriteTimeout.
func TestStalledReaderCut(t *testing.T) {
	writeErr := make(chan error, 1)
	addr := serve(t, Limits{WriteTimeout: 200 * time.Millisecond}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}))
	c, err := net.DialTCP("tcp", nil, mustTCPAddr(t, addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadBuffer(4096)
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-writeErr:
		t.Logf("the stalled download was cut: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("a write to a reader that stopped reading still blocks after 30 s")
	}
}

func mustTCPAddr(t *testing.T, addr string) *net.TCPAddr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestFileDownload: files served through the kernel's zero-copy path in
// progress-deadline chunks arrive whole, ranges too.
func TestFileDownload(t *testing.T) {
	data := make([]byte, 3*writeChunk+17)
	for i := range data {
		data[i] = byte(i * 7)
	}
	path := filepath.Join(t.TempDir(), "initrd")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := serve(t, Limits{WriteTimeout: 5 * time.Second}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, path)
	}))
	tests := []struct {
		name, rng string
		want      []byte
	}{
		{"whole", "", data},
		{"range", fmt.Sprintf("bytes=%d-%d", writeChunk-5, 2*writeChunk+9), data[writeChunk-5 : 2*writeChunk+10]},
		{"tail", "bytes=-3", data[len(data)-3:]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(tc.want) {
				t.Errorf("%d bytes, want %d (status %s)", len(got), len(tc.want), resp.Status)
			}
		})
	}
}

// TestBodyBound: a declared body over MaxBodyBytes is refused with 413
// before the handler runs; a chunked one is cut at the bound.
func TestBodyBound(t *testing.T) {
	handlerErr := make(chan error, 1)
	addr := serve(t, Limits{MaxBodyBytes: 1000}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		handlerErr <- err
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		}
	}))
	tests := []struct {
		name    string
		request string
		status  int
		maxErr  bool // the handler ran and saw *http.MaxBytesError
	}{
		{"declared", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("y", 100000), http.StatusRequestEntityTooLarge, false},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n7d1\r\n" + strings.Repeat("y", 2001) + "\r\n0\r\n\r\n", http.StatusRequestEntityTooLarge, true},
		{"within", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + strings.Repeat("y", 1000), http.StatusOK, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := io.WriteString(c, tc.request); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == http.StatusRequestEntityTooLarge && !tc.maxErr {
				select {
				case err := <-handlerErr:
					t.Errorf("the handler ran (read error %v)", err)
				default:
				}
				return
			}
			err = <-handlerErr
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) != tc.maxErr {
				t.Errorf("handler read error %v", err)
			}
		})
	}
}
