package servers

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// SSHD is a real OpenSSH server on 127.0.0.1 that lets one client key log
// in as the user the test runs as, to run git's server programs over SSH.
type SSHD struct {
	Port int
	// ClientKey is the private key file sshd accepts.
	ClientKey string
	// KnownHosts is a known_hosts file holding the server's host key for
	// [127.0.0.1]:Port.
	KnownHosts string
	Dir        string
	daemon
}

// StartSSHD starts sshd (package openssh-server) in the foreground with a
// configuration of its own: a fresh host key, key login only, no PAM. The
// test's cleanup stops it.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	sshd := "/usr/sbin/sshd"
	if _, err := os.Stat(sshd); err != nil {
		Unavailable(t, "no /usr/sbin/sshd (install openssh-server)")
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		Unavailable(t, "no ssh-keygen (install openssh-client)")
	}
	s := &SSHD{Dir: t.TempDir()}
	s.name, s.logPath = "sshd", filepath.Join(s.Dir, "sshd.log")
	hostKey, clientKey := filepath.Join(s.Dir, "host_ed25519"), filepath.Join(s.Dir, "client_ed25519")
	for _, k := range []string{hostKey, clientKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("servers.StartSSHD: ssh-keygen: %v\n%s", err, out)
		}
	}
	s.ClientKey = clientKey
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatalf("servers.StartSSHD: %v", err)
	}
	authorized := filepath.Join(s.Dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatalf("servers.StartSSHD: %v", err)
	}
	// sshd wants its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		Unavailable(t, "cannot make /run/sshd for sshd: "+err.Error())
	}
	t.Cleanup(s.Stop)

	var lastErr error
	for range 5 {
		port, err := freePort(false)
		if err != nil {
			t.Fatalf("servers.StartSSHD: %v", err)
		}
		conf := filepath.Join(s.Dir, "sshd_config")
		err = os.WriteFile(conf, []byte(fmt.Sprintf(`ListenAddress 127.0.0.1:%d
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
LogLevel VERBOSE
`, port, hostKey, authorized, filepath.Join(s.Dir, "sshd.pid"))), 0o600)
		if err != nil {
			t.Fatalf("servers.StartSSHD: %v", err)
		}
		ready := func() bool {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 200*time.Millisecond)
			if err != nil {
				return false
			}
			c.Close()
			return true
		}
		if lastErr = s.run(s.Dir, []string{sshd, "-D", "-e", "-f", conf}, 10*time.Second, ready, nil); lastErr == nil {
			s.Port = port
			break
		}
		s.Stop()
	}
	if lastErr != nil {
		t.Fatalf("servers.StartSSHD: %v", lastErr)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatalf("servers.StartSSHD: %v", err)
	}
	s.KnownHosts = filepath.Join(s.Dir, "known_hosts")
	if err := os.WriteFile(s.KnownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%d %s", s.Port, hostPub)), 0o644); err != nil {
		t.Fatalf("servers.StartSSHD: %v", err)
	}
	return s
}
