package source

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestWatchDirDebounces(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	go func() { _ = WatchDir(ctx, dir, 150*time.Millisecond, func() { calls.Add(1) }) }()
	time.Sleep(100 * time.Millisecond) // let the watcher start
	// A burst: a new folder and several writes within the debounce.
	if err := os.MkdirAll(filepath.Join(dir, "nodes"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(dir, "site.yaml"), []byte{byte('a' + i)}, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(3 * time.Second)
	for calls.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := calls.Load(); got != 1 {
		t.Fatalf("one burst gave %d calls, want 1", got)
	}
	// A write in the folder created during the watch is seen too.
	if err := os.WriteFile(filepath.Join(dir, "nodes", "r1.yaml"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := calls.Load(); got != 2 {
		t.Fatalf("a write in a new folder gave %d calls in all, want 2", got)
	}
}
