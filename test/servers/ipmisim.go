package servers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ipmiMissing is the message a test gets when OpenIPMI's simulator or
// ipmitool is not installed.
const ipmiMissing = "ipmi_sim or ipmitool not installed: .ci/run must apt-get install openipmi ipmitool"

// chassisScript is ipmi_sim's chassis_control program. ipmi_sim runs it as
// "SCRIPT get power boot" (it must print "power:0|1" and "boot:DEV" lines)
// and "SCRIPT set power 1" / "SCRIPT set boot pxe" (exit 0). It keeps the
// state in files next to itself and logs every call, so a test reads from
// the simulator's side what the BMC was told.
const chassisScript = `#!/bin/sh
d=%q
echo "$*" >> "$d/commands.log"
op=$1
shift
if [ "$op" = get ]; then
  for p in "$@"; do
    case $p in
      power) echo "power:$(cat "$d/power")";;
      boot) echo "boot:$(cat "$d/boot")";;
    esac
  done
  exit 0
fi
if [ "$op" = set ]; then
  while [ $# -ge 2 ]; do
    case $1 in
      power) echo "$2" > "$d/power";;
      boot) echo "$2" > "$d/boot";;
    esac
    shift 2
  done
  exit 0
fi
exit 1
`

// BMCEmu is ipmi_sim's emulator commands for one BMC (bmc.emu).
const BMCEmu = `mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sel_enable 0x20 1000 0x0a
mc_enable 0x20
`

// IPMISimOptions configure an IPMI simulator for a test.
type IPMISimOptions struct {
	// Username and Password of the simulator's one admin user (default
	// "admin" and "secret").
	Username string
	Password string
	// PoweredOn starts the simulated server powered on (default off).
	PoweredOn bool
}

// IPMISim is a running ipmi_sim (OpenIPMI's BMC simulator) serving IPMI
// v2 (lanplus) on UDP.
type IPMISim struct {
	// Host is "127.0.0.1" and Port the UDP port it listens on.
	Host     string
	Port     int
	Username string
	Password string
	// Dir holds lan.conf, bmc.emu, the chassis script, its state files and
	// ipmi_sim.log.
	Dir string

	stateDir string

	daemon
}

// StartIPMISim starts ipmi_sim for the test and stops it when the test
// ends. It skips the test when ipmi_sim or ipmitool is not installed, or
// fails it if the CI environment variable is set.
func StartIPMISim(t testing.TB, opts IPMISimOptions) *IPMISim {
	t.Helper()
	for _, tool := range []string{"ipmi_sim", "ipmitool"} {
		if _, err := exec.LookPath(tool); err != nil {
			Unavailable(t, ipmiMissing)
		}
	}
	s := &IPMISim{
		Host:     "127.0.0.1",
		Username: opts.Username,
		Password: opts.Password,
		Dir:      t.TempDir(),
	}
	if s.Username == "" {
		s.Username = "admin"
	}
	if s.Password == "" {
		s.Password = "secret"
	}
	s.name, s.logPath = "ipmi_sim", filepath.Join(s.Dir, "ipmi_sim.log")
	s.stateDir = filepath.Join(s.Dir, "chassis")
	power := "0"
	if opts.PoweredOn {
		power = "1"
	}
	files := map[string]string{
		filepath.Join(s.stateDir, "power"):        power + "\n",
		filepath.Join(s.stateDir, "boot"):         "default\n",
		filepath.Join(s.stateDir, "commands.log"): "",
		filepath.Join(s.Dir, "bmc.emu"):           BMCEmu,
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, "state"), 0o755); err != nil {
		t.Fatalf("servers.StartIPMISim: %v", err)
	}
	if err := os.MkdirAll(s.stateDir, 0o755); err != nil {
		t.Fatalf("servers.StartIPMISim: %v", err)
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatalf("servers.StartIPMISim: %v", err)
		}
	}
	script := filepath.Join(s.Dir, "chassis.sh")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(chassisScript, s.stateDir)), 0o755); err != nil {
		t.Fatalf("servers.StartIPMISim: %v", err)
	}
	t.Cleanup(s.Stop)

	// The port is free when we look, but another process may take it before
	// ipmi_sim binds it: try a few ports.
	var lastErr error
	for range 5 {
		port, err := freeUDPPort()
		if err != nil {
			t.Fatalf("servers.StartIPMISim: %v", err)
		}
		s.Port = port
		if err := os.WriteFile(filepath.Join(s.Dir, "lan.conf"), []byte(s.lanConf(script)), 0o644); err != nil {
			t.Fatalf("servers.StartIPMISim: %v", err)
		}
		lastErr = s.start()
		if lastErr == nil {
			return s
		}
		s.Stop()
		if !strings.Contains(lastErr.Error(), "in use") {
			break
		}
	}
	t.Fatalf("servers.StartIPMISim: %v", lastErr)
	return nil
}

// Addr is "127.0.0.1:PORT".
func (s *IPMISim) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

func (s *IPMISim) lanConf(script string) string {
	return LanConf(s.Port, script, s.Username, s.Password)
}

// LanConf is ipmi_sim's lan.conf: one BMC serving IPMI v2 on
// 127.0.0.1:port, its power driven by the chassis control script, one
// admin user.
func LanConf(port int, script, username, password string) string {
	return fmt.Sprintf(`name "bmc0"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 %d
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control %q
  user 2 true %q %q admin 10 none md2 md5 straight
`, port, script, username, password)
}

// start runs ipmi_sim and waits until ipmitool reads the power status.
func (s *IPMISim) start() error {
	argv := []string{"ipmi_sim", "-c", filepath.Join(s.Dir, "lan.conf"), "-f", filepath.Join(s.Dir, "bmc.emu"), "-s", filepath.Join(s.Dir, "state"), "-n"}
	return s.run(s.Dir, argv, readyTimeout, s.ready, func(log string) error {
		if strings.Contains(log, "in use") {
			return fmt.Errorf("ipmi_sim could not bind %s: address in use; log:\n%s", s.Addr(), log)
		}
		return nil
	})
}

func (s *IPMISim) ready() bool {
	_, err := s.ipmitool(time.Second, "power", "status")
	return err == nil
}

// ipmitool runs the real ipmitool against the simulator (lanplus, cipher
// suite 3: without -C 3 every call takes 10 s), the password in its
// environment.
func (s *IPMISim) ipmitool(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := append([]string{"-I", "lanplus", "-C", "3", "-H", s.Host, "-p", strconv.Itoa(s.Port), "-U", s.Username, "-E"}, args...)
	cmd := exec.CommandContext(ctx, "ipmitool", argv...)
	cmd.Env = append(os.Environ(), "IPMITOOL_PASSWORD="+s.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Ipmitool runs the real ipmitool against the simulator with the given
// arguments ("power", "status") and returns its output; a failure fails
// the test.
func (s *IPMISim) Ipmitool(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.ipmitool(20*time.Second, args...)
	if err != nil {
		t.Fatalf("servers: %v", err)
	}
	return out
}

// Power reports the simulated server's power as the chassis script last
// set it.
func (s *IPMISim) Power(t testing.TB) bool {
	t.Helper()
	return s.state(t, "power") == "1"
}

// NextBoot is the boot device ipmi_sim last handed the chassis script:
// "pxe" after a bootdev pxe, "default" after bootdev disk (ipmi_sim's
// name for the default hard disk), "default" at start.
func (s *IPMISim) NextBoot(t testing.TB) string {
	t.Helper()
	return s.state(t, "boot")
}

// Commands are the chassis script's calls so far, one per line as
// ipmi_sim made them: "get power", "set power 1", "set boot pxe", ...
func (s *IPMISim) Commands(t testing.TB) []string {
	t.Helper()
	log := s.state(t, "commands.log")
	if log == "" {
		return nil
	}
	return strings.Split(log, "\n")
}

// Sets are Commands without the reads: what the BMC was told to do.
func (s *IPMISim) Sets(t testing.TB) []string {
	t.Helper()
	var sets []string
	for _, c := range s.Commands(t) {
		if strings.HasPrefix(c, "set ") {
			sets = append(sets, c)
		}
	}
	return sets
}

func (s *IPMISim) state(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.stateDir, name))
	if err != nil {
		t.Fatalf("servers: ipmi_sim chassis state: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// freeUDPPort finds a UDP port free on 127.0.0.1.
func freeUDPPort() (int, error) {
	u, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free UDP port: %w", err)
	}
	defer u.Close()
	port := u.LocalAddr().(*net.UDPAddr).Port
	if port == 0 {
		return 0, errors.New("find a free UDP port: got port 0")
	}
	return port, nil
}
