package source

// Commit signature verification: only commits signed by a trusted key are
// applied. Trust comes from one file, either an ASCII-armored OpenPGP public
// keyring or an SSH allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS),
// the two kinds of keys git signs commits with.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// Trust kinds and signature formats.
const (
	FormatOpenPGP = "openpgp"
	FormatSSH     = "ssh"
)

// sshNamespace is the SSHSIG namespace git signs commits in.
const sshNamespace = "git"

// Trust is a set of keys whose commit signatures are accepted, read from a
// trust file by LoadTrust. It is immutable and safe for concurrent use.
type Trust struct {
	path    string
	kind    string // FormatOpenPGP or FormatSSH
	signers []allowedSigner
	keyring openpgp.EntityList
}

// Signer says who signed a commit.
type Signer struct {
	// Format is FormatSSH or FormatOpenPGP.
	Format string
	// Fingerprint is the signing key's fingerprint: for SSH, "SHA256:..." of
	// the key (of the certified key for a certificate); for OpenPGP, the
	// primary key's fingerprint in upper-case hex.
	Fingerprint string
	// Principal (SSH) is the principals field of the allowed-signers line
	// that accepted the key, as `git verify-commit` shows it; for a
	// certificate, the certificate's principals that the line's patterns
	// matched, comma-separated.
	Principal string
	// Identity (OpenPGP) is the key's primary user id, e.g.
	// "Alice <alice@example.net>".
	Identity string
	// Line (SSH) is the line of the allowed-signers file that accepted it.
	Line int
}

// String describes the signer for logs.
func (s Signer) String() string {
	if s.Format == FormatSSH {
		return fmt.Sprintf("%s (SSH key %s)", s.Principal, s.Fingerprint)
	}
	return fmt.Sprintf("%s (OpenPGP key %s)", s.Identity, s.Fingerprint)
}

// UnsignedError is returned by Verify for a commit that carries no
// signature.
type UnsignedError struct {
	Commit    plumbing.Hash
	TrustFile string
	Kind      string // the trust file's kind: FormatSSH or FormatOpenPGP
}

func (e *UnsignedError) Error() string {
	return fmt.Sprintf("commit %s is not signed: expected %s", e.Commit, expected(e.Kind, e.TrustFile))
}

// UntrustedError is returned by Verify for a commit whose signature does not
// verify, is malformed, or is made by a key the trust file does not accept.
type UntrustedError struct {
	Commit    plumbing.Hash
	TrustFile string
	Kind      string // the trust file's kind: FormatSSH or FormatOpenPGP
	// Format is the signature's format: "ssh", "openpgp", "x509" or
	// "unknown".
	Format string
	// Key identifies the signing key when the signature names it: an SSH
	// fingerprint, or an OpenPGP fingerprint or key id. May be empty.
	Key string
	// Reason says what is wrong.
	Reason string
}

func (e *UntrustedError) Error() string {
	return fmt.Sprintf("commit %s is not signed by a trusted key: %s; expected %s", e.Commit, e.Reason, expected(e.Kind, e.TrustFile))
}

func expected(kind, file string) string {
	if kind == FormatSSH {
		return fmt.Sprintf("an SSH signature (namespace %q) by a key in allowed signers file %s", sshNamespace, file)
	}
	return fmt.Sprintf("an OpenPGP signature by a key in keyring %s", file)
}

// Path is the trust file's path.
func (t *Trust) Path() string { return t.path }

// Kind is the trust file's kind: FormatSSH or FormatOpenPGP.
func (t *Trust) Kind() string { return t.kind }

// LoadTrust reads a trust file: an ASCII-armored OpenPGP public keyring
// (one or more "-----BEGIN PGP PUBLIC KEY BLOCK-----" blocks, as
// `gpg --armor --export` writes), or an SSH allowed-signers file in git's
// and ssh-keygen's format:
//
//	principals [options] keytype base64-key [comment]
//
// where options are cert-authority, namespaces="...", valid-after="..." and
// valid-before="..." (ssh-keygen(1), ALLOWED SIGNERS). Errors name the file
// and line.
func LoadTrust(path string) (*Trust, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load trust file: %w", err)
	}
	t := &Trust{path: path}
	text := string(data)
	if strings.HasPrefix(strings.TrimLeft(text, " \t\r\n"), "-----BEGIN PGP ") {
		t.kind = FormatOpenPGP
		t.keyring, err = parseKeyring(path, text)
	} else {
		t.kind = FormatSSH
		t.signers, err = parseAllowedSigners(path, text)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Verify checks the signature of commit h in repo against the trust file
// and says who signed. The signature must cover the commit object without
// its gpgsig header, as git signs it. A commit without a signature gives an
// *UnsignedError; a bad, malformed or unsupported signature, or one by a key
// the trust file does not accept, an *UntrustedError. Other errors (the
// commit cannot be read) are neither.
//
// SSH keys' valid-after and valid-before, and certificates' validity, are
// checked at the commit's committer time, as git does; OpenPGP keys'
// expiry and revocation are checked at the current time, as gpg does.
func (t *Trust) Verify(repo *Repo, h plumbing.Hash) (Signer, error) {
	if t == nil {
		return Signer{}, fmt.Errorf("verify commit %s: no trust file loaded", h)
	}
	payload, sig, when, err := repo.signedPayload(h)
	if err != nil {
		return Signer{}, fmt.Errorf("verify commit signature: %w", err)
	}
	if strings.TrimSpace(sig) == "" {
		return Signer{}, &UnsignedError{Commit: h, TrustFile: t.path, Kind: t.kind}
	}
	format := signatureFormat(sig)
	untrusted := func(key, format string, f string, args ...any) error {
		return &UntrustedError{Commit: h, TrustFile: t.path, Kind: t.kind, Format: format, Key: key, Reason: fmt.Sprintf(f, args...)}
	}
	if n := strings.Count(sig, "-----BEGIN "); n > 1 {
		return Signer{}, untrusted("", format, "the commit carries %d signature blocks, not one", n)
	}
	switch format {
	case FormatSSH:
		if t.kind != FormatSSH {
			return Signer{}, untrusted(sshKeyOf(sig), format, "signed with an SSH key, but the trust file is an OpenPGP keyring")
		}
		return t.verifySSH(payload, sig, when, untrusted)
	case FormatOpenPGP:
		if t.kind != FormatOpenPGP {
			return Signer{}, untrusted(pgpKeyOf(sig), format, "signed with an OpenPGP key, but the trust file is an SSH allowed signers file")
		}
		return t.verifyPGP(payload, sig, untrusted)
	case "x509":
		return Signer{}, untrusted("", format, "X.509 (gpgsm) signatures are not supported")
	}
	return Signer{}, untrusted("", format, "the signature is of an unknown format")
}

// signedPayload reads commit h and returns what its signature covers (the
// commit object without the signature header), the signature, and the
// committer time.
func (r *Repo) signedPayload(h plumbing.Hash) ([]byte, string, time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, err := r.commit(h)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	var obj plumbing.MemoryObject
	if err := c.EncodeWithoutSignature(&obj); err != nil {
		return nil, "", time.Time{}, fmt.Errorf("commit %s: encode: %w", h, err)
	}
	rd, err := obj.Reader()
	if err != nil {
		return nil, "", time.Time{}, err
	}
	payload, err := io.ReadAll(rd)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	return payload, c.PGPSignature, c.Committer.When, nil
}

type untrustedFunc func(key, format string, f string, args ...any) error

// --- SSH ---------------------------------------------------------------

// allowedSigner is one line of an allowed-signers file.
type allowedSigner struct {
	line        int
	principals  string // comma-separated patterns
	key         ssh.PublicKey
	ca          bool   // cert-authority: key is a CA for user certificates
	namespaces  string // comma-separated patterns; "" allows all
	validAfter  time.Time
	validBefore time.Time
}

func (t *Trust) verifySSH(payload []byte, armored string, when time.Time, untrusted untrustedFunc) (Signer, error) {
	sig, err := sshsig.Unarmor([]byte(armored))
	if err != nil {
		return Signer{}, untrusted("", FormatSSH, "malformed SSH signature: %v", err)
	}
	fp := ssh.FingerprintSHA256(plainKey(sig.PublicKey))
	if sig.Namespace != sshNamespace {
		return Signer{}, untrusted(fp, FormatSSH, "the SSH signature by key %s is for namespace %q, not %q", fp, sig.Namespace, sshNamespace)
	}
	if err := sshsig.Verify(bytes.NewReader(payload), sig, sig.PublicKey, sig.HashAlgorithm, sshNamespace); err != nil {
		return Signer{}, untrusted(fp, FormatSSH, "the SSH signature by key %s does not verify: %v", fp, err)
	}
	var refused []string
	for _, s := range t.signers {
		principal, ok, why := s.accepts(sig.PublicKey, when)
		if ok {
			return Signer{Format: FormatSSH, Fingerprint: fp, Principal: principal, Line: s.line}, nil
		}
		if why != "" {
			refused = append(refused, fmt.Sprintf("%s:%d: %s", t.path, s.line, why))
		}
	}
	if len(refused) > 0 {
		return Signer{}, untrusted(fp, FormatSSH, "the SSH signature by %s key %s is valid, but the allowed signers refuse it: %s", sig.PublicKey.Type(), fp, strings.Join(refused, "; "))
	}
	return Signer{}, untrusted(fp, FormatSSH, "the SSH signature by %s key %s is valid, but the key is not in the allowed signers file", sig.PublicKey.Type(), fp)
}

// accepts says whether the line accepts a signature by key (already
// verified) made at time when. why is set when the line names the key but
// refuses it.
func (s allowedSigner) accepts(key ssh.PublicKey, when time.Time) (principal string, ok bool, why string) {
	cert, isCert := key.(*ssh.Certificate)
	if s.ca {
		if !isCert || !sameKey(cert.SignatureKey, s.key) {
			return "", false, ""
		}
	} else if !sameKey(key, s.key) {
		return "", false, ""
	}
	if s.namespaces != "" && matchPatternList(sshNamespace, s.namespaces) != 1 {
		return "", false, fmt.Sprintf("the key is not allowed to sign in namespace %q (namespaces=%q)", sshNamespace, s.namespaces)
	}
	if !s.validAfter.IsZero() && when.Before(s.validAfter) {
		return "", false, fmt.Sprintf("the key is not valid before %s (commit time %s)", s.validAfter.Format(time.RFC3339), when.Format(time.RFC3339))
	}
	if !s.validBefore.IsZero() && when.After(s.validBefore) {
		return "", false, fmt.Sprintf("the key expired at %s (commit time %s)", s.validBefore.Format(time.RFC3339), when.Format(time.RFC3339))
	}
	if !s.ca {
		return s.principals, true, ""
	}
	if cert.CertType != ssh.UserCert {
		return "", false, "the certificate is a host certificate, not a user certificate"
	}
	var matched []string
	var firstErr error
	checker := ssh.CertChecker{Clock: func() time.Time { return when }}
	for _, p := range cert.ValidPrincipals {
		if matchPatternList(p, s.principals) != 1 {
			continue
		}
		if err := checker.CheckCert(p, cert); err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		matched = append(matched, p)
	}
	switch {
	case len(matched) > 0:
		return strings.Join(matched, ","), true, ""
	case firstErr != nil:
		return "", false, fmt.Sprintf("certificate %q refused at commit time %s: %v", cert.KeyId, when.Format(time.RFC3339), firstErr)
	}
	return "", false, fmt.Sprintf("certificate %q principals %q match none of %q", cert.KeyId, cert.ValidPrincipals, s.principals)
}

func sameKey(a, b ssh.PublicKey) bool { return bytes.Equal(a.Marshal(), b.Marshal()) }

// plainKey is the key a certificate certifies, else key itself.
func plainKey(key ssh.PublicKey) ssh.PublicKey {
	if c, ok := key.(*ssh.Certificate); ok {
		return c.Key
	}
	return key
}

// sshKeyOf is the fingerprint of the key an SSH signature names, if any.
func sshKeyOf(armored string) string {
	sig, err := sshsig.Unarmor([]byte(armored))
	if err != nil {
		return ""
	}
	return ssh.FingerprintSHA256(plainKey(sig.PublicKey))
}

// keyTypeDSA is refused: OpenSSH no longer makes or accepts DSA keys.
const keyTypeDSA = "ssh-dss"

// sshKeyTypes are the key types accepted in an allowed-signers file.
var sshKeyTypes = map[string]bool{
	ssh.KeyAlgoED25519:    true,
	ssh.KeyAlgoSKED25519:  true,
	ssh.KeyAlgoECDSA256:   true,
	ssh.KeyAlgoECDSA384:   true,
	ssh.KeyAlgoECDSA521:   true,
	ssh.KeyAlgoSKECDSA256: true,
	ssh.KeyAlgoRSA:        true,
}

// looksLikeKeyType tells a key type from options in a line.
func looksLikeKeyType(s string) bool {
	return sshKeyTypes[s] || s == keyTypeDSA || strings.HasSuffix(s, "-cert-v01@openssh.com")
}

func parseAllowedSigners(path, text string) ([]allowedSigner, error) {
	var out []allowedSigner
	for i, line := range strings.Split(text, "\n") {
		n := i + 1
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseAllowedSigner(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		s.line = n
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no keys: not an armored OpenPGP public keyring, and an allowed signers file without entries (lines `principals [options] keytype base64-key`)", path)
	}
	return out, nil
}

// parseAllowedSigner parses `principals [options] keytype base64-key
// [comment]`, as OpenSSH's sshsig.c does.
func parseAllowedSigner(line string) (allowedSigner, error) {
	var s allowedSigner
	principals, rest, err := nextField(line)
	if err != nil {
		return s, fmt.Errorf("principals: %w", err)
	}
	if looksLikeKeyType(principals) {
		return s, fmt.Errorf("the line starts with key type %q: an allowed signers line starts with the signer's principals (e.g. `alice@example.net %s AAAA...`)", principals, principals)
	}
	if principals == "" {
		return s, errors.New("empty principals")
	}
	s.principals = principals
	if rest == "" {
		return s, errors.New("missing key after the principals")
	}
	first, _, _ := strings.Cut(rest, " ")
	first, _, _ = strings.Cut(first, "\t")
	if !looksLikeKeyType(first) {
		opts, after, err := nextField(rest)
		if err != nil {
			return s, fmt.Errorf("options: %w", err)
		}
		if err := s.parseOptions(opts); err != nil {
			return s, err
		}
		if after == "" {
			return s, errors.New("missing key after the options")
		}
		rest = after
	}
	f := strings.Fields(rest)
	if len(f) < 2 {
		return s, fmt.Errorf("key type %q without the base64 key", f[0])
	}
	typ, b64 := f[0], f[1]
	switch {
	case typ == keyTypeDSA:
		return s, errors.New("DSA keys (ssh-dss) are not supported")
	case strings.HasSuffix(typ, "-cert-v01@openssh.com"):
		return s, fmt.Errorf("key type %q is a certificate: list its CA key with the cert-authority option instead", typ)
	case !sshKeyTypes[typ]:
		return s, fmt.Errorf("unknown key type %q (want one of ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com)", typ)
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(typ + " " + b64))
	if err != nil {
		return s, fmt.Errorf("invalid %s key: %v", typ, err)
	}
	if key.Type() != typ {
		return s, fmt.Errorf("key type %q does not match the key, which is %q", typ, key.Type())
	}
	s.key = key
	return s, nil
}

// nextField splits off the first whitespace-delimited field of s; a field
// may hold double-quoted parts with spaces in them.
func nextField(s string) (field, rest string, err error) {
	quoted := false
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			quoted = !quoted
		} else if !quoted && (c == ' ' || c == '\t') {
			break
		}
	}
	if quoted {
		return "", "", errors.New("unterminated quote")
	}
	field = s[:i]
	if len(field) >= 2 && field[0] == '"' && field[len(field)-1] == '"' && !strings.Contains(field[1:len(field)-1], `"`) {
		field = field[1 : len(field)-1]
	}
	return field, strings.TrimLeft(s[i:], " \t"), nil
}

// parseOptions parses a comma-separated option list.
func (s *allowedSigner) parseOptions(opts string) error {
	var list []string
	start, quoted := 0, false
	for i := 0; i <= len(opts); i++ {
		switch {
		case i == len(opts) || opts[i] == ',' && !quoted:
			list = append(list, opts[start:i])
			start = i + 1
		case opts[i] == '"':
			quoted = !quoted
		}
	}
	seen := map[string]bool{}
	for _, opt := range list {
		if opt == "" {
			return fmt.Errorf("options %q: empty option", opts)
		}
		name, value, hasValue := strings.Cut(opt, "=")
		name = strings.ToLower(name)
		if seen[name] {
			return fmt.Errorf("option %q given twice", name)
		}
		seen[name] = true
		if name == "cert-authority" {
			if hasValue {
				return errors.New("option cert-authority takes no value")
			}
			s.ca = true
			continue
		}
		if !hasValue {
			return fmt.Errorf("unsupported option %q (want cert-authority, namespaces=\"...\", valid-after=\"...\" or valid-before=\"...\")", opt)
		}
		if len(value) < 2 || value[0] != '"' || value[len(value)-1] != '"' {
			return fmt.Errorf("option %s: the value must be in double quotes", name)
		}
		value = value[1 : len(value)-1]
		var err error
		switch name {
		case "namespaces":
			if value == "" {
				return errors.New("option namespaces: empty")
			}
			s.namespaces = value
		case "valid-after":
			s.validAfter, err = parseSSHTime(value)
		case "valid-before":
			s.validBefore, err = parseSSHTime(value)
		default:
			return fmt.Errorf("unsupported option %q (want cert-authority, namespaces=\"...\", valid-after=\"...\" or valid-before=\"...\")", name)
		}
		if err != nil {
			return fmt.Errorf("option %s: %w", name, err)
		}
	}
	if !s.validAfter.IsZero() && !s.validBefore.IsZero() && !s.validAfter.Before(s.validBefore) {
		return errors.New("valid-after is not before valid-before")
	}
	return nil
}

// parseSSHTime parses OpenSSH's YYYYMMDD[HHMM[SS]] time, in local time or,
// with a Z suffix, UTC.
func parseSSHTime(v string) (time.Time, error) {
	loc := time.Local
	if s, ok := strings.CutSuffix(v, "Z"); ok {
		v, loc = s, time.UTC
	}
	layouts := map[int]string{8: "20060102", 12: "200601021504", 14: "20060102150405"}
	layout, ok := layouts[len(v)]
	if ok {
		for _, c := range v {
			if c < '0' || c > '9' {
				ok = false
			}
		}
	}
	if !ok {
		return time.Time{}, fmt.Errorf("invalid time %q (want YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, with a Z suffix for UTC)", v)
	}
	t, err := time.ParseInLocation(layout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("invalid time %q: %v", v, err)
	}
	return t, nil
}

// matchPatternList matches s against a comma-separated list of patterns
// (with * and ?; a leading ! negates), as OpenSSH's match_pattern_list: 1
// for a match, -1 for a negated match, 0 for none.
func matchPatternList(s, list string) int {
	got := 0
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if matchPattern(s, p) {
			if neg {
				return -1
			}
			got = 1
		}
	}
	return got
}

// matchPattern matches s against a glob with * and ?.
func matchPattern(s, p string) bool {
	for p != "" {
		switch p[0] {
		case '*':
			for p != "" && p[0] == '*' {
				p = p[1:]
			}
			if p == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if matchPattern(s[i:], p) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
			s, p = s[1:], p[1:]
		default:
			if s == "" || s[0] != p[0] {
				return false
			}
			s, p = s[1:], p[1:]
		}
	}
	return s == ""
}

// --- OpenPGP -----------------------------------------------------------

func (t *Trust) verifyPGP(payload []byte, armored string, untrusted untrustedFunc) (Signer, error) {
	key := pgpKeyOf(armored)
	e, err := openpgp.CheckArmoredDetachedSignature(t.keyring, bytes.NewReader(payload), strings.NewReader(armored), nil)
	if err != nil {
		if errors.Is(err, pgperrors.ErrUnknownIssuer) {
			return Signer{}, untrusted(key, FormatOpenPGP, "the OpenPGP signature is by key %s, which is not in the keyring (or cannot sign)", orUnknown(key))
		}
		return Signer{}, untrusted(key, FormatOpenPGP, "the OpenPGP signature by key %s does not verify: %v", orUnknown(key), err)
	}
	s := Signer{Format: FormatOpenPGP, Fingerprint: fmt.Sprintf("%X", e.PrimaryKey.Fingerprint)}
	if id := e.PrimaryIdentity(); id != nil {
		s.Identity = id.Name
	}
	return s, nil
}

func orUnknown(s string) string {
	if s == "" {
		return "(unnamed)"
	}
	return s
}

// pgpKeyOf names the key an armored OpenPGP signature says it is by: the
// issuer fingerprint, else key id.
func pgpKeyOf(armored string) string {
	block, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		return ""
	}
	p, err := packet.Read(block.Body)
	if err != nil {
		return ""
	}
	sig, ok := p.(*packet.Signature)
	if !ok {
		return ""
	}
	if len(sig.IssuerFingerprint) > 0 {
		return fmt.Sprintf("%X", sig.IssuerFingerprint)
	}
	if sig.IssuerKeyId != nil {
		return fmt.Sprintf("%016X", *sig.IssuerKeyId)
	}
	return ""
}

const (
	pgpBegin = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
	pgpEnd   = "-----END PGP PUBLIC KEY BLOCK-----"
)

// parseKeyring reads one or more armored public key blocks.
func parseKeyring(path, text string) (openpgp.EntityList, error) {
	var keyring openpgp.EntityList
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		switch {
		case line == "":
			continue
		case line == pgpBegin:
		case strings.HasPrefix(line, "-----BEGIN PGP PRIVATE KEY BLOCK-----"):
			return nil, fmt.Errorf("%s:%d: a private key block: give the public key (gpg --armor --export KEY)", path, i+1)
		case strings.HasPrefix(line, "-----BEGIN "):
			return nil, fmt.Errorf("%s:%d: %s: want %s", path, i+1, line, pgpBegin)
		default:
			return nil, fmt.Errorf("%s:%d: unexpected text outside a %s ... %s block", path, i+1, pgpBegin, pgpEnd)
		}
		start := i
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != pgpEnd; i++ {
		}
		if i == len(lines) {
			return nil, fmt.Errorf("%s:%d: key block without its %s line", path, start+1, pgpEnd)
		}
		block := strings.Join(lines[start:i+1], "\n") + "\n"
		entities, err := openpgp.ReadArmoredKeyRing(strings.NewReader(block))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: invalid OpenPGP public key block: %v", path, start+1, err)
		}
		for _, e := range entities {
			if e.PrivateKey != nil {
				return nil, fmt.Errorf("%s:%d: the block holds a private key: give the public key (gpg --armor --export KEY)", path, start+1)
			}
		}
		keyring = append(keyring, entities...)
	}
	if len(keyring) == 0 {
		return nil, fmt.Errorf("%s: no OpenPGP keys", path)
	}
	return keyring, nil
}
