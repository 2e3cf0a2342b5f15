package lab

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestEndpoints: a waiter sees the endpoints a lab writes after it started
// waiting, whole; removed, they are gone; a lab that never starts is a
// timeout naming the file.
func TestEndpoints(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadEndpoints(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("no lab: %v", err)
	}
	want := Endpoints{Redfish: "127.0.0.1:1234", Control: "http://127.0.0.1:5678", PID: 42}
	removed := make(chan func(), 1)
	go func() {
		time.Sleep(150 * time.Millisecond)
		remove, err := WriteEndpoints(dir, want)
		if err != nil {
			t.Error(err)
		}
		removed <- remove
	}()
	got, err := WaitEndpoints(context.Background(), dir, 10*time.Second)
	if err != nil || *got != want {
		t.Fatalf("WaitEndpoints = %+v, %v; want %+v", got, err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, EndpointsFile+".tmp")); !os.IsNotExist(err) {
		t.Errorf("temporary file left: %v", err)
	}
	if remove := <-removed; remove != nil {
		remove()
	}
	if _, err := ReadEndpoints(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after remove: %v", err)
	}
	if _, err := WaitEndpoints(context.Background(), dir, 100*time.Millisecond); err == nil {
		t.Fatal("no lab: WaitEndpoints returned")
	}
}
