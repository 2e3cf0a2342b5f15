package schema_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anneal-dev/anneal/bench/sitegen/gen"
	"github.com/anneal-dev/anneal/schema"
)

// openSignal is a file system that says when the loader first opens a file.
type openSignal struct {
	fs.StatFS
	once   sync.Once
	opened chan struct{}
}

func (o *openSignal) Open(name string) (fs.File, error) {
	f, err := o.StatFS.Open(name)
	if err == nil && filepath.Ext(name) == ".yaml" {
		o.once.Do(func() { close(o.opened) })
	}
	return f, err
}

// TestLoadStopsOnCancel: cancelling the context while a big site loads
// makes Load return context.Canceled, without a site, long before the load
// would have finished.
func TestLoadStopsOnCancel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "site")
	if _, err := gen.Generate(dir, gen.Options{Nodes: 4000, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	fsys := &openSignal{StatFS: os.DirFS(dir).(fs.StatFS), opened: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		site *schema.Site
		err  error
	}
	done := make(chan result, 1)
	go func() {
		site, _, err := schema.Load(ctx, fsys, schema.LoadOptions{Workers: 1})
		done <- result{site, err}
	}()
	<-fsys.opened
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) || r.site != nil {
			t.Fatalf("Load after cancel = %v, %v; want no site and context.Canceled", r.site, r.err)
		}
	case <-time.After(time.Minute): // only to fail, never to pass
		t.Fatal("Load did not return within a minute of its context being cancelled")
	}
}
