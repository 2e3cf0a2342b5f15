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
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/anneal-dev/anneal/reconcile/node"
)

// The Redfish resources a virtual BMC serves: what bmclib v2.3.5's gofish
// provider (and gofish v0.20.0 under it) requests for Open, Close, power
// state, power actions, the one-time boot device and the firmware
// inventory. Ids follow Supermicro's ("1"), which bmclib's inventory
// recognises.
const (
	pathRoot       = "/redfish/v1/"
	pathSessionSvc = "/redfish/v1/SessionService"
	pathSessions   = "/redfish/v1/SessionService/Sessions"
	pathSystems    = "/redfish/v1/Systems"
	pathSystem     = "/redfish/v1/Systems/1"
	pathReset      = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset"
	pathManagers   = "/redfish/v1/Managers"
	pathManager    = "/redfish/v1/Managers/1"
	pathChassisCol = "/redfish/v1/Chassis"
	pathChassis    = "/redfish/v1/Chassis/1"
)

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

// serveRedfish answers one request to the node's BMC.
func (n *Node) serveRedfish(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/redfish" && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, map[string]any{"v1": pathRoot})
		return
	case path+"/" == pathRoot && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, n.serviceRoot())
		return
	case path == pathSessions && r.Method == http.MethodPost:
		n.login(w, r)
		return
	}
	tok, ok := n.authorize(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="anneal lab BMC"`)
		redfishError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "no valid session or credentials")
		return
	}
	switch {
	case r.Method == http.MethodGet:
		body := n.resource(path, tok)
		if body == nil {
			redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource at "+r.URL.Path)
			return
		}
		writeJSON(w, http.StatusOK, body)
	case r.Method == http.MethodDelete && strings.HasPrefix(path, pathSessions+"/"):
		n.logout(w, strings.TrimPrefix(path, pathSessions+"/"))
	case r.Method == http.MethodPatch && path == pathSystem:
		n.patchSystem(w, r)
	case r.Method == http.MethodPost && path == pathReset:
		n.postReset(w, r)
	default:
		if n.resource(path, tok) != nil || path == pathReset {
			redfishError(w, http.StatusMethodNotAllowed, "Base.1.8.ActionNotSupported", r.Method+" not allowed on "+r.URL.Path)
			return
		}
		redfishError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource at "+r.URL.Path)
	}
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
		"@odata.type":    "#ServiceRoot.v1_15_0.ServiceRoot",
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
		"Links":          map[string]any{"Sessions": link(pathSessions)},
	}
}

func sessionBody(s *session, user string) map[string]any {
	return map[string]any{"@odata.type": "#Session.v1_5_0.Session", "@odata.id": pathSessions + "/" + s.id,
		"Id": s.id, "Name": "User Session", "UserName": user}
}

// resource is the body of a GET, or nil.
func (n *Node) resource(path, tok string) map[string]any {
	switch path {
	case pathSessionSvc:
		return map[string]any{"@odata.type": "#SessionService.v1_1_8.SessionService", "@odata.id": pathSessionSvc,
			"Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true, "SessionTimeout": int(sessionIdle.Seconds()),
			"Sessions": link(pathSessions)}
	case pathSessions:
		n.mu.Lock()
		var ids []string
		for _, s := range n.sessions {
			ids = append(ids, pathSessions+"/"+s.id)
		}
		n.mu.Unlock()
		return collection("#SessionCollection.SessionCollection", pathSessions, "Session Collection", ids...)
	case pathSystems:
		return collection("#ComputerSystemCollection.ComputerSystemCollection", pathSystems, "Computer System Collection", pathSystem)
	case pathSystem:
		return n.system()
	case pathManagers:
		return collection("#ManagerCollection.ManagerCollection", pathManagers, "Manager Collection", pathManager)
	case pathManager:
		fw := n.f.firmwareOf(n)
		return map[string]any{"@odata.type": "#Manager.v1_15_0.Manager", "@odata.id": pathManager, "Id": "1",
			"Name": "Manager", "Description": "anneal lab BMC", "ManagerType": "BMC", "FirmwareVersion": fw.BMC,
			"Manufacturer": n.vendor, "Model": n.model, "UUID": n.uuid(),
			"Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"Links":  map[string]any{"ManagerForServers": []any{link(pathSystem)}, "ManagerForChassis": []any{link(pathChassis)}}}
	case pathChassisCol:
		return collection("#ChassisCollection.ChassisCollection", pathChassisCol, "Chassis Collection", pathChassis)
	case pathChassis:
		n.mu.Lock()
		power := n.power
		n.mu.Unlock()
		return map[string]any{"@odata.type": "#Chassis.v1_21_0.Chassis", "@odata.id": pathChassis, "Id": "1",
			"Name": "Chassis", "ChassisType": "RackMount", "Manufacturer": n.vendor, "Model": n.model,
			"SerialNumber": "LAB-" + n.name, "PowerState": redfishPower(power),
			"Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"Links":  map[string]any{"ComputerSystems": []any{link(pathSystem)}, "ManagedBy": []any{link(pathManager)}}}
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
		"@odata.type":  "#ComputerSystem.v1_20_0.ComputerSystem",
		"@odata.id":    pathSystem,
		"Id":           "1",
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
			"target":                            pathReset,
			"ResetType@Redfish.AllowableValues": resetTypes,
		}},
		"Links": map[string]any{"Chassis": []any{link(pathChassis)}, "ManagedBy": []any{link(pathManager)}},
	}
}

// patchSystem is PATCH Systems/1: only Boot's override is writable; the
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
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

// redfishError writes a Redfish error body.
func redfishError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{
		"code": code, "message": msg, "@Message.ExtendedInfo": []any{map[string]any{"MessageId": code, "Message": msg}},
	}})
}
