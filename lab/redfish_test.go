package lab

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// rfResponse is one raw answer of a virtual BMC.
type rfResponse struct {
	code   int
	header http.Header
	body   string
}

func (r rfResponse) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("body is no JSON object: %v: %q", err, r.body)
	}
	return v
}

// rfDo makes one request to the BMC at host; auth: basic credentials.
func rfDo(t *testing.T, c *http.Client, method, host, path string, auth bool, body string) rfResponse {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, "https://"+host+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		req.SetBasicAuth("anneal", labPassword)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return rfResponse{resp.StatusCode, resp.Header, string(b)}
}

// idStyles are a node of each vendor Id style in the example site.
var idStyles = []struct {
	node, system, manager, chassis string
}{
	{"e1n01", "/redfish/v1/Systems/System.Embedded.1", "/redfish/v1/Managers/iDRAC.Embedded.1", "/redfish/v1/Chassis/System.Embedded.1"},
	{"w1n01", "/redfish/v1/Systems/1", "/redfish/v1/Managers/1", "/redfish/v1/Chassis/1"},
}

func redfishErrorCode(t *testing.T, r rfResponse) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// TestRedfishServiceDocuments: $metadata and the OData service document
// are served without credentials, like the service root.
func TestRedfishServiceDocuments(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	f := startFleet(t, Config{Site: site})
	c := rawClient(f)
	host := site.Node("e1n01").BMC.Address
	for _, tc := range []struct {
		path, contentType string
		check             func(t *testing.T, body string)
	}{
		{"/redfish", "application/json", func(t *testing.T, body string) {
			if !strings.Contains(body, `"v1":"/redfish/v1/"`) {
				t.Errorf("body %s", body)
			}
		}},
		{"/redfish/v1/", "application/json", func(t *testing.T, body string) {
			for _, s := range []string{`"RedfishVersion"`, `"UpdateService":{"@odata.id":"/redfish/v1/UpdateService"}`, `"SelectQuery":false`} {
				if !strings.Contains(body, s) {
					t.Errorf("no %s in %s", s, body)
				}
			}
		}},
		{"/redfish/v1", "application/json", nil},
		{"/redfish/v1/$metadata", "application/xml", func(t *testing.T, body string) {
			var doc struct {
				XMLName    xml.Name
				Version    string `xml:"Version,attr"`
				References []struct {
					URI      string `xml:"Uri,attr"`
					Includes []struct {
						Namespace string `xml:"Namespace,attr"`
						Alias     string `xml:"Alias,attr"`
					} `xml:"Include"`
				} `xml:"Reference"`
				Container struct {
					Name    string `xml:"Name,attr"`
					Extends string `xml:"Extends,attr"`
				} `xml:"DataServices>Schema>EntityContainer"`
			}
			if err := xml.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatalf("$metadata: %v\n%s", err, body)
			}
			if doc.XMLName.Local != "Edmx" || doc.Version != "4.0" || doc.Container.Extends != "ServiceRoot.v1_15_0.ServiceContainer" {
				t.Errorf("$metadata: %+v", doc)
			}
			var ns []string
			for _, r := range doc.References {
				if !strings.HasPrefix(r.URI, "http://redfish.dmtf.org/schemas/v1/") {
					t.Errorf("reference %s", r.URI)
				}
				for _, in := range r.Includes {
					ns = append(ns, in.Namespace)
				}
			}
			for _, want := range []string{"ServiceRoot.v1_15_0", "ComputerSystem", "ComputerSystem.v1_20_0",
				"SoftwareInventory.v1_9_0", "SoftwareInventoryCollection", "UpdateService.v1_11_0", "RedfishExtensions.v1_0_0"} {
				if !slices.Contains(ns, want) {
					t.Errorf("$metadata includes no %s: %v", want, ns)
				}
			}
		}},
		{"/redfish/v1/odata", "application/json", func(t *testing.T, body string) {
			var doc struct {
				Context string `json:"@odata.context"`
				Value   []struct{ Name, Kind, URL string }
			}
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatal(err)
			}
			var urls []string
			for _, v := range doc.Value {
				if v.Kind != "Singleton" || v.Name == "" {
					t.Errorf("entry %+v", v)
				}
				urls = append(urls, v.URL)
			}
			if doc.Context != "/redfish/v1/$metadata" || !slices.Contains(urls, "/redfish/v1/") || !slices.Contains(urls, "/redfish/v1/UpdateService") {
				t.Errorf("service document %s", body)
			}
		}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := rfDo(t, c, http.MethodGet, host, tc.path, false, "")
			if r.code != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), tc.contentType) ||
				r.header.Get("OData-Version") != "4.0" {
				t.Fatalf("GET %s without credentials: %d %v %s", tc.path, r.code, r.header, r.body)
			}
			if tc.check != nil {
				tc.check(t, r.body)
			}
			// %24 is "$" too.
			if strings.Contains(tc.path, "$") {
				if r := rfDo(t, c, http.MethodGet, host, strings.ReplaceAll(tc.path, "$", "%24"), false, ""); r.code != http.StatusOK {
					t.Errorf("%%24: %d", r.code)
				}
			}
		})
	}
}

// TestRedfishQueryParameters: "$" query parameters, none of which the lab
// implements, are 501 with a Redfish error; others are ignored.
func TestRedfishQueryParameters(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	f := startFleet(t, Config{Site: site})
	c := rawClient(f)
	host := site.Node("w1n01").BMC.Address
	for _, tc := range []struct {
		method, path string
		auth         bool
		want         int
	}{
		{"GET", "/redfish/v1/?$expand=*", false, 501},
		{"GET", "/redfish/v1/Systems?$expand=.($levels=1)", true, 501},
		{"GET", "/redfish/v1/Systems/1?$select=PowerState", true, 501},
		{"GET", "/redfish/v1/Systems?$filter=PowerState%20eq%20'On'", true, 501},
		{"GET", "/redfish/v1/Systems?$top=1", true, 501},
		{"GET", "/redfish/v1/Systems?$skip=1", true, 501},
		{"GET", "/redfish/v1/Systems?%24top=1", true, 501},
		{"GET", "/redfish/v1/Systems?$count=true", true, 501},
		{"GET", "/redfish/v1/$metadata?$format=json", false, 501},
		{"HEAD", "/redfish/v1/Systems/1?$select=Id", true, 501},
		{"PATCH", "/redfish/v1/Systems/1?$select=Id", true, 501},
		{"GET", "/redfish/v1/Systems?foo=bar", true, 200},    // not a "$" parameter
		{"GET", "/redfish/v1/Systems?$expand=*", false, 401}, // credentials first
		{"GET", "/redfish/v1/Nope?$expand=*", true, 404},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			body := ""
			if tc.method == "PATCH" {
				body = `{"Boot":{"BootSourceOverrideTarget":"Pxe"}}`
			}
			r := rfDo(t, c, tc.method, host, tc.path, tc.auth, body)
			if r.code != tc.want {
				t.Fatalf("%d %s, want %d", r.code, r.body, tc.want)
			}
			if tc.want == 501 && tc.method != "HEAD" {
				if code := redfishErrorCode(t, r); code != "Base.1.8.QueryNotSupported" {
					t.Errorf("error code %q: %s", code, r.body)
				}
			}
		})
	}
	if s := f.Node("w1n01").Status(); s.BootOverride == "Pxe" {
		t.Error("a PATCH with a $ parameter changed the boot override")
	}
}

// TestRedfishMethods: 405 carries Allow with the resource's methods; HEAD
// is GET without a body wherever GET is.
func TestRedfishMethods(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	f := startFleet(t, Config{Site: site})
	c := rawClient(f)
	for _, style := range idStyles {
		host := site.Node(style.node).BMC.Address
		login := rfDo(t, c, "POST", host, "/redfish/v1/SessionService/Sessions", false,
			`{"UserName":"anneal","Password":"`+labPassword+`"}`)
		if login.code != http.StatusCreated {
			t.Fatalf("login: %d %s", login.code, login.body)
		}
		session := login.header.Get("Location")
		for _, tc := range []struct {
			method, path string
			auth         bool
			want         int
			allow        string
		}{
			{"DELETE", "/redfish/v1/", false, 405, "GET, HEAD"},
			{"POST", "/redfish/v1/$metadata", false, 405, "GET, HEAD"},
			{"PUT", "/redfish/v1/odata", false, 405, "GET, HEAD"},
			{"POST", "/redfish", false, 405, "GET, HEAD"},
			{"POST", "/redfish/v1/Systems", true, 405, "GET, HEAD"},
			{"PUT", style.system, true, 405, "GET, HEAD, PATCH"},
			{"DELETE", style.system, true, 405, "GET, HEAD, PATCH"},
			{"GET", style.system + "/Actions/ComputerSystem.Reset", true, 405, "POST"},
			{"HEAD", style.system + "/Actions/ComputerSystem.Reset", true, 405, "POST"},
			{"PATCH", style.manager, true, 405, "GET, HEAD"},
			{"DELETE", style.chassis, true, 405, "GET, HEAD"},
			{"DELETE", "/redfish/v1/SessionService/Sessions", true, 405, "GET, HEAD, POST"},
			{"PATCH", session, true, 405, "GET, HEAD, DELETE"},
			{"POST", "/redfish/v1/UpdateService", true, 405, "GET, HEAD"},
			{"PUT", "/redfish/v1/UpdateService/FirmwareInventory", true, 405, "GET, HEAD"},
			{"PATCH", style.system, false, 401, ""}, // credentials first
			{"DELETE", "/redfish/v1/Nope", true, 404, ""},
			{"HEAD", "/redfish/v1/Nope", true, 404, ""},
			{"HEAD", style.system, false, 401, ""},
		} {
			r := rfDo(t, c, tc.method, host, tc.path, tc.auth, "")
			if r.code != tc.want || r.header.Get("Allow") != tc.allow {
				t.Errorf("%s: %s %s: %d Allow %q, want %d %q: %s", style.node, tc.method, tc.path,
					r.code, r.header.Get("Allow"), tc.want, tc.allow, r.body)
			}
			if r.code == 405 && tc.method != "HEAD" && redfishErrorCode(t, r) == "" {
				t.Errorf("%s: %s %s: no Redfish error: %s", style.node, tc.method, tc.path, r.body)
			}
		}
		// HEAD of every resource GET answers.
		for _, p := range []struct {
			path string
			auth bool
		}{
			{"/redfish", false}, {"/redfish/v1/", false}, {"/redfish/v1/$metadata", false}, {"/redfish/v1/odata", false},
			{"/redfish/v1/SessionService", true}, {"/redfish/v1/SessionService/Sessions", true}, {session, true},
			{"/redfish/v1/Systems", true}, {style.system, true}, {"/redfish/v1/Managers", true}, {style.manager, true},
			{"/redfish/v1/Chassis", true}, {style.chassis, true}, {"/redfish/v1/UpdateService", true},
			{"/redfish/v1/UpdateService/FirmwareInventory", true},
		} {
			get := rfDo(t, c, "GET", host, p.path, p.auth, "")
			head := rfDo(t, c, "HEAD", host, p.path, p.auth, "")
			if get.code != 200 || head.code != 200 || head.body != "" ||
				head.header.Get("Content-Type") != get.header.Get("Content-Type") ||
				head.header.Get("Content-Length") != strconv.Itoa(len(get.body)) {
				t.Errorf("%s: HEAD %s: %d %v %q; GET: %d %d bytes", style.node, p.path, head.code, head.header, head.body, get.code, len(get.body))
			}
		}
		if r := rfDo(t, c, "DELETE", host, session, true, ""); r.code != http.StatusNoContent {
			t.Errorf("%s: logout: %d", style.node, r.code)
		}
	}
}

// TestRedfishLinks follows every @odata.id from the service root, for
// both Id styles: each answers, names itself, and has a type $metadata
// references; the system, manager and chassis have the vendor's Ids.
func TestRedfishLinks(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	f := startFleet(t, Config{Site: site})
	c := rawClient(f)
	for _, style := range idStyles {
		host := site.Node(style.node).BMC.Address
		meta := rfDo(t, c, "GET", host, "/redfish/v1/$metadata", false, "").body
		seen := map[string]bool{}
		queue := []string{"/redfish/v1/"}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			if seen[p] {
				continue
			}
			seen[p] = true
			r := rfDo(t, c, "GET", host, p, true, "")
			if r.code != 200 {
				t.Errorf("%s: GET %s: %d %s", style.node, p, r.code, r.body)
				continue
			}
			v := r.json(t)
			if v["@odata.id"] != p {
				t.Errorf("%s: %s names itself %v", style.node, p, v["@odata.id"])
			}
			typ, _ := v["@odata.type"].(string)
			ns := strings.TrimPrefix(typ, "#")
			if i := strings.LastIndex(ns, "."); i > 0 {
				ns = ns[:i]
			}
			if typ == "" || !strings.Contains(meta, `Namespace="`+ns+`"`) {
				t.Errorf("%s: %s: type %q not in $metadata", style.node, p, typ)
			}
			if ms, ok := v["Members"].([]any); ok && v["Members@odata.count"] != float64(len(ms)) {
				t.Errorf("%s: %s: count %v of %d members", style.node, p, v["Members@odata.count"], len(ms))
			}
			var walk func(any)
			walk = func(x any) {
				switch x := x.(type) {
				case map[string]any:
					for k, e := range x {
						if s, ok := e.(string); ok && k == "@odata.id" {
							queue = append(queue, s)
						}
						walk(e)
					}
				case []any:
					for _, e := range x {
						walk(e)
					}
				}
			}
			walk(v)
		}
		for _, p := range []string{style.system, style.manager, style.chassis, "/redfish/v1/UpdateService/FirmwareInventory"} {
			if !seen[p] {
				t.Errorf("%s: no link reaches %s (reached %v)", style.node, p, seen)
			}
		}
		sys := rfDo(t, c, "GET", host, style.system, true, "").json(t)
		if sys["Id"] != style.system[strings.LastIndex(style.system, "/")+1:] {
			t.Errorf("%s: system Id %v", style.node, sys["Id"])
		}
		reset, _ := sys["Actions"].(map[string]any)["#ComputerSystem.Reset"].(map[string]any)
		if reset["target"] != style.system+"/Actions/ComputerSystem.Reset" {
			t.Errorf("%s: reset target %v", style.node, reset["target"])
		}
	}
}

// TestRedfishFirmwareInventory: the UpdateService's inventory has the
// BIOS and the BMC with the node's firmware (a drift fault's too), named
// as the vendor names them, and bmclib reads it.
func TestRedfishFirmwareInventory(t *testing.T) {
	t.Parallel()
	site := exampleSite(t)
	var logs logBuffer
	f := startFleet(t, Config{Site: site, Logger: debugLogger(&logs)})
	c := rawClient(f)
	drift := map[string]node.Firmware{"e1n03": {BIOS: "1.12.0", BMC: "6.10.30.00"}, "w1n02": {BIOS: "1.8", BMC: "01.03.00"}}
	if err := f.SetFaults(Faults{Firmware: drift}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		node    string
		members map[string][2]string // id: name, version
		fw      node.Firmware
	}{
		{"e1n01", map[string][2]string{
			"Installed-159-1.13.2__BIOS.Setup.1-1":           {"BIOS", "1.13.2"},
			"Installed-25227-7.10.50.00__iDRAC.Embedded.1-1": {"Integrated Dell Remote Access Controller", "7.10.50.00"},
		}, node.Firmware{BIOS: "1.13.2", BMC: "7.10.50.00"}},
		{"e1n03", map[string][2]string{
			"Installed-159-1.12.0__BIOS.Setup.1-1":           {"BIOS", "1.12.0"},
			"Installed-25227-6.10.30.00__iDRAC.Embedded.1-1": {"Integrated Dell Remote Access Controller", "6.10.30.00"},
		}, drift["e1n03"]},
		{"w1n01", map[string][2]string{"BIOS": {"BIOS", "1.9"}, "BMC": {"BMC", "01.04.08"}},
			node.Firmware{BIOS: "1.9", BMC: "01.04.08"}},
		{"w1n02", map[string][2]string{"BIOS": {"BIOS", "1.8"}, "BMC": {"BMC", "01.03.00"}}, drift["w1n02"]},
	} {
		t.Run(tc.node, func(t *testing.T) {
			host := site.Node(tc.node).BMC.Address
			us := rfDo(t, c, "GET", host, "/redfish/v1/UpdateService", true, "").json(t)
			if us["ServiceEnabled"] != true || us["FirmwareInventory"].(map[string]any)["@odata.id"] != "/redfish/v1/UpdateService/FirmwareInventory" {
				t.Fatalf("UpdateService: %v", us)
			}
			col := rfDo(t, c, "GET", host, "/redfish/v1/UpdateService/FirmwareInventory", true, "").json(t)
			ms, _ := col["Members"].([]any)
			if len(ms) != len(tc.members) {
				t.Fatalf("members %v, want %v", ms, tc.members)
			}
			for _, m := range ms {
				p := m.(map[string]any)["@odata.id"].(string)
				item := rfDo(t, c, "GET", host, p, true, "").json(t)
				want, ok := tc.members[item["Id"].(string)]
				if !ok || item["Name"] != want[0] || item["Version"] != want[1] || item["@odata.type"] != "#SoftwareInventory.v1_9_0.SoftwareInventory" {
					t.Errorf("member %s: %v", p, item)
				}
			}
			logs.Reset()
			fw, err := labBMC(t, f, site, tc.node, labPassword, 0).Firmware(t.Context())
			if err != nil || fw != tc.fw {
				t.Fatalf("bmclib Firmware = %+v, %v; want %+v", fw, err, tc.fw)
			}
			got := requests(logs.String())
			for id := range tc.members {
				if !slices.Contains(got, "GET "+firmwarePath(id)) {
					t.Errorf("bmclib did not read %s:\n%s", id, strings.Join(got, "\n"))
				}
			}
		})
	}
}
