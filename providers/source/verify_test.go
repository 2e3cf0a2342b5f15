package source

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"github.com/anneal-dev/anneal/internal/testenv"
)

// Signatures here are made by the real tools: ssh-keygen (through git's
// gpg.format=ssh) and gpg, in temporary key stores.

// toolPackages are the Debian packages, in .ci/run's PACKAGES, of the
// tools these tests run.
var toolPackages = map[string]string{"gpg": "gnupg", "ssh-keygen": "openssh-client"}

// needTool stops the test when a tool is missing: skipped, or failed under
// CI.
func needTool(t *testing.T, name string) {
	t.Helper()
	testenv.LookPath(t, name, toolPackages[name])
}

// run runs a command with extra environment and returns its trimmed output.
func run(t *testing.T, dir string, env []string, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0"), env...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// sshKey makes an ed25519 key pair and returns the private key's path.
func sshKey(t *testing.T, name string) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), name)
	run(t, "", nil, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", key)
	return key
}

func readPub(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// sshCommit makes a commit on work signed with the SSH key (a private key,
// or a certificate file) and returns its hash.
func sshCommit(t *testing.T, work, signingKey, msg string) plumbing.Hash {
	t.Helper()
	gitc(t, work, "-c", "gpg.format=ssh", "-c", "user.signingkey="+signingKey, "-c", "commit.gpgsign=true", "commit", "-q", "--allow-empty", "-m", msg)
	return plumbing.NewHash(gitc(t, work, "rev-parse", "HEAD"))
}

func writeTrust(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "trust")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustTrust(t *testing.T, content string) *Trust {
	t.Helper()
	tr, err := LoadTrust(writeTrust(t, content))
	if err != nil {
		t.Fatalf("LoadTrust: %v\n%s", err, content)
	}
	return tr
}

func wantUntrusted(t *testing.T, err error, reason string) *UntrustedError {
	t.Helper()
	var ue *UntrustedError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v (%T), want *UntrustedError", err, err)
	}
	if !strings.Contains(ue.Reason, reason) {
		t.Errorf("reason %q does not contain %q", ue.Reason, reason)
	}
	if !strings.Contains(err.Error(), ue.Commit.String()) || !strings.Contains(err.Error(), ue.TrustFile) {
		t.Errorf("message %q does not name the commit and trust file", err)
	}
	var un *UnsignedError
	if errors.As(err, &un) {
		t.Errorf("an UntrustedError is also an UnsignedError")
	}
	return ue
}

// rewriteCommit writes a commit object made from commit h's payload
// (edited by edit) and the signature sig (none when empty), and returns its
// hash. It is how tampered and oddly signed commits are made: git would
// never make them.
func rewriteCommit(t *testing.T, work string, h plumbing.Hash, edit func(string) string, sig string) plumbing.Hash {
	t.Helper()
	raw := gitc(t, work, "cat-file", "commit", h.String()) + "\n"
	head, msg, _ := strings.Cut(raw, "\n\n")
	var kept []string
	lines := strings.Split(head, "\n")
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "gpgsig ") {
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], " ") {
				i++
			}
			continue
		}
		kept = append(kept, lines[i])
	}
	payload := strings.Join(kept, "\n") + "\n\n" + msg
	if edit != nil {
		payload = edit(payload)
	}
	if sig != "" {
		head, msg, _ := strings.Cut(payload, "\n\n")
		sig = strings.TrimRight(sig, "\n")
		payload = head + "\ngpgsig " + strings.ReplaceAll(sig, "\n", "\n ") + "\n\n" + msg
	}
	return plumbing.NewHash(run(t, work, nil, payload, "git", "hash-object", "-t", "commit", "-w", "--stdin"))
}

// payloadOf is what a signature over commit h covers.
func payloadOf(t *testing.T, work string, h plumbing.Hash) string {
	t.Helper()
	c := rewriteCommit(t, work, h, nil, "")
	return gitc(t, work, "cat-file", "commit", c.String()) + "\n"
}

// sshSign signs data with ssh-keygen -Y sign in a namespace.
func sshSign(t *testing.T, key, namespace, data string) string {
	t.Helper()
	return run(t, "", nil, data, "ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", key) + "\n"
}

func TestVerifySSH(t *testing.T) {
	needTool(t, "ssh-keygen")
	alice, mallory := sshKey(t, "alice"), sshKey(t, "mallory")
	work := newWorkRepo(t, threeCommits...)
	unsigned := plumbing.NewHash(gitc(t, work, "rev-parse", "HEAD"))
	byMallory := sshCommit(t, work, mallory, "by mallory")
	byAlice := sshCommit(t, work, alice, "by alice")
	byAlicePub := sshCommit(t, work, alice+".pub", "by alice, key named by its public half")

	trustFile := writeTrust(t, "# the site's signers\n\nalice@example.net,ops@example.net "+readPub(t, alice)+"\n")
	trust, err := LoadTrust(trustFile)
	if err != nil {
		t.Fatal(err)
	}
	if trust.Kind() != FormatSSH || trust.Path() != trustFile {
		t.Errorf("Kind, Path = %q, %q", trust.Kind(), trust.Path())
	}
	r := open(t, Options{URL: work})

	for _, h := range []plumbing.Hash{byAlice, byAlicePub} {
		s, err := trust.Verify(r, h)
		if err != nil {
			t.Fatalf("Verify(alice's commit): %v", err)
		}
		fp := run(t, "", nil, "", "ssh-keygen", "-l", "-E", "sha256", "-f", alice+".pub")
		if s.Format != FormatSSH || s.Principal != "alice@example.net,ops@example.net" || s.Line != 3 || !strings.Contains(fp, s.Fingerprint) || !strings.HasPrefix(s.Fingerprint, "SHA256:") {
			t.Errorf("Signer = %+v (ssh-keygen says %s)", s, fp)
		}
	}
	// git agrees with the trust file.
	gitc(t, work, "-c", "gpg.ssh.allowedSignersFile="+trustFile, "verify-commit", byAlice.String())

	_, err = trust.Verify(r, byMallory)
	ue := wantUntrusted(t, err, "is valid, but the key is not in the allowed signers file")
	if ue.Format != FormatSSH || ue.Key == "" || !strings.Contains(ue.Reason, ue.Key) {
		t.Errorf("UntrustedError = %+v", ue)
	}

	_, err = trust.Verify(r, unsigned)
	var un *UnsignedError
	if !errors.As(err, &un) || un.Commit != unsigned {
		t.Fatalf("unsigned commit: err = %v, want *UnsignedError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, unsigned.String()) || !strings.Contains(msg, trustFile) || !strings.Contains(msg, `namespace "git"`) {
		t.Errorf("message %q", msg)
	}

	if _, err := trust.Verify(r, plumbing.NewHash(strings.Repeat("ab", 20))); err == nil || errors.As(err, &un) || errors.As(err, &ue) {
		t.Errorf("missing commit: err = %v, want a plain error", err)
	}

	// The Branch source: Latest still gives the tip; Verify checks it.
	ctx := context.Background()
	b := &Branch{Repo: r, Trust: trust}
	rev, err := b.Latest(ctx)
	if err != nil || rev.ID != byAlicePub.String() {
		t.Fatalf("Latest = %v, %v", rev, err)
	}
	if err := b.Verify(ctx, rev.ID); err != nil {
		t.Errorf("Branch.Verify(tip): %v", err)
	}
	if err := b.Verify(ctx, byMallory.String()); !errors.As(err, &ue) {
		t.Errorf("Branch.Verify(mallory's): %v", err)
	}
	if err := b.Verify(ctx, unsigned.String()); !errors.As(err, &un) {
		t.Errorf("Branch.Verify(unsigned): %v", err)
	}
	if err := (&Branch{Repo: r}).Verify(ctx, unsigned.String()); err != nil {
		t.Errorf("Branch without Trust: Verify = %v", err)
	}
	var _ interface {
		Verify(context.Context, string) error
	} = b
}

// TestVerifySSHBadSignatures feeds commits git would not make: a signature
// in another namespace, truncated or corrupted signatures, a signature
// copied onto an edited commit, two signatures.
func TestVerifySSHBadSignatures(t *testing.T) {
	needTool(t, "ssh-keygen")
	alice := sshKey(t, "alice")
	work := newWorkRepo(t, threeCommits...)
	signed := sshCommit(t, work, alice, "signed")
	trust := mustTrust(t, "alice@example.net "+readPub(t, alice)+"\n")
	payload := payloadOf(t, work, signed)
	good := sshSign(t, alice, "git", payload)

	// The reconstruction is faithful: the good signature re-attached verifies.
	same := rewriteCommit(t, work, signed, nil, good)
	r := open(t, Options{URL: work})
	if s, err := trust.Verify(r, same); err != nil || s.Principal != "alice@example.net" {
		t.Fatalf("re-signed commit: %+v, %v", s, err)
	}

	lines := strings.Split(strings.TrimSpace(good), "\n")
	truncated := strings.Join(append(lines[:len(lines)-3:len(lines)-3], lines[len(lines)-1]), "\n")
	// Flip a base64 character of the last full line: in the signature bytes.
	flipped := []byte(good)
	i := strings.LastIndex(good, lines[len(lines)-2]) + 10
	if flipped[i] == 'A' {
		flipped[i] = 'B'
	} else {
		flipped[i] = 'A'
	}

	for _, c := range []struct {
		name   string
		edit   func(string) string
		sig    string
		reason string
	}{
		{"namespace file", nil, sshSign(t, alice, "file", payload), `for namespace "file", not "git"`},
		{"truncated", nil, truncated, "malformed SSH signature"},
		{"corrupted", nil, string(flipped), "does not verify"},
		{"tampered message", func(p string) string { return strings.Replace(p, "signed", "signed, then edited", 1) }, good, "does not verify"},
		{"tampered tree", func(p string) string {
			return "tree " + gitc(t, work, "rev-parse", "HEAD~2^{tree}") + p[strings.Index(p, "\n"):]
		}, good, "does not verify"},
		{"two signatures", nil, good + good, "2 signature blocks"},
		{"not armored", nil, "hello", "unknown format"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := rewriteCommit(t, work, signed, c.edit, c.sig)
			_, err := trust.Verify(r, h)
			wantUntrusted(t, err, c.reason)
		})
	}
}

// TestVerifySSHOptions checks the allowed-signers options: namespaces,
// valid-after and valid-before (at the commit time), and cert-authority
// with a real certificate.
func TestVerifySSHOptions(t *testing.T) {
	needTool(t, "ssh-keygen")
	alice, ca, bob := sshKey(t, "alice"), sshKey(t, "ca"), sshKey(t, "bob")
	run(t, "", nil, "", "ssh-keygen", "-q", "-s", ca, "-I", "bob-cert", "-n", "bob@example.net,deploy", "-V", "-1h:+1h", bob+".pub")
	work := newWorkRepo(t, threeCommits...)
	byAlice := sshCommit(t, work, alice, "by alice")
	byBobCert := sshCommit(t, work, bob+"-cert.pub", "by bob's certificate")
	byBob := sshCommit(t, work, bob, "by bob's plain key")
	r := open(t, Options{URL: work})
	pub, caPub := readPub(t, alice), readPub(t, ca)
	past := time.Now().Add(-48 * time.Hour).UTC().Format("20060102")
	future := time.Now().Add(48 * time.Hour).UTC().Format("20060102")

	for _, c := range []struct {
		name, trust string
		commit      plumbing.Hash
		principal   string // "" wants an UntrustedError with reason
		reason      string
	}{
		{"namespaces git", `alice@example.net namespaces="git" ` + pub, byAlice, "alice@example.net", ""},
		{"namespaces list", `alice@example.net namespaces="file,g?t" ` + pub, byAlice, "alice@example.net", ""},
		{"namespaces file", `alice@example.net namespaces="file" ` + pub, byAlice, "", `not allowed to sign in namespace "git"`},
		{"namespaces negated", `alice@example.net namespaces="*,!git" ` + pub, byAlice, "", `not allowed to sign in namespace "git"`},
		{"valid window", `alice@example.net valid-after="` + past + `",valid-before="` + future + `Z" ` + pub, byAlice, "alice@example.net", ""},
		{"expired", `alice@example.net valid-before="` + past + `" ` + pub, byAlice, "", "the key expired at"},
		{"not yet valid", `alice@example.net valid-after="` + future + `0000Z" ` + pub, byAlice, "", "not valid before"},
		{"second line accepts", "alice@example.net namespaces=\"file\" " + pub + "\nalice@example.net " + pub, byAlice, "alice@example.net", ""},
		{"quoted principals", `"alice@example.net" ` + pub, byAlice, "alice@example.net", ""},
		{"cert-authority", `*@example.net cert-authority ` + caPub, byBobCert, "bob@example.net", ""},
		{"cert-authority namespaces", `*@example.net,deploy cert-authority,namespaces="git" ` + caPub, byBobCert, "bob@example.net,deploy", ""},
		{"cert-authority principal mismatch", `alice@example.net cert-authority ` + caPub, byBobCert, "", "match none of"},
		{"cert-authority negated principal", `*,!bob@example.net,!deploy cert-authority ` + caPub, byBobCert, "", "match none of"},
		{"plain key of a CA line", `*@example.net cert-authority ` + caPub, byBob, "", "not in the allowed signers file"},
		{"CA key without cert-authority", `*@example.net ` + caPub, byBobCert, "", "not in the allowed signers file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			trust := mustTrust(t, c.trust+"\n")
			s, err := trust.Verify(r, c.commit)
			if c.principal == "" {
				wantUntrusted(t, err, c.reason)
				return
			}
			if err != nil || s.Principal != c.principal {
				t.Fatalf("Verify = %+v, %v; want principal %q", s, err, c.principal)
			}
		})
	}

	// An expired certificate: valid only in the past.
	run(t, "", nil, "", "ssh-keygen", "-q", "-s", ca, "-I", "old", "-n", "bob@example.net", "-V", "20200101:20200102", bob+".pub")
	old := sshCommit(t, work, bob+"-cert.pub", "by bob's expired certificate")
	_, err := mustTrust(t, "* cert-authority "+caPub+"\n").Verify(r, old)
	wantUntrusted(t, err, "cert has expired")
}

// gpgHome makes a GnuPG home with a new ed25519 signing key and returns the
// environment to use it and the key's fingerprint.
func gpgHome(t *testing.T, uid string) ([]string, string) {
	t.Helper()
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"GNUPGHOME=" + home}
	t.Cleanup(func() {
		_ = exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		_ = os.RemoveAll(home)
	})
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "", env, "", "gpg", "--batch", "--quiet", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
	var fpr string
	for _, line := range strings.Split(run(t, "", env, "", "gpg", "--batch", "--with-colons", "--list-keys", uid), "\n") {
		if f := strings.Split(line, ":"); f[0] == "fpr" && fpr == "" {
			fpr = f[9]
		}
	}
	if fpr == "" {
		t.Fatal("no fingerprint for the new key")
	}
	return env, fpr
}

func pgpCommit(t *testing.T, work string, env []string, fpr, msg string) plumbing.Hash {
	t.Helper()
	args := []string{"-c", "user.name=t", "-c", "user.email=t@example.net", "-c", "gpg.format=openpgp", "-c", "gpg.program=gpg", "-c", "user.signingkey=" + fpr, "commit", "-q", "-S", "--allow-empty", "-m", msg}
	run(t, work, env, "", "git", args...)
	return plumbing.NewHash(gitc(t, work, "rev-parse", "HEAD"))
}

func TestVerifyOpenPGP(t *testing.T) {
	needTool(t, "gpg")
	needTool(t, "ssh-keygen")
	envT, fprT := gpgHome(t, "Test <t@example.net>")
	envU, fprU := gpgHome(t, "Other <o@example.net>")
	work := newWorkRepo(t, threeCommits...)
	unsigned := plumbing.NewHash(gitc(t, work, "rev-parse", "HEAD"))
	byT := pgpCommit(t, work, envT, fprT, "by test")
	byU := pgpCommit(t, work, envU, fprU, "by other")
	bySSH := sshCommit(t, work, sshKey(t, "alice"), "by ssh")
	r := open(t, Options{URL: work})

	exported := run(t, "", envT, "", "gpg", "--batch", "--armor", "--export", fprT) + "\n"
	trustFile := writeTrust(t, exported)
	trust, err := LoadTrust(trustFile)
	if err != nil {
		t.Fatal(err)
	}
	if trust.Kind() != FormatOpenPGP {
		t.Errorf("Kind = %q", trust.Kind())
	}
	s, err := trust.Verify(r, byT)
	if err != nil {
		t.Fatalf("Verify(trusted): %v", err)
	}
	if s.Format != FormatOpenPGP || s.Fingerprint != fprT || s.Identity != "Test <t@example.net>" {
		t.Errorf("Signer = %+v, want fingerprint %s", s, fprT)
	}

	_, err = trust.Verify(r, byU)
	ue := wantUntrusted(t, err, "which is not in the keyring")
	if !strings.Contains(fprU, ue.Key) || ue.Key == "" {
		t.Errorf("Key = %q, want (a suffix of) %s", ue.Key, fprU)
	}
	_, err = trust.Verify(r, bySSH)
	wantUntrusted(t, err, "signed with an SSH key, but the trust file is an OpenPGP keyring")
	var un *UnsignedError
	if _, err := trust.Verify(r, unsigned); !errors.As(err, &un) {
		t.Errorf("unsigned: %v", err)
	}

	// A keyring of both keys, one block after the other, trusts both.
	both := mustTrust(t, exported+"\n"+run(t, "", envU, "", "gpg", "--batch", "--armor", "--export", fprU)+"\n")
	for _, h := range []plumbing.Hash{byT, byU} {
		if _, err := both.Verify(r, h); err != nil {
			t.Errorf("two-key keyring: %v", err)
		}
	}

	// A tampered commit and a corrupted signature are refused.
	sig := strings.TrimSpace(gitc(t, work, "cat-file", "commit", byT.String()))
	sig = sig[strings.Index(sig, "-----BEGIN PGP SIGNATURE-----"):strings.Index(sig, "-----END PGP SIGNATURE-----")]
	sig = strings.ReplaceAll(sig, "\n ", "\n") + "-----END PGP SIGNATURE-----\n"
	edited := rewriteCommit(t, work, byT, func(p string) string { return strings.Replace(p, "by test", "by test, edited", 1) }, sig)
	_, err = trust.Verify(r, edited)
	wantUntrusted(t, err, "does not verify")
	same := rewriteCommit(t, work, byT, nil, sig)
	if _, err := trust.Verify(r, same); err != nil {
		t.Errorf("re-signed commit: %v", err)
	}

	// An SSH allowed-signers file refuses an OpenPGP signature.
	_, err = mustTrust(t, "a@example.net "+readPub(t, sshKey(t, "a"))+"\n").Verify(r, byT)
	wantUntrusted(t, err, "signed with an OpenPGP key, but the trust file is an SSH allowed signers file")
}

func TestLoadTrustErrors(t *testing.T) {
	needTool(t, "ssh-keygen")
	pub := readPub(t, sshKey(t, "k"))
	typ, b64, _ := strings.Cut(pub, " ")
	b64, _, _ = strings.Cut(b64, " ")
	for _, c := range []struct {
		name, content, want string
	}{
		{"empty", "", "no keys"},
		{"comments only", "# nothing\n\n", "no keys"},
		{"public key line without principals", pub + "\n", ":1: the line starts with key type"},
		{"no key", "alice@example.net\n", ":1: missing key"},
		{"bad base64", "# c\nalice@example.net " + typ + " !!!notbase64\n", ":2: invalid ssh-ed25519 key"},
		{"key without base64", "alice@example.net " + typ + "\n", `:1: key type "ssh-ed25519" without the base64 key`},
		{"type mismatch", "alice@example.net ssh-rsa " + b64 + "\n", ":1: "},
		{"unknown type", "alice@example.net cert-authority ssh-foo " + b64 + "\n", ":1: unknown key type \"ssh-foo\""},
		{"dsa", "alice@example.net ssh-dss " + b64 + "\n", ":1: DSA keys"},
		{"certificate", "alice@example.net ssh-ed25519-cert-v01@openssh.com " + b64 + "\n", ":1: key type \"ssh-ed25519-cert-v01@openssh.com\" is a certificate"},
		{"unknown option", "ok@x " + pub + "\nalice@example.net no-touch-required " + pub + "\n", ":2: unsupported option \"no-touch-required\""},
		{"unquoted value", "alice@example.net namespaces=git " + pub + "\n", ":1: option namespaces: the value must be in double quotes"},
		{"unterminated quote", "alice@example.net namespaces=\"git " + pub + "\n", ":1: options: unterminated quote"},
		{"bad time", "alice@example.net valid-after=\"2024-01-01\" " + pub + "\n", ":1: option valid-after: invalid time"},
		{"empty option", "alice@example.net cert-authority,,namespaces=\"git\" " + pub + "\n", ":1: options \"cert-authority,,namespaces=\\\"git\\\"\": empty option"},
		{"option twice", "alice@example.net namespaces=\"git\",namespaces=\"file\" " + pub + "\n", ":1: option \"namespaces\" given twice"},
		{"window backwards", "alice@example.net valid-after=\"20250101\",valid-before=\"20240101\" " + pub + "\n", ":1: valid-after is not before valid-before"},
		{"options without key", "alice@example.net cert-authority\n", ":1: missing key after the options"},
		{"pgp private", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n", ":1: a private key block"},
		{"pgp garbage", "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n", ":1: invalid OpenPGP public key block"},
		{"pgp unterminated", "\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n", ":2: key block without its -----END PGP PUBLIC KEY BLOCK----- line"},
		{"pgp message", "-----BEGIN PGP MESSAGE-----\n", ":1: -----BEGIN PGP MESSAGE-----: want -----BEGIN PGP PUBLIC KEY BLOCK-----"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := writeTrust(t, c.content)
			_, err := LoadTrust(p)
			if err == nil {
				t.Fatalf("LoadTrust succeeded on:\n%s", c.content)
			}
			if !strings.HasPrefix(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err = %v\nwant %s%s", err, p, c.want)
			}
		})
	}
	if _, err := LoadTrust(filepath.Join(t.TempDir(), "missing")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestLoadTrustOpenPGPTrailing(t *testing.T) {
	needTool(t, "gpg")
	env, fpr := gpgHome(t, "Test <t@example.net>")
	exported := run(t, "", env, "", "gpg", "--batch", "--armor", "--export", fpr)
	lines := strings.Count(exported, "\n") + 1
	_, err := LoadTrust(writeTrust(t, exported+"\nstray text\n"))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(":%d: unexpected text", lines+1)) {
		t.Errorf("err = %v, want unexpected text at line %d", err, lines+1)
	}
}

func TestMatchPatternList(t *testing.T) {
	for _, c := range []struct {
		s, list string
		want    int
	}{
		{"git", "git", 1},
		{"git", "file", 0},
		{"git", "file,git", 1},
		{"git", "g*", 1},
		{"git", "g?t", 1},
		{"git", "g?", 0},
		{"git", "*,!git", -1},
		{"a@example.net", "*@example.net", 1},
		{"a@example.org", "*@example.net", 0},
		{"", "*", 1},
		{"abc", "a**c", 1},
	} {
		if got := matchPatternList(c.s, c.list); got != c.want {
			t.Errorf("matchPatternList(%q, %q) = %d, want %d", c.s, c.list, got, c.want)
		}
	}
}
