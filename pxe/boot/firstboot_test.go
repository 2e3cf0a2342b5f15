package boot

import (
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/schema"
)

var allInstallers = []schema.InstallerKind{schema.InstallerAutoinstall, schema.InstallerCloudInit, schema.InstallerKickstart, schema.InstallerPreseed}

func TestFirstBootUnits(t *testing.T) {
	for _, tc := range []struct {
		unit string
		want []string // lines
	}{
		{installedUnitText, []string{
			"[Unit]", "Wants=network-online.target", "After=network-online.target",
			"ConditionPathExists=/etc/anneal/install-token",
			"StartLimitIntervalSec=30min", "StartLimitBurst=120",
			"[Service]", "Type=oneshot",
			"ExecStart=/usr/local/bin/anneal agent --once --install-token-file /etc/anneal/install-token",
			"ExecStartPost=/bin/rm -f /etc/anneal/install-token",
			"Restart=on-failure", "RestartSec=10s", "RestartPreventExitStatus=3",
			"ReadWritePaths=/etc/anneal",
			"[Install]", "WantedBy=multi-user.target",
		}},
		{agentUnitText, []string{
			"[Unit]", "Wants=network-online.target", "After=network-online.target anneal-installed.service",
			"[Service]", "ExecStart=/usr/local/bin/anneal agent --interval 5m", "Restart=always",
			"[Install]", "WantedBy=multi-user.target",
		}},
	} {
		lines := strings.Split(tc.unit, "\n")
		for _, w := range tc.want {
			if !slices.Contains(lines, w) {
				t.Errorf("unit lacks the line %q:\n%s", w, tc.unit)
			}
		}
		// echoLines and heredoc carry the text unchanged only if it holds
		// none of these.
		if strings.ContainsAny(tc.unit, `'\$`) || strings.Contains(tc.unit, "\n-") || strings.Contains(tc.unit, "\n"+heredocEOF+"\n") {
			t.Errorf("unit holds a quote, backslash, '$', a line starting with '-' or the here-document end:\n%s", tc.unit)
		}
		if strings.Contains(tc.unit, "--install-token ") {
			t.Errorf("unit puts a token on a command line:\n%s", tc.unit)
		}
	}
}

// TestFirstBootUnitsVerify runs systemd-analyze verify on both units, the
// binary they start replaced by an executable that exists.
func TestFirstBootUnitsVerify(t *testing.T) {
	analyze := testenv.LookPath(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	bin := filepath.Join(dir, "anneal")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, u := range firstBootUnits {
		p := filepath.Join(dir, u.name)
		if err := os.WriteFile(p, []byte(strings.ReplaceAll(u.text, binPath, bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	out, err := exec.CommandContext(t.Context(), analyze, append([]string{"verify"}, paths...)...).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestNoCallbackInInstaller checks that no rendered file runs the agent in
// the installer: the only "anneal agent" is a unit's ExecStart, the token
// is never an argument, and it appears only in URLs, on the kernel line
// and in the write of the token file.
func TestNoCallbackInInstaller(t *testing.T) {
	agentRun := regexp.MustCompile(`[A-Za-z/=.-]*anneal agent`)
	tokenUse := regexp.MustCompile(`(/install/[a-z0-9]+/|anneal\.token=|printf '%s' ')` + regexp.QuoteMeta(testToken))
	for _, kind := range allInstallers {
		t.Run(string(kind), func(t *testing.T) {
			site := loadSite(t)
			withInstaller(site, kind)
			for _, node := range site.Nodes {
				r, err := Render(site, node, testBase, testToken)
				if err != nil {
					t.Fatalf("%s: %v", node.Name, err)
				}
				files := map[string]string{"script": r.Script}
				for name, content := range r.Files {
					files[name] = content
				}
				for name, content := range files {
					for _, m := range agentRun.FindAllString(content, -1) {
						if m != "ExecStart=/usr/local/bin/anneal agent" && m != "Description=anneal agent" {
							t.Errorf("%s %s: runs the agent outside a unit: %q", node.Name, name, m)
						}
					}
					if strings.Contains(content, "--install-token ") {
						t.Errorf("%s %s: passes the install token as an argument", node.Name, name)
					}
					if all, used := strings.Count(content, testToken), len(tokenUse.FindAllStringIndex(content, -1)); all != used {
						t.Errorf("%s %s: the token appears %d times, %d of them in a URL, the kernel line or the token file's write:\n%s", node.Name, name, all, used, content)
					}
				}
			}
		})
	}
}

// TestFirstBootRuns runs what each installer runs last, with curl, wget,
// systemctl, curtin, in-target and restorecon stubbed and the installed
// system in a scratch directory, and checks the files it leaves there.
func TestFirstBootRuns(t *testing.T) {
	sh := testenv.LookPath(t, "sh", "dash")
	for _, kind := range allInstallers {
		t.Run(string(kind), func(t *testing.T) {
			site := loadSite(t)
			withInstaller(site, kind)
			node := site.Node("e1n01")
			r, err := Render(site, node, testBase, testToken)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			root, bin, log := filepath.Join(dir, "root"), filepath.Join(dir, "bin"), filepath.Join(dir, "log")
			for _, d := range []string{root + "/etc/network", bin} {
				if err := os.MkdirAll(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			stubs := map[string]string{
				// curl -fsS --retry 5 -o FILE URL, wget -q -O FILE URL
				"curl": `while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift 2;; --retry) shift 2;; -*) shift;; *) url=$1; shift;; esac; done
echo "fetched $url" > "$out"`,
				"wget": `while [ $# -gt 0 ]; do case $1 in -O) out=$2; shift 2;; -*) shift;; *) url=$1; shift;; esac; done
echo "fetched $url" > "$out"`,
				"systemctl":  `echo "systemctl $*" >> "$STUBLOG"`,
				"curtin":     `echo "curtin $*" >> "$STUBLOG"`,
				"in-target":  `echo "in-target $*" >> "$STUBLOG"`,
				"restorecon": `echo "restorecon $*" >> "$STUBLOG"`,
			}
			for name, body := range stubs {
				if err := os.WriteFile(filepath.Join(bin, name), []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			run := func(script string) {
				t.Helper()
				cmd := exec.CommandContext(t.Context(), sh, "-e", "-c", script)
				cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "STUBLOG="+log)
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%v\n%s\nscript:\n%s", err, out, script)
				}
			}
			var enable string
			switch kind {
			case schema.InstallerAutoinstall, schema.InstallerCloudInit:
				// The served late-commands, the installed system moved.
				var doc struct {
					Autoinstall struct {
						LateCommands []string `yaml:"late-commands"`
					} `yaml:"autoinstall"`
				}
				if err := yaml.Unmarshal([]byte(r.Files[FileUserData]), &doc); err != nil {
					t.Fatal(err)
				}
				if len(doc.Autoinstall.LateCommands) == 0 {
					t.Fatal("no late-commands")
				}
				for _, c := range doc.Autoinstall.LateCommands {
					run(strings.ReplaceAll(c, "/target", root))
				}
				enable = "curtin in-target --target=" + root + " -- systemctl enable anneal-installed.service anneal-agent.service"
			case schema.InstallerPreseed:
				// The served late_command, the installed system moved.
				var late string
				for _, l := range strings.Split(r.Files[FilePreseed], "\n") {
					if v, ok := strings.CutPrefix(l, "d-i preseed/late_command string "); ok {
						late = v
					}
				}
				if late == "" {
					t.Fatal("no preseed/late_command")
				}
				run(strings.ReplaceAll(late, "/target", root))
				enable = "in-target systemctl enable anneal-installed.service anneal-agent.service"
				if got, _ := os.ReadFile(filepath.Join(root, "etc/network/interfaces")); string(got) != "fetched "+testBase+"/install/e1n01/"+testToken+"/interfaces\n" {
					t.Errorf("/etc/network/interfaces: %q", got)
				}
			case schema.InstallerKickstart:
				// %post runs chrooted; it is the same commands with the
				// root "", so run them with the scratch root instead.
				ks := r.Files[FileKickstart]
				i := strings.Index(ks, "%post --erroronfail\n")
				if i < 0 {
					t.Fatalf("no %%post:\n%s", ks)
				}
				post, _, _ := strings.Cut(ks[i+len("%post --erroronfail\n"):], "%end\n")
				in, err := newInstall(site, node, testBase, testToken)
				if err != nil {
					t.Fatal(err)
				}
				if want := "set -e\n" + strings.Join(in.firstBoot(kickstartShell), "\n") + "\n"; post != want {
					t.Fatalf("%%post:\n%s\nwant:\n%s", post, want)
				}
				st := kickstartShell
				st.root = root
				run(strings.Join(in.firstBoot(st), "\n"))
				enable = "systemctl enable anneal-installed.service anneal-agent.service"
				if data, _ := os.ReadFile(log); !strings.Contains(string(data), "restorecon -R /etc/anneal /usr/local/bin/anneal /etc/systemd/system/anneal-installed.service /etc/systemd/system/anneal-agent.service\n") {
					t.Errorf("no restorecon of the files written:\n%s", data)
				}
			}
			if data, _ := os.ReadFile(log); !slices.Contains(strings.Split(string(data), "\n"), enable) {
				t.Errorf("the units are not enabled with %q:\n%s", enable, data)
			}
			for _, f := range []struct {
				path    string
				mode    fs.FileMode
				content string
			}{
				{"etc/anneal/build-id", 0, r.BuildID + "\n"},
				{"etc/anneal/agent.json", 0o600, "fetched " + testBase + "/install/e1n01/" + testToken + "/agent.json\n"},
				{"etc/anneal/install-token", 0o600, testToken},
				{"usr/local/bin/anneal", 0o755, "fetched " + testBase + "/agent/anneal\n"},
				{"etc/systemd/system/anneal-installed.service", 0, installedUnitText},
				{"etc/systemd/system/anneal-agent.service", 0, agentUnitText},
			} {
				p := filepath.Join(root, f.path)
				data, err := os.ReadFile(p)
				if err != nil {
					t.Errorf("/%s: %v", f.path, err)
					continue
				}
				if string(data) != f.content {
					t.Errorf("/%s is\n%s\nwant\n%s", f.path, data, f.content)
				}
				if st, err := os.Stat(p); err == nil && f.mode != 0 && st.Mode().Perm() != f.mode {
					t.Errorf("/%s has mode %v, want %v", f.path, st.Mode().Perm(), f.mode)
				}
			}
		})
	}
}
