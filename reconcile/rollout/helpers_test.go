package rollout

import (
	"testing"

	"github.com/anneal-dev/anneal/internal/sitetest"
	"github.com/anneal-dev/anneal/schema"
)

// siteWith loads a copy of the example site with edits applied to files.
func siteWith(t *testing.T, edits map[string]func(string) string) *schema.Site {
	return sitetest.ExampleWith(t, "../../examples/site-repo", edits)
}

// generated loads a site of bench/sitegen's layout.
func generated(b *testing.B, nodes int) *schema.Site { return sitetest.Generated(b, nodes) }
