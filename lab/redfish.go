package lab

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// The Redfish resources a virtual BMC serves: what bmclib v2.3.5's gofish
// provider (and gofish v0.20.0 under it) requests for Open, Close, power
// state, power actions, the one-time boot device and the firmware
// inventory, and the documents DSP0266 requires of every service. The
// system, manager and chassis Ids follow the vendor of the node's hardware
// profile (rfPaths), as bmclib's inventory expects.
const (
	pathRedfish    = "/redfish"
	pathRoot       = "/redfish/v1/"
	pathMetadata   = "/redfish/v1/$metadata"
	pathOData      = "/redfish/v1/odata"
	pathSessionSvc = "/redfish/v1/SessionService"
	pathSessions   = "/redfish/v1/SessionService/Sessions"
	pathSystems    = "/redfish/v1/Systems"
	pathManagers   = "/redfish/v1/Managers"
	pathChassisCol = "/redfish/v1/Chassis"
	pathUpdateSvc  = "/redfish/v1/UpdateService"
	pathFWInv      = "/redfish/v1/UpdateService/FirmwareInventory"
)

// The @odata.type of every resource the lab serves; $metadata references
// their schemas.
const (
	typeServiceRoot   = "#ServiceRoot.v1_15_0.ServiceRoot"
	typeSessionSvc    = "#SessionService.v1_1_8.SessionService"
	typeSession       = "#Session.v1_5_0.Session"
	typeSessions      = "#SessionCollection.SessionCollection"
	typeSystems       = "#ComputerSystemCollection.ComputerSystemCollection"
	typeSystem        = "#ComputerSystem.v1_20_0.ComputerSystem"
	typeManagers      = "#ManagerCollection.ManagerCollection"
	typeManager       = "#Manager.v1_15_0.Manager"
	typeChassisCol    = "#ChassisCollection.ChassisCollection"
	typeChassis       = "#Chassis.v1_21_0.Chassis"
	typeUpdateSvc     = "#UpdateService.v1_11_0.UpdateService"
	typeSoftwareInvs  = "#SoftwareInventoryCollection.SoftwareInventoryCollection"
	typeSoftwareInv   = "#SoftwareInventory.v1_9_0.SoftwareInventory"
	serviceContainer  = "ServiceRoot.v1_15_0.ServiceContainer"
	redfishExtensions = "RedfishExtensions.v1_0_0"
)

var odataTypes = []string{typeServiceRoot, typeSessionSvc, typeSession, typeSessions, typeSystems, typeSystem,
	typeManagers, typeManager, typeChassisCol, typeChassis, typeUpdateSvc, typeSoftwareInvs, typeSoftwareInv}

// rfPaths are one BMC's system, manager and chassis: iDRAC's Ids for a
// Dell hardware profile, "1" (Supermicro's, and many others') otherwise.
type rfPaths struct {
	dell                            bool
	systemID, managerID, chassisID  string
	system, reset, manager, chassis string
}

func redfishPaths(vendor string) rfPaths {
	p := rfPaths{systemID: "1", managerID: "1", chassisID: "1"}
	if strings.Contains(strings.ToLower(vendor), "dell") {
		p = rfPaths{dell: true, systemID: "System.Embedded.1", managerID: "iDRAC.Embedded.1", chassisID: "System.Embedded.1"}
	}
	p.system = pathSystems + "/" + p.systemID
	p.reset = p.system + "/Actions/ComputerSystem.Reset"
	p.manager = pathManagers + "/" + p.managerID
	p.chassis = pathChassisCol + "/" + p.chassisID
	return p
}

// bootTargets are the override targets the virtual BMC accepts.
var bootTargets = []string{targetNone, targetPxe, targetHdd, "Cd", "Usb", "BiosSetup", "Diags", "Floppy", "Utilities", "UefiHttp", "RemoteDrive", "SDCard"}

// session is a Redfish session of one BMC.
type session struct {
	id       string
	lastUsed time.Time
}

// Session limits: idle sessions expire, as on real BMCs, and a BMC holds
// so many at most (the least recently used goes first).
const (
	sessionIdle = 30 * time.Minute
	maxSessions = 64
)

// handler routes the listener's requests: /lab/ to the control API, the
// rest to the BMC the Host names.
func (f *Fleet) handler() http.Handler {
	control := f.ControlHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/lab/") {
			control.ServeHTTP(w, r)
			return
		}
		n := f.byBMC[normHost(r.Host)]
		if n == nil {
			f.log.Debug("lab bmc: no BMC at this host", "host", r.Host, "method", r.Method, "path", r.URL.Path)
			redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no BMC answers at host "+r.Host)
			return
		}
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			f.log.Debug("lab bmc", "node", n.name, "method", r.Method, "path", r.URL.Path,
				"status", rec.status, "took", time.Since(start).Round(time.Microsecond))
		}()
		if n.f.bmcTimeout(n.name) {
			// The BMC stopped answering: hold the request until the client
			// or the lab gives up, then drop the connection.
			select {
			case <-r.Context().Done():
			case <-f.ctx.Done():
			}
			rec.status = 0
			panic(http.ErrAbortHandler)
		}
		n.serveRedfish(rec, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// serveRedfish answers one request to the node's BMC. In order: the
// service root and the documents DSP0266 wants unauthenticated (and login)
// need no credentials, the rest does (401); a path no resource has is 404;
// a "$" query parameter (none is implemented) is 501; a method the resource
// does not have is 405 with Allow. HEAD is GET without the body.
func (n *Node) serveRedfish(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	if path+"/" == pathRoot {
		path = pathRoot
	}
	tok := ""
	if !publicPath(path) && (path != pathSessions || r.Method != http.MethodPost) {
		var ok bool
		if tok, ok = n.authorize(r); !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="anneal lab BMC"`)
			redfishError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "no valid session or credentials")
			return
		}
	}
	allow := n.allowed(path)
	if allow == nil {
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource at "+r.URL.Path)
		return
	}
	if q := unsupportedQuery(r); q != "" {
		redfishError(w, http.StatusNotImplemented, "Base.1.8.QueryNotSupported", "query parameter "+q+" is not supported")
		return
	}
	if !slices.Contains(allow, r.Method) {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		redfishError(w, http.StatusMethodNotAllowed, "Base.1.8.ActionNotSupported", r.Method+" not allowed on "+r.URL.Path)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead: // the server drops a HEAD's body
		if path == pathMetadata {
			writeBody(w, http.StatusOK, "application/xml; charset=utf-8", metadataXML)
			return
		}
		body := n.resource(path, tok)
		if body == nil { // a session ended since allowed
			redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource at "+r.URL.Path)
			return
		}
		writeJSON(w, http.StatusOK, body)
	case http.MethodPost:
		if path == pathSessions {
			n.login(w, r)
			return
		}
		n.postReset(w, r)
	case http.MethodDelete:
		n.logout(w, strings.TrimPrefix(path, pathSessions+"/"))
	case http.MethodPatch:
		n.patchSystem(w, r)
	}
}

// publicPath: no credentials needed (DSP0266: the service root, $metadata
// and the OData service document).
func publicPath(path string) bool {
	return path == pathRedfish || path == pathRoot || path == pathMetadata || path == pathOData
}

var (
	allowGet     = []string{http.MethodGet, http.MethodHead}
	allowSession = []string{http.MethodGet, http.MethodHead, http.MethodDelete}
	allowLogin   = []string{http.MethodGet, http.MethodHead, http.MethodPost}
	allowSystem  = []string{http.MethodGet, http.MethodHead, http.MethodPatch}
	allowAction  = []string{http.MethodPost}
)

// allowed is the methods of the resource at path, nil if there is none.
func (n *Node) allowed(path string) []string {
	switch path {
	case pathRedfish, pathRoot, pathMetadata:
		return allowGet
	case pathSessions:
		return allowLogin
	case n.rf.system:
		return allowSystem
	case n.rf.reset:
		return allowAction
	}
	if n.resource(path, "") == nil {
		return nil
	}
	if strings.HasPrefix(path, pathSessions+"/") {
		return allowSession
	}
	return allowGet
}

// unsupportedQuery is the first (by name) "$" query parameter of the
// request, "" if none: the lab implements none of $expand, $select,
// $filter, $top, $skip, $levels...
func unsupportedQuery(r *http.Request) string {
	var names []string
	for k := range r.URL.Query() {
		if strings.HasPrefix(k, "$") {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return ""
	}
	slices.Sort(names)
	return names[0]
}

// login is POST /redfish/v1/SessionService/Sessions.
func (n *Node) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UserName string
		Password string
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "session request: "+err.Error())
		return
	}
	if !n.credentials(body.UserName, body.Password) {
		redfishError(w, http.StatusUnauthorized, "Base.1.8.InsufficientPrivilege", "wrong username or password")
		return
	}
	tok := newToken()
	n.mu.Lock()
	now := time.Now()
	for t, s := range n.sessions {
		if now.Sub(s.lastUsed) > sessionIdle {
			delete(n.sessions, t)
		}
	}
	for len(n.sessions) >= maxSessions {
		var oldest string
		for t, s := range n.sessions {
			if oldest == "" || s.lastUsed.Before(n.sessions[oldest].lastUsed) {
				oldest = t
			}
		}
		delete(n.sessions, oldest)
	}
	n.sessionID++
	s := &session{id: strconv.Itoa(n.sessionID), lastUsed: now}
	n.sessions[tok] = s
	n.mu.Unlock()
	loc := pathSessions + "/" + s.id
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", loc)
	writeJSON(w, http.StatusCreated, sessionBody(s, n.user))
}

// logout is DELETE of a session.
func (n *Node) logout(w http.ResponseWriter, id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for t, s := range n.sessions {
		if s.id == id {
			delete(n.sessions, t)
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no session "+id)
}

func (n *Node) credentials(user, password string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(n.user))
	p := subtle.ConstantTimeCompare([]byte(password), []byte(n.password))
	return u&p == 1
}

// authorize accepts a session token (X-Auth-Token) or basic credentials;
// it returns the session's token ("" for basic).
func (n *Node) authorize(r *http.Request) (string, bool) {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" {
		n.mu.Lock()
		defer n.mu.Unlock()
		s := n.sessions[tok]
		if s == nil || time.Since(s.lastUsed) > sessionIdle {
			delete(n.sessions, tok)
			return "", false
		}
		s.lastUsed = time.Now()
		return tok, true
	}
	if u, p, ok := r.BasicAuth(); ok && n.credentials(u, p) {
		return "", true
	}
	return "", false
}

func newToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// uuid is a stable UUID for the node's system.
func (n *Node) uuid() string {
	h := sha256.Sum256([]byte("anneal-lab/" + n.name))
	h[6] = h[6]&0x0f | 0x50 // version 5-like
	h[8] = h[8]&0x3f | 0x80
	x := hex.EncodeToString(h[:16])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

func link(p string) map[string]any { return map[string]any{"@odata.id": p} }

func collection(typ, p, name string, members ...string) map[string]any {
	ms := make([]any, 0, len(members))
	for _, m := range members {
		ms = append(ms, link(m))
	}
	return map[string]any{"@odata.type": typ, "@odata.id": p, "Name": name,
		"Members": ms, "Members@odata.count": len(ms)}
}

func (n *Node) serviceRoot() map[string]any {
	return map[string]any{
		"@odata.type":    typeServiceRoot,
		"@odata.id":      pathRoot,
		"Id":             "RootService",
		"Name":           "Root Service",
		"RedfishVersion": "1.15.0",
		"UUID":           n.uuid(),
		"Vendor":         "anneal lab",
		"Product":        strings.TrimSpace(n.vendor + " " + n.model),
		"Systems":        link(pathSystems),
		"Managers":       link(pathManagers),
		"Chassis":        link(pathChassisCol),
		"SessionService": link(pathSessionSvc),
		"UpdateService":  link(pathUpdateSvc),
		"Links":          map[string]any{"Sessions": link(pathSessions)},
		"ProtocolFeaturesSupported": map[string]any{
			"ExpandQuery":     map[string]any{"ExpandAll": false, "Levels": false, "Links": false, "NoLinks": false},
			"FilterQuery":     false,
			"SelectQuery":     false,
			"OnlyMemberQuery": false,
			"ExcerptQuery":    false,
		},
	}
}

// odataService is the OData service document: the service root's
// top-level resources.
func odataService() map[string]any {
	var value []any
	for _, s := range []struct{ name, url string }{
		{"Service", pathRoot}, {"Systems", pathSystems}, {"Chassis", pathChassisCol}, {"Managers", pathManagers},
		{"SessionService", pathSessionSvc}, {"Sessions", pathSessions}, {"UpdateService", pathUpdateSvc},
	} {
		value = append(value, map[string]any{"name": s.name, "kind": "Singleton", "url": s.url})
	}
	return map[string]any{"@odata.context": pathMetadata, "value": value}
}

// metadataXML is $metadata: a CSDL document that references the DMTF
// schema of every type the lab serves.
var metadataXML = func() []byte {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">` + "\n")
	files := map[string][]string{}
	var order []string
	add := func(ns string) {
		file, _, _ := strings.Cut(ns, ".")
		if files[file] == nil {
			order = append(order, file)
		}
		if !slices.Contains(files[file], ns) {
			files[file] = append(files[file], ns)
		}
	}
	for _, t := range odataTypes {
		ns := strings.TrimPrefix(t, "#")
		ns = ns[:strings.LastIndex(ns, ".")]
		base, _, _ := strings.Cut(ns, ".")
		add(base)
		add(ns)
	}
	add("Resource")
	add("Resource.v1_0_0")
	add("Message")
	add("Message.v1_1_2")
	for _, file := range order {
		fmt.Fprintf(&b, "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/%s_v1.xml\">\n", file)
		for _, ns := range files[file] {
			fmt.Fprintf(&b, "    <edmx:Include Namespace=\"%s\"/>\n", ns)
		}
		b.WriteString("  </edmx:Reference>\n")
	}
	fmt.Fprintf(&b, "  <edmx:Reference Uri=\"http://redfish.dmtf.org/schemas/v1/RedfishExtensions_v1.xml\">\n"+
		"    <edmx:Include Namespace=\"%s\" Alias=\"Redfish\"/>\n  </edmx:Reference>\n", redfishExtensions)
	b.WriteString("  <edmx:DataServices>\n")
	b.WriteString(`    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">` + "\n")
	fmt.Fprintf(&b, "      <EntityContainer Name=\"Service\" Extends=\"%s\"/>\n", serviceContainer)
	b.WriteString("    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n")
	return []byte(b.String())
}()

func sessionBody(s *session, user string) map[string]any {
	return map[string]any{"@odata.type": typeSession, "@odata.id": pathSessions + "/" + s.id,
		"Id": s.id, "Name": "User Session", "UserName": user}
}

// firmwareItem is a member of the firmware inventory.
type firmwareItem struct {
	id, name, version, softwareID string
}

// firmwareInventory is the node's BIOS and BMC firmware as iDRAC names
// them ("Installed-<component>-<version>__<FQDD>", which bmclib matches to
// the BIOS and to the manager's Id) or as Supermicro does ("BIOS", "BMC").
func (n *Node) firmwareInventory() []firmwareItem {
	fw := n.f.firmwareOf(n)
	if n.rf.dell {
		return []firmwareItem{
			{"Installed-159-" + fw.BIOS + "__BIOS.Setup.1-1", "BIOS", fw.BIOS, "159"},
			{"Installed-25227-" + fw.BMC + "__" + n.rf.managerID + "-1", "Integrated Dell Remote Access Controller", fw.BMC, "25227"},
		}
	}
	return []firmwareItem{{"BIOS", "BIOS", fw.BIOS, "BIOS"}, {"BMC", "BMC", fw.BMC, "BMC"}}
}

func firmwarePath(id string) string { return pathFWInv + "/" + url.PathEscape(id) }

// resource is the body of a GET, or nil.
func (n *Node) resource(path, tok string) map[string]any {
	switch path {
	case pathRedfish:
		return map[string]any{"v1": pathRoot}
	case pathRoot:
		return n.serviceRoot()
	case pathOData:
		return odataService()
	case pathSessionSvc:
		return map[string]any{"@odata.type": typeSessionSvc, "@odata.id": pathSessionSvc,
			"Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true, "SessionTimeout": int(sessionIdle.Seconds()),
			"Sessions": link(pathSessions)}
	case pathSessions:
		n.mu.Lock()
		var ids []string
		for _, s := range n.sessions {
			ids = append(ids, pathSessions+"/"+s.id)
		}
		n.mu.Unlock()
		return collection(typeSessions, pathSessions, "Session Collection", ids...)
	case pathSystems:
		return collection(typeSystems, pathSystems, "Computer System Collection", n.rf.system)
	case n.rf.system:
		return n.system()
	case pathManagers:
		return collection(typeManagers, pathManagers, "Manager Collection", n.rf.manager)
	case n.rf.manager:
		fw := n.f.firmwareOf(n)
		return map[string]any{"@odata.type": typeManager, "@odata.id": n.rf.manager, "Id": n.rf.managerID,
			"Name": "Manager", "Description": "anneal lab BMC", "ManagerType": "BMC", "FirmwareVersion": fw.BMC,
			"Manufacturer": n.vendor, "Model": n.model, "UUID": n.uuid(),
			"Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"Links":  map[string]any{"ManagerForServers": []any{link(n.rf.system)}, "ManagerForChassis": []any{link(n.rf.chassis)}}}
	case pathChassisCol:
		return collection(typeChassisCol, pathChassisCol, "Chassis Collection", n.rf.chassis)
	case n.rf.chassis:
		n.mu.Lock()
		power := n.power
		n.mu.Unlock()
		return map[string]any{"@odata.type": typeChassis, "@odata.id": n.rf.chassis, "Id": n.rf.chassisID,
			"Name": "Chassis", "ChassisType": "RackMount", "Manufacturer": n.vendor, "Model": n.model,
			"SerialNumber": "LAB-" + n.name, "PowerState": redfishPower(power),
			"Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"Links":  map[string]any{"ComputerSystems": []any{link(n.rf.system)}, "ManagedBy": []any{link(n.rf.manager)}}}
	case pathUpdateSvc:
		return map[string]any{"@odata.type": typeUpdateSvc, "@odata.id": pathUpdateSvc, "Id": "UpdateService",
			"Name": "Update Service", "ServiceEnabled": true, "Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"FirmwareInventory": link(pathFWInv),
			// No action is implemented (SimpleUpdate is not), but sushy
			// requires the property: an empty Actions, as the schema allows.
			"Actions": map[string]any{}}
	case pathFWInv:
		var ms []string
		for _, it := range n.firmwareInventory() {
			ms = append(ms, firmwarePath(it.id))
		}
		return collection(typeSoftwareInvs, pathFWInv, "Firmware Inventory Collection", ms...)
	}
	if id, ok := strings.CutPrefix(path, pathFWInv+"/"); ok {
		for _, it := range n.firmwareInventory() {
			if it.id == id {
				return map[string]any{"@odata.type": typeSoftwareInv, "@odata.id": firmwarePath(it.id), "Id": it.id,
					"Name": it.name, "Version": it.version, "SoftwareId": it.softwareID, "Updateable": true,
					"Status": map[string]any{"State": "Enabled", "Health": "OK"}}
			}
		}
		return nil
	}
	if strings.HasPrefix(path, pathSessions+"/") {
		id := strings.TrimPrefix(path, pathSessions+"/")
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, s := range n.sessions {
			if s.id == id {
				return sessionBody(s, n.user)
			}
		}
	}
	return nil
}

func redfishPower(p node.PowerState) string {
	if p == node.PowerOn {
		return "On"
	}
	return "Off"
}

func (n *Node) system() map[string]any {
	fw := n.f.firmwareOf(n)
	n.mu.Lock()
	power, o := n.power, n.override
	n.mu.Unlock()
	return map[string]any{
		"@odata.type":  typeSystem,
		"@odata.id":    n.rf.system,
		"Id":           n.rf.systemID,
		"Name":         "System",
		"HostName":     n.name,
		"SystemType":   "Physical",
		"Manufacturer": n.vendor,
		"Model":        n.model,
		"SerialNumber": "LAB-" + n.name,
		"UUID":         n.uuid(),
		"PowerState":   redfishPower(power),
		"BiosVersion":  fw.BIOS,
		"Status":       map[string]any{"State": "Enabled", "Health": "OK"},
		"Boot": map[string]any{
			"BootSourceOverrideEnabled":                        o.Enabled,
			"BootSourceOverrideTarget":                         o.Target,
			"BootSourceOverrideMode":                           o.Mode,
			"BootSourceOverrideTarget@Redfish.AllowableValues": bootTargets,
		},
		"Actions": map[string]any{"#ComputerSystem.Reset": map[string]any{
			"target":                            n.rf.reset,
			"ResetType@Redfish.AllowableValues": resetTypes,
		}},
		"Links": map[string]any{"Chassis": []any{link(n.rf.chassis)}, "ManagedBy": []any{link(n.rf.manager)}},
	}
}

// patchSystem is PATCH of the system: only Boot's override is writable; the
// other Boot properties bmclib sends are ignored.
func (n *Node) patchSystem(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Boot *struct {
			Target  string `json:"BootSourceOverrideTarget"`
			Enabled string `json:"BootSourceOverrideEnabled"`
			Mode    string `json:"BootSourceOverrideMode"`
		} `json:"Boot"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", err.Error())
		return
	}
	if body.Boot == nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyNotWritable", "only Boot can be changed")
		return
	}
	o := Override{Target: body.Boot.Target, Enabled: body.Boot.Enabled, Mode: body.Boot.Mode}
	switch {
	case o.Target != "" && !slices.Contains(bootTargets, o.Target):
		redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList", fmt.Sprintf("BootSourceOverrideTarget %q", o.Target))
	case o.Enabled != "" && !slices.Contains([]string{overrideDisabled, overrideOnce, overrideContinuous}, o.Enabled):
		redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList", fmt.Sprintf("BootSourceOverrideEnabled %q", o.Enabled))
	case o.Mode != "" && o.Mode != "Legacy" && o.Mode != "UEFI":
		redfishError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList", fmt.Sprintf("BootSourceOverrideMode %q", o.Mode))
	default:
		n.setOverride(o)
		w.WriteHeader(http.StatusNoContent)
	}
}

// postReset is the ComputerSystem.Reset action.
func (n *Node) postReset(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ResetType string
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", err.Error())
		return
	}
	if err := n.reset(body.ResetType); err != nil {
		redfishError(w, http.StatusBadRequest, "Base.1.8.ActionParameterNotSupported", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeBody(w, status, "application/json; charset=utf-8", append(data, '\n'))
}

// writeBody writes a response with its length (a HEAD's too: the server
// drops the body it is given).
func writeBody(w http.ResponseWriter, status int, contentType string, data []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	w.Write(data)
}

// redfishError writes a Redfish error body.
func redfishError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code": code, "message": msg, "@Message.ExtendedInfo": []any{map[string]any{"MessageId": code, "Message": msg}},
	}})
}
