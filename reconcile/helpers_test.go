package reconcile

import (
	"context"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

func exampleSite(t testing.TB) *schema.Site {
	t.Helper()
	s, _, err := schema.LoadDir(context.Background(), "../examples/site-repo", schema.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
