package labdns

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// The PowerDNS Authoritative 4.7 HTTP API, the part of it
// providers/dns/powerdns uses, with the shapes and status codes 4.7.3
// answers with (measured against it): 401 "Unauthorized" and 404 "Not
// Found" as plain text, 422 with {"error": …} for a change it refuses,
// 400 "Bad Request" for a body that is not JSON or over the size limit,
// 204 for a PATCH applied.

// apiVersion is what the lab reports as its PowerDNS version.
const apiVersion = "4.7.3-anneal-lab"

// apiServer is a server object (GET /api/v1/servers/{id}).
type apiServer struct {
	AutoprimariesURL string `json:"autoprimaries_url"`
	ConfigURL        string `json:"config_url"`
	DaemonType       string `json:"daemon_type"`
	ID               string `json:"id"`
	Type             string `json:"type"`
	URL              string `json:"url"`
	Version          string `json:"version"`
	ZonesURL         string `json:"zones_url"`
}

// apiZoneSummary is a zone in the zone list.
type apiZoneSummary struct {
	Account        string   `json:"account"`
	Catalog        string   `json:"catalog"`
	DNSSEC         bool     `json:"dnssec"`
	EditedSerial   uint32   `json:"edited_serial"`
	ID             string   `json:"id"`
	Kind           string   `json:"kind"`
	LastCheck      int      `json:"last_check"`
	Masters        []string `json:"masters"`
	Name           string   `json:"name"`
	NotifiedSerial uint32   `json:"notified_serial"`
	Serial         uint32   `json:"serial"`
	URL            string   `json:"url"`
}

// apiZone is one zone (GET …/zones/{id}); RRsets is left out with
// ?rrsets=false.
type apiZone struct {
	Account          string     `json:"account"`
	APIRectify       bool       `json:"api_rectify"`
	Catalog          string     `json:"catalog"`
	DNSSEC           bool       `json:"dnssec"`
	EditedSerial     uint32     `json:"edited_serial"`
	ID               string     `json:"id"`
	Kind             string     `json:"kind"`
	LastCheck        int        `json:"last_check"`
	MasterTSIGKeyIDs []string   `json:"master_tsig_key_ids"`
	Masters          []string   `json:"masters"`
	Name             string     `json:"name"`
	NotifiedSerial   uint32     `json:"notified_serial"`
	NSEC3Narrow      bool       `json:"nsec3narrow"`
	NSEC3Param       string     `json:"nsec3param"`
	RRsets           []apiRRset `json:"rrsets,omitempty"`
	Serial           uint32     `json:"serial"`
	SlaveTSIGKeyIDs  []string   `json:"slave_tsig_key_ids"`
	SOAEdit          string     `json:"soa_edit"`
	// SOAEditAPI is INCREASE: every PATCH adds one to the serial.
	SOAEditAPI string `json:"soa_edit_api"`
	URL        string `json:"url"`
}

type apiRRset struct {
	Comments []Comment   `json:"comments"`
	Name     string      `json:"name"`
	Records  []apiRecord `json:"records"`
	TTL      uint32      `json:"ttl"`
	Type     string      `json:"type"`
}

type apiRecord struct {
	Content  string `json:"content"`
	Disabled bool   `json:"disabled"`
}

// patchItem is one RRset of a PATCH body; a nil Records or Comments is
// a key the body does not have.
type patchItem struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	TTL        json.RawMessage `json:"ttl"`
	ChangeType string          `json:"changetype"`
	Records    *[]apiRecord    `json:"records"`
	Comments   *[]Comment      `json:"comments"`
}

type configSetting struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Value string `json:"value"`
}

// apiHandler serves the API.
func (s *Server) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, []map[string]any{{"api_features": []string{}, "server_url": "/api/v1/servers{/server}"}})
	})
	mux.HandleFunc("GET /api/v1/servers", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, []apiServer{s.apiServer()})
	})
	mux.HandleFunc("GET /api/v1/servers/{server}", s.withServer(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, s.apiServer())
	}))
	mux.HandleFunc("GET /api/v1/servers/{server}/config", s.withServer(s.getConfig))
	mux.HandleFunc("GET /api/v1/servers/{server}/zones", s.withServer(s.listZones))
	mux.HandleFunc("GET /api/v1/servers/{server}/zones/{zone}", s.withServer(s.getZone))
	mux.HandleFunc("PATCH /api/v1/servers/{server}/zones/{zone}", s.withServer(s.patchZone))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		begin := time.Now()
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-API-Key")), []byte(s.apiKey)) != 1 {
			rec.Header().Set("WWW-Authenticate", `X-API-Key realm="PowerDNS"`)
			plain(rec, http.StatusUnauthorized, "Unauthorized")
		} else {
			mux.ServeHTTP(rec, r)
		}
		s.log.Debug("lab dns API", "method", r.Method, "path", r.URL.Path, "status", rec.status, "took", time.Since(begin))
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// withServer answers 404 for a server id that is not this server's.
func (s *Server) withServer(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("server") != s.serverID {
			plain(w, http.StatusNotFound, "Not Found")
			return
		}
		h(w, r)
	}
}

func (s *Server) apiServer() apiServer {
	base := "/api/v1/servers/" + s.serverID
	return apiServer{
		AutoprimariesURL: base + "/autoprimaries{/autoprimary}",
		ConfigURL:        base + "/config{/config_setting}",
		DaemonType:       "authoritative",
		ID:               s.serverID,
		Type:             "Server",
		URL:              base,
		Version:          apiVersion,
		ZonesURL:         base + "/zones{/zone}",
	}
}

func (s *Server) getConfig(w http.ResponseWriter, _ *http.Request) {
	set := func(name, value string) configSetting {
		return configSetting{Name: name, Type: "ConfigSetting", Value: value}
	}
	writeJSON(w, http.StatusOK, []configSetting{
		set("allow-axfr-ips", "0.0.0.0/0,::/0"),
		set("api", "yes"),
		set("api-key", "***"),
		set("default-soa-edit", ""),
		set("dnsupdate", "no"),
		set("webserver", "yes"),
		set("webserver-max-bodysize", strconv.Itoa(s.maxBody>>20)),
	})
}

// zoneID is a zone's API id: its name, with "/" written "=2F".
func zoneID(origin string) string { return strings.ReplaceAll(origin, "/", "=2F") }

func (s *Server) zoneURL(origin string) string {
	return "/api/v1/servers/" + s.serverID + "/zones/" + zoneID(origin)
}

// apiZoneFor returns the zone an API path names, or nil.
func (s *Server) apiZoneFor(r *http.Request) *zone {
	id := strings.ReplaceAll(r.PathValue("zone"), "=2F", "/")
	return s.zones[dns.CanonicalName(id)]
}

func (s *Server) listZones(w http.ResponseWriter, r *http.Request) {
	only := r.URL.Query().Get("zone")
	out := []apiZoneSummary{}
	for _, name := range s.Zones() {
		z := s.zones[dns.Fqdn(name)]
		if only != "" && dns.CanonicalName(only) != z.origin {
			continue
		}
		z.mu.RLock()
		serial := z.serial()
		z.mu.RUnlock()
		out = append(out, apiZoneSummary{
			Catalog: "", EditedSerial: serial, ID: zoneID(z.origin), Kind: "Native", Masters: []string{},
			Name: z.origin, Serial: serial, URL: s.zoneURL(z.origin),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getZone(w http.ResponseWriter, r *http.Request) {
	z := s.apiZoneFor(r)
	if z == nil {
		plain(w, http.StatusNotFound, "Not Found")
		return
	}
	withRRsets := r.URL.Query().Get("rrsets") != "false"
	out := apiZone{
		ID: zoneID(z.origin), Kind: "Native", MasterTSIGKeyIDs: []string{}, Masters: []string{}, Name: z.origin,
		SlaveTSIGKeyIDs: []string{}, SOAEditAPI: "INCREASE", URL: s.zoneURL(z.origin),
	}
	z.mu.RLock()
	out.Serial = z.serial()
	out.EditedSerial = out.Serial
	if withRRsets {
		keys := z.keys()
		out.RRsets = make([]apiRRset, 0, len(keys))
		for _, k := range keys {
			set := z.get(k.name, k.typ)
			a := apiRRset{Comments: set.comments, Name: k.name, Records: make([]apiRecord, 0, len(set.records)), TTL: set.ttl, Type: dns.TypeToString[k.typ]}
			if a.Comments == nil {
				a.Comments = []Comment{}
			}
			for _, rec := range set.records {
				a.Records = append(a.Records, apiRecord{Content: rdata(rec.rr), Disabled: rec.disabled})
			}
			out.RRsets = append(out.RRsets, a)
		}
	}
	z.mu.RUnlock()
	writeJSON(w, http.StatusOK, out)
}

// rdata renders a record's RDATA in presentation form: PowerDNS's
// "content" (MX "10 mail.example.net.", TXT quoted).
func rdata(rr dns.RR) string {
	return strings.TrimPrefix(rr.String(), rr.Header().String())
}

// change is one validated RRset of a PATCH.
type change struct {
	key      setKey
	display  string // "name IN TYPE", as PowerDNS names an RRset in errors
	replace  bool
	ttl      uint32
	records  []record // with replace: nil keeps the records
	setRecs  bool
	comments []Comment // with replace: nil keeps the comments
	setComs  bool
}

// patchError is a change PowerDNS would answer 422 to.
type patchError struct{ msg string }

func (e *patchError) Error() string { return e.msg }

func unprocessable(format string, args ...any) error {
	return &patchError{fmt.Sprintf(format, args...)}
}

func (s *Server) patchZone(w http.ResponseWriter, r *http.Request) {
	z := s.apiZoneFor(r)
	if z == nil {
		plain(w, http.StatusNotFound, "Not Found")
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.maxBody)))
	if err != nil {
		plain(w, http.StatusBadRequest, "Bad Request")
		return
	}
	var body struct {
		RRsets *[]patchItem `json:"rrsets"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			apiError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Key '%s' is not of the expected type", typ.Field))
			return
		}
		plain(w, http.StatusBadRequest, "Bad Request")
		return
	}
	if body.RRsets == nil {
		apiError(w, http.StatusUnprocessableEntity, "No rrsets given in update request")
		return
	}
	changes, err := z.validate(*body.RRsets)
	if err != nil {
		s.log.Info("lab dns refused a PATCH", "zone", strings.TrimSuffix(z.origin, "."), "err", err)
		apiError(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	old, serial, err := z.patch(changes)
	if err != nil {
		var pe *patchError
		if errors.As(err, &pe) {
			s.log.Info("lab dns refused a PATCH", "zone", strings.TrimSuffix(z.origin, "."), "err", err)
			apiError(w, http.StatusUnprocessableEntity, err.Error())
			return
		}
		s.log.Error("lab dns could not keep a PATCH", "zone", strings.TrimSuffix(z.origin, "."), "err", err)
		apiError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.log.Info("lab dns PATCH applied", "zone", strings.TrimSuffix(z.origin, "."), "serial", serial, "rrsets", len(changes))
	w.Header().Set("X-PDNS-Old-Serial", strconv.FormatUint(uint64(old), 10))
	w.Header().Set("X-PDNS-New-Serial", strconv.FormatUint(uint64(serial), 10))
	w.WriteHeader(http.StatusNoContent)
}

// validate checks a PATCH's RRsets as PowerDNS 4.7 does, before any of
// them is applied, and returns them as changes.
func (z *zone) validate(items []patchItem) ([]change, error) {
	out := make([]change, 0, len(items))
	seen := map[setKey]bool{}
	for _, it := range items {
		if !strings.HasSuffix(it.Name, ".") {
			return nil, unprocessable("DNS Name '%s' is not canonical", it.Name)
		}
		if _, ok := dns.IsDomainName(it.Name); !ok {
			return nil, unprocessable("DNS Name '%s' is not a valid name", it.Name)
		}
		name := dns.CanonicalName(it.Name)
		typ := strings.ToUpper(it.Type)
		display := it.Name + " IN " + typ
		t, known := dns.StringToType[typ]
		if !known || metaType(t) {
			return nil, unprocessable("RRset %s: unknown type given", display)
		}
		if !dns.IsSubDomain(z.origin, name) {
			return nil, unprocessable("RRset %s: Name is out of zone", display)
		}
		c := change{key: setKey{name, t}, display: display}
		switch strings.ToUpper(it.ChangeType) {
		case "REPLACE":
			c.replace = true
		case "DELETE":
		default:
			return nil, unprocessable("Changetype not understood")
		}
		if seen[c.key] {
			return nil, unprocessable("Duplicate RRset %s with changetype: %s", display, strings.ToUpper(it.ChangeType))
		}
		seen[c.key] = true
		apexSOA := t == dns.TypeSOA && name == z.origin
		switch {
		case !c.replace && apexSOA:
			return nil, unprocessable("RRset %s: the lab keeps the zone's SOA: replace it, do not delete it", display)
		case !c.replace:
		case it.Records == nil && it.Comments == nil:
			return nil, unprocessable("No change for RRset %s", display)
		}
		if c.replace && it.Records != nil {
			ttl, err := strconv.ParseUint(string(it.TTL), 10, 32)
			if err != nil {
				return nil, unprocessable("Key 'ttl' not an Integer or not present")
			}
			c.ttl, c.setRecs = uint32(ttl), true
			c.records = []record{}
			for _, rec := range *it.Records {
				rr, err := parseContent(it.Name, typ, c.ttl, rec.Content)
				if err != nil {
					return nil, err
				}
				probe := &rrset{records: c.records}
				if probe.index(rr) >= 0 {
					return nil, unprocessable("Duplicate record in RRset %s with content \"%s\"", display, rec.Content)
				}
				r := newRecord(rr, c.ttl)
				r.disabled = rec.Disabled
				c.records = append(c.records, r)
			}
			switch {
			case t == dns.TypeSOA && !apexSOA:
				return nil, unprocessable("RRset %s: an SOA belongs at the apex", display)
			case apexSOA && len(c.records) != 1:
				return nil, unprocessable("RRset %s: a zone has exactly one SOA record", display)
			case t == dns.TypeCNAME && len(c.records) > 1:
				return nil, unprocessable("RRset %s has more than one record", display)
			}
		}
		if c.replace && it.Comments != nil {
			c.setComs = true
			c.comments = make([]Comment, 0, len(*it.Comments))
			for _, com := range *it.Comments {
				c.comments = append(c.comments, nowComment(com))
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// parseContent parses PowerDNS content: RDATA in presentation form,
// every name in it absolute.
func parseContent(name, typ string, ttl uint32, content string) (dns.RR, error) {
	fail := func(format string, args ...any) error {
		return unprocessable("Record %s/%s '%s': "+format, append([]any{name, typ, content}, args...)...)
	}
	if strings.ContainsAny(content, "\n\r") {
		return nil, fail("Parsing record content (try 'pdnsutil check-zone'): a line break")
	}
	line := fmt.Sprintf("%s %d IN %s %s", name, ttl, typ, content)
	parse := func(origin string) (dns.RR, error) {
		zp := dns.NewZoneParser(strings.NewReader(line), origin, "")
		rr, ok := zp.Next()
		if err := zp.Err(); err != nil {
			return nil, err
		}
		if !ok {
			return nil, errors.New("no content")
		}
		return rr, nil
	}
	rr, err := parse(".")
	if err != nil {
		return nil, fail("Parsing record content (try 'pdnsutil check-zone'): %v", err)
	}
	if rr.Header().Rrtype != dns.StringToType[typ] {
		return nil, fail("Parsing record content (try 'pdnsutil check-zone'): parsed as type %s", dns.TypeToString[rr.Header().Rrtype])
	}
	// A relative name in the content comes out differently under another
	// origin: PowerDNS takes only absolute names.
	if other, err := parse("lab.invalid."); err != nil || other.String() != rr.String() {
		return nil, fail("Not in expected format (parsed as '%s')", rdata(rr))
	}
	return rr, nil
}

// patch applies validated changes in order, as one transaction, and adds
// one to the serial (soa_edit_api INCREASE; PowerDNS moves it on every
// PATCH, even one that changes nothing). It returns the serial before
// and after.
func (z *zone) patch(changes []change) (uint32, uint32, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	old := z.serial()
	z.begin()
	for _, c := range changes {
		cur := z.get(c.key.name, c.key.typ)
		if !c.replace {
			z.put(c.key.name, c.key.typ, nil)
			continue
		}
		n := &rrset{ttl: c.ttl, records: c.records, comments: c.comments}
		if !c.setRecs && cur != nil {
			n.ttl, n.records = cur.ttl, cur.records
		}
		if !c.setComs && cur != nil {
			n.comments = cur.comments
		}
		if c.setRecs && n.served() && z.conflicts(c.key) {
			z.rollback()
			return 0, 0, unprocessable("RRset %s: Conflicts with pre-existing RRset", c.display)
		}
		z.put(c.key.name, c.key.typ, n)
	}
	z.bumpSerial()
	if err := z.save(); err != nil {
		z.rollback()
		return 0, 0, err
	}
	z.commit()
	return old, z.serial(), nil
}

// conflicts reports whether served data at k's name keeps an RRset of
// k's type from being served there: a CNAME beside other data.
func (z *zone) conflicts(k setKey) bool {
	if k.typ != dns.TypeCNAME {
		return z.get(k.name, dns.TypeCNAME).served()
	}
	for t, set := range z.nodes[k.name] {
		if t != dns.TypeCNAME && set.served() {
			return true
		}
	}
	return false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func plain(w http.ResponseWriter, status int, text string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, text)
}
