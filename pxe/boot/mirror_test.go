package boot

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/anneal-dev/anneal/internal/sitetest"
	"github.com/anneal-dev/anneal/internal/testenv"
	"github.com/anneal-dev/anneal/schema"
)

// mirrorSite is the example site, through the loader, with a mirror on
// both images: Ubuntu's archive on a port, Rocky's BaseOS repository.
func mirrorSite(t *testing.T) *schema.Site {
	t.Helper()
	return sitetest.ExampleWith(t, "../../examples/site-repo", map[string]func(string) string{
		"images/ubuntu-22.04.yaml": func(s string) string {
			s = strings.Replace(s, "  - ip=dhcp\n", "  - ip=dhcp\nmirror: http://mirror.example.net:8080/ubuntu\n", 1)
			return strings.Replace(s, "  - inst.text\n", "  - inst.text\nmirror: https://mirror.example.net/rocky/9.4/BaseOS/x86_64/os/\n", 1)
		},
	})
}

// lines are a file's lines.
func lines(s string) []string { return strings.Split(s, "\n") }

func TestRenderMirror(t *testing.T) {
	tests := []struct {
		name    string
		mirror  bool
		kind    schema.InstallerKind
		image   string // of e1n01's image, with kind as its installer
		mirrorS string // the image's mirror, over what the site says
		file    string
		want    []string // whole lines the file holds
		wantNot []string // substrings it does not
	}{
		{name: "preseed, http mirror with a port", mirror: true, kind: schema.InstallerPreseed, file: FilePreseed,
			want: []string{"d-i mirror/country string manual", "d-i mirror/protocol string http",
				"d-i mirror/http/hostname string mirror.example.net:8080", "d-i mirror/http/directory string /ubuntu",
				"d-i mirror/http/proxy string"},
			wantNot: []string{"# mirror:", "mirror/https/"}},
		{name: "preseed, https mirror at the root", mirror: true, kind: schema.InstallerPreseed, mirrorS: "https://deb.example.net", file: FilePreseed,
			want: []string{"d-i mirror/country string manual", "d-i mirror/protocol string https",
				"d-i mirror/https/hostname string deb.example.net", "d-i mirror/https/directory string /",
				"d-i mirror/https/proxy string"},
			wantNot: []string{"mirror/http/"}},
		{name: "preseed, no mirror", kind: schema.InstallerPreseed, file: FilePreseed,
			want:    []string{"# mirror: the image names none, so d-i picks its default (the public Debian mirrors)"},
			wantNot: []string{"d-i mirror/"}},
		{name: "preseed, static network", kind: schema.InstallerPreseed, file: FilePreseed,
			want: []string{"d-i preseed/run string netcfg.sh", "d-i netcfg/choose_interface select eno1",
				"d-i netcfg/disable_autoconfig boolean true", "d-i netcfg/get_ipaddress string 10.10.1.11",
				"d-i netcfg/get_netmask string 255.255.255.0", "d-i netcfg/get_gateway string 10.10.1.1",
				"d-i netcfg/get_nameservers string 10.10.2.2 fd00:a:0:120::2", "d-i netcfg/confirm_static boolean true",
				"d-i netcfg/get_hostname string e1n01", "d-i netcfg/hostname string e1n01",
				"d-i netcfg/get_domain string example.net"}},
		{name: "preseed/run script", kind: schema.InstallerPreseed, file: FileNetcfg,
			want: []string{"#!/bin/sh", "kill-all-dhcp; netcfg"}},
		{name: "kickstart, mirror", mirror: true, image: "rocky-9", kind: schema.InstallerKickstart, file: FileKickstart,
			want: []string{"url --url=https://mirror.example.net/rocky/9.4/BaseOS/x86_64/os/"}},
		{name: "kickstart, no mirror", image: "rocky-9", kind: schema.InstallerKickstart, file: FileKickstart,
			wantNot: []string{"\nurl "}},
		{name: "autoinstall, mirror", mirror: true, kind: schema.InstallerAutoinstall, file: FileUserData,
			want: []string{"  apt:", "    primary:", "      - arches: [default]", "        uri: http://mirror.example.net:8080/ubuntu"}},
		{name: "autoinstall, no mirror", kind: schema.InstallerAutoinstall, file: FileUserData,
			wantNot: []string{"apt:"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			site := loadSite(t)
			if tc.mirror {
				site = mirrorSite(t)
			}
			nd := site.Node("e1n01")
			if tc.image != "" {
				nd.Image = tc.image
			}
			img := site.Image(nd.Image)
			img.Installer = tc.kind
			if tc.mirrorS != "" {
				img.Mirror = tc.mirrorS
			}
			r, err := Render(site, nd, testBase, testToken)
			if err != nil {
				t.Fatal(err)
			}
			got := r.Files[tc.file]
			for _, w := range tc.want {
				if !slices.Contains(lines(got), w) {
					t.Errorf("%s lacks the line %q:\n%s", tc.file, w, got)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("%s holds %q:\n%s", tc.file, w, got)
				}
			}
			if tc.kind == schema.InstallerAutoinstall {
				var ud struct {
					Autoinstall struct {
						Apt *struct {
							Primary []struct {
								Arches []string `yaml:"arches"`
								URI    string   `yaml:"uri"`
							} `yaml:"primary"`
						} `yaml:"apt"`
					} `yaml:"autoinstall"`
				}
				if err := yaml.Unmarshal([]byte(got), &ud); err != nil {
					t.Fatalf("user-data: %v", err)
				}
				if a := ud.Autoinstall.Apt; tc.mirror != (a != nil) ||
					(a != nil && (len(a.Primary) != 1 || !slices.Equal(a.Primary[0].Arches, []string{"default"}) || a.Primary[0].URI != img.Mirror)) {
					t.Errorf("autoinstall apt %+v, want the primary archive %q", a, img.Mirror)
				}
			}
		})
	}
}

// The mirror is not part of the build: moving to another mirror rebuilds
// no node.
func TestMirrorKeepsBuild(t *testing.T) {
	plain, mirrored := loadSite(t), mirrorSite(t)
	for _, nd := range plain.Nodes {
		a, err := Render(plain, nd, testBase, testToken)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Render(mirrored, mirrored.Node(nd.Name), testBase, testToken)
		if err != nil {
			t.Fatal(err)
		}
		if a.BuildID != b.BuildID {
			t.Errorf("%s: build %s without a mirror, %s with one", nd.Name, a.BuildID, b.BuildID)
		}
	}
}

// TestPreseedSelections feeds every node's preseed, with and without a
// mirror, to debconf-set-selections --checkonly, the parser of the
// preseed format. It loads a debconf database even to check, so it gets
// one of its own: the system's may be locked by a package manager.
func TestPreseedSelections(t *testing.T) {
	dss := testenv.LookPath(t, "debconf-set-selections", "debconf")
	db := t.TempDir()
	rc := filepath.Join(db, "debconf.conf")
	conf := "Config: configdb\nTemplates: templatedb\n\n" +
		"Name: configdb\nDriver: File\nFilename: " + filepath.Join(db, "config.dat") + "\n\n" +
		"Name: templatedb\nDriver: File\nFilename: " + filepath.Join(db, "templates.dat") + "\n"
	if err := os.WriteFile(rc, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, mirror := range []bool{false, true} {
		site := loadSite(t)
		if mirror {
			site = mirrorSite(t)
		}
		withInstaller(site, schema.InstallerPreseed)
		for _, nd := range site.Nodes {
			r, err := Render(site, nd, testBase, testToken)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), FilePreseed)
			if err := os.WriteFile(path, []byte(r.Files[FilePreseed]), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.CommandContext(t.Context(), dss, "--checkonly", path)
			cmd.Env = append(os.Environ(), "DEBCONF_SYSTEMRC="+rc)
			out, err := cmd.CombinedOutput()
			// A line of an unknown type is only a warning: any output fails.
			if err != nil || len(out) != 0 {
				t.Errorf("%s (mirror %v): debconf-set-selections --checkonly: %v\n%s\n%s", nd.Name, mirror, err, out, r.Files[FilePreseed])
			}
		}
	}
}
