package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestStart(t *testing.T) {
	s := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := s.Client.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	r, err := s.Client.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("get k = %v, want v", r.Kvs)
	}
	st, err := s.Client.Status(ctx, s.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	if want := Version[1:]; st.Version != want {
		t.Fatalf("server version %s, want %s", st.Version, want)
	}
}
