package boot

import (
	"cmp"
	"container/list"
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"
)

// MaxDiscovered bounds the discovery list; past it the MAC seen least
// recently is dropped, so a flood of made-up MACs cannot grow it.
const MaxDiscovered = 4096

// Discovery is a MAC that netbooted against this server without being in
// the site: hardware racked and cabled but not declared yet, or a typo.
type Discovery struct {
	MAC       string    `json:"mac"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
	Count     int       `json:"count"`
	// RemoteAddr is the IP address the last request came from.
	RemoteAddr string `json:"remoteAddr"`
}

// discovery is the bounded list, most recently seen first.
type discovery struct {
	mu    sync.Mutex
	order list.List // of *Discovery
	byMAC map[string]*list.Element
}

func (d *discovery) seen(mac, remote string, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byMAC == nil {
		d.byMAC = map[string]*list.Element{}
	}
	if e, ok := d.byMAC[mac]; ok {
		x := e.Value.(*Discovery)
		x.LastSeen, x.RemoteAddr = now, remote
		x.Count++
		d.order.MoveToFront(e)
		return
	}
	d.byMAC[mac] = d.order.PushFront(&Discovery{MAC: mac, FirstSeen: now, LastSeen: now, Count: 1, RemoteAddr: remote})
	for d.order.Len() > MaxDiscovered {
		oldest := d.order.Back()
		delete(d.byMAC, oldest.Value.(*Discovery).MAC)
		d.order.Remove(oldest)
	}
}

// Discovered returns the MACs not in the site that netbooted, most recently
// seen first (then by MAC).
func (s *Server) Discovered() []Discovery {
	s.disc.mu.Lock()
	out := make([]Discovery, 0, s.disc.order.Len())
	for e := s.disc.order.Front(); e != nil; e = e.Next() {
		out = append(out, *e.Value.(*Discovery))
	}
	s.disc.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Discovery) int {
		return cmp.Or(b.LastSeen.Compare(a.LastSeen), cmp.Compare(a.MAC, b.MAC))
	})
	return out
}

func (s *Server) handleDiscovered(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Discovered())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, "encode JSON", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}
