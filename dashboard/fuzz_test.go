package dashboard

import (
	"fmt"
	"net/http/httptest"
	"net/url"
	"testing"
)

// FuzzNodeQuery: any query of GET /ui/api/nodes parses to a bounded filter
// or an error, never a panic, and the page it selects holds at most
// MaxPerPage rows, all matching, with the page number within the pages.
func FuzzNodeQuery(f *testing.F) {
	for _, q := range []string{"", "page=2&per=3", "per=500", "page=1048576", "per=0", "page=-1", "per=99999999999999999999",
		"region=east&rack=e1&state=drift&q=N0", "q=%ff%fe", "page=1&page=2", "state=failed&per=1", "q=" + string(make([]byte, 300))} {
		f.Add(q)
	}
	rows := make([]Row, 0, 300)
	for i := range 300 {
		rows = append(rows, Row{Name: fmt.Sprintf("n%04d", i), Region: []string{"east", "west"}[i%2], Rack: fmt.Sprintf("r%d", i%7),
			State: "active", Live: []string{"", "verified", "failed"}[i%3], UpToDate: i%5 != 0})
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/ui/api/nodes", nil)
		r.URL.RawQuery = raw
		flt, err := parseFilter(r)
		if err != nil {
			return
		}
		if flt.PerPage < 1 || flt.PerPage > MaxPerPage || flt.Page < 1 {
			t.Fatalf("query %q: filter %+v out of bounds", raw, flt)
		}
		p := Page(rows, flt)
		if len(p.Nodes) > flt.PerPage || p.Page < 1 || p.Page > p.Pages || p.Matched > p.Total {
			t.Fatalf("query %q: page %d of %d, %d rows of %d per page, %d matched of %d", raw, p.Page, p.Pages, len(p.Nodes), flt.PerPage, p.Matched, p.Total)
		}
		kept := Page(rows, Filter{Region: flt.Region, Rack: flt.Rack, State: flt.State, Query: flt.Query, Page: 1, PerPage: len(rows)})
		if kept.Matched != p.Matched {
			t.Fatalf("query %q: %d matched, %d on one page", raw, p.Matched, kept.Matched)
		}
		if _, err := url.ParseQuery(raw); err == nil && len(p.Nodes) == 0 && p.Matched > 0 {
			t.Fatalf("query %q: an empty page of %d matching rows", raw, p.Matched)
		}
	})
}
