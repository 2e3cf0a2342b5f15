package boot

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token errors, tested with errors.Is. Their messages never contain the
// token.
var (
	ErrMalformedToken = errors.New("malformed token")
	ErrBadSignature   = errors.New("bad token signature")
	ErrTokenExpired   = errors.New("token expired")
	ErrNoKey          = errors.New("no token key configured")
)

// maxTokenLen bounds the work done on a presented token.
const maxTokenLen = 1024

// InstallClaims is what an install token vouches for: one install of one
// build on one node, valid until Expires and only while the node's record
// still holds Nonce.
type InstallClaims struct {
	Node    string    `json:"node"`
	Build   string    `json:"build"`
	Nonce   string    `json:"nonce"`
	Expires time.Time `json:"expires"`
}

// tokenPayload is the signed part of an install token; keys are short
// because the token travels on the kernel command line.
type tokenPayload struct {
	Node    string `json:"n"`
	Build   string `json:"b"`
	Nonce   string `json:"o"`
	Expires int64  `json:"e"` // unix seconds
}

var b64 = base64.RawURLEncoding

// MintInstallToken returns base64url(payload) "." base64url(HMAC-SHA256(key,
// payload)), the payload carrying node, build id, nonce and expiry (unix
// seconds). It panics on an empty key: a token signed with no key would be
// forgeable by anyone.
func MintInstallToken(key []byte, node, build, nonce string, expires time.Time) string {
	if len(key) == 0 {
		panic("boot: MintInstallToken with an empty key")
	}
	payload, err := json.Marshal(tokenPayload{Node: node, Build: build, Nonce: nonce, Expires: expires.Unix()})
	if err != nil {
		panic("boot: token payload does not marshal: " + err.Error()) // strings and an int always marshal
	}
	return b64.EncodeToString(payload) + "." + b64.EncodeToString(sign(key, payload))
}

// CheckInstallToken verifies an install token's signature (in constant
// time) and expiry and returns its claims. Errors wrap ErrMalformedToken,
// ErrBadSignature, ErrTokenExpired or ErrNoKey. It does not check the claims
// against a node record: the caller compares node, nonce and build.
func CheckInstallToken(key []byte, token string, now time.Time) (InstallClaims, error) {
	if len(key) == 0 {
		return InstallClaims{}, fmt.Errorf("install token: %w", ErrNoKey)
	}
	if len(token) > maxTokenLen {
		return InstallClaims{}, fmt.Errorf("install token: %w: longer than %d bytes", ErrMalformedToken, maxTokenLen)
	}
	enc, encSig, ok := strings.Cut(token, ".")
	if !ok || enc == "" || encSig == "" || strings.Contains(encSig, ".") {
		return InstallClaims{}, fmt.Errorf("install token: %w: want payload.signature", ErrMalformedToken)
	}
	payload, err := b64.DecodeString(enc)
	if err != nil {
		return InstallClaims{}, fmt.Errorf("install token: %w: payload is not base64url", ErrMalformedToken)
	}
	sig, err := b64.DecodeString(encSig)
	if err != nil {
		return InstallClaims{}, fmt.Errorf("install token: %w: signature is not base64url", ErrMalformedToken)
	}
	if !hmac.Equal(sig, sign(key, payload)) {
		return InstallClaims{}, fmt.Errorf("install token: %w", ErrBadSignature)
	}
	var p tokenPayload
	if err := json.Unmarshal(payload, &p); err != nil {
		return InstallClaims{}, fmt.Errorf("install token: %w: payload is not JSON", ErrMalformedToken)
	}
	if p.Node == "" || p.Build == "" || p.Nonce == "" {
		return InstallClaims{}, fmt.Errorf("install token: %w: node, build or nonce missing", ErrMalformedToken)
	}
	c := InstallClaims{Node: p.Node, Build: p.Build, Nonce: p.Nonce, Expires: time.Unix(p.Expires, 0).UTC()}
	if !now.Before(c.Expires) {
		return InstallClaims{}, fmt.Errorf("install token for %s: %w at %s", c.Node, ErrTokenExpired, c.Expires.Format(time.RFC3339))
	}
	return c, nil
}

// AgentToken is the bearer token of node's `anneal agent`: hex
// HMAC-SHA256(key, "agent\x00"+node+"\x00"+gen), then "-" and gen, gen
// being the token generation in the node's record
// (node.Record.AgentGen). Every arming draws a new generation, so
// each install hands its agent a new token and the old one dies; a revoke
// draws one too. An empty gen gives the token of anneal before
// generations (the bare HMAC over "agent\x00"+node), accepted only while
// the record has no generation. Changing the key revokes every agent
// token.
//
// The token carries its generation so that a state that lost it (a lost
// or fresh state file, with the netboot key kept) can still hear from the
// fleet: the key vouches for the token, and the record adopts its
// generation (checkAgentToken).
func AgentToken(key []byte, node, gen string) string {
	if len(key) == 0 {
		panic("boot: AgentToken with an empty key")
	}
	mac := agentMAC(key, node, gen)
	if gen == "" {
		return mac
	}
	return mac + "-" + gen
}

func agentMAC(key []byte, node, gen string) string {
	msg := "agent\x00" + node
	if gen != "" {
		msg += "\x00" + gen
	}
	return hex.EncodeToString(sign(key, []byte(msg)))
}

// agentMACLen is the length of an agent token's HMAC in hex.
const agentMACLen = 2 * sha256.Size

// checkAgentToken checks a presented agent token against node's record
// generation gen, in constant time. A token of another generation is
// refused, except when the record has none and the token has one: the
// record was lost (or never written) while the node kept the token an
// install gave it. The key vouches for it, and adopt is the generation the
// record takes from now on (a revoke or the next arming replaces it).
func checkAgentToken(key []byte, node, gen, got string) (ok bool, adopt string) {
	if len(key) == 0 || got == "" {
		return false, ""
	}
	mac, tgen := got, ""
	if len(got) > agentMACLen+1 && got[agentMACLen] == '-' {
		mac, tgen = got[:agentMACLen], got[agentMACLen+1:]
	}
	if subtle.ConstantTimeCompare([]byte(agentMAC(key, node, tgen)), []byte(mac)) != 1 {
		return false, ""
	}
	switch {
	case tgen == "":
		return gen == "", "" // a token from before generations
	case gen == "":
		return true, tgen
	default:
		return subtle.ConstantTimeCompare([]byte(tgen), []byte(gen)) == 1, ""
	}
}

func sign(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}
