package boot

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestInstallToken(t *testing.T) {
	exp := t0.Add(time.Hour)
	good := MintInstallToken(testKey, "e1n01", "0123456789abcdef", "n0nce", exp)
	payload, sig, _ := strings.Cut(good, ".")
	other := MintInstallToken([]byte("another-key-0123456789abcdef"), "e1n01", "0123456789abcdef", "n0nce", exp)
	_, otherSig, _ := strings.Cut(other, ".")
	tampered := MintInstallToken(testKey, "e1n02", "0123456789abcdef", "n0nce", exp)
	tamperedPayload, _, _ := strings.Cut(tampered, ".")

	tests := []struct {
		name    string
		key     []byte
		token   string
		now     time.Time
		wantErr error
	}{
		{"good", testKey, good, t0, nil},
		{"good one second before expiry", testKey, good, exp.Add(-time.Second), nil},
		{"expired at expiry", testKey, good, exp, ErrTokenExpired},
		{"expired later", testKey, good, exp.Add(time.Hour), ErrTokenExpired},
		{"signed with another key", testKey, other, t0, ErrBadSignature},
		{"checked with another key", []byte("another-key-0123456789abcdef"), good, t0, ErrBadSignature},
		{"payload swapped", testKey, tamperedPayload + "." + sig, t0, ErrBadSignature},
		{"signature swapped", testKey, payload + "." + otherSig, t0, ErrBadSignature},
		{"signature truncated", testKey, payload + "." + sig[:8], t0, ErrBadSignature},
		{"empty", testKey, "", t0, ErrMalformedToken},
		{"no dot", testKey, payload, t0, ErrMalformedToken},
		{"three parts", testKey, good + ".x", t0, ErrMalformedToken},
		{"not base64", testKey, "!!!." + sig, t0, ErrMalformedToken},
		{"too long", testKey, strings.Repeat("a", maxTokenLen) + "." + sig, t0, ErrMalformedToken},
		{"signed garbage", testKey, b64.EncodeToString([]byte("nope")) + "." + b64.EncodeToString(sign(testKey, []byte("nope"))), t0, ErrMalformedToken},
		{"no key", nil, good, t0, ErrNoKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CheckInstallToken(tc.key, tc.token, tc.now)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				if tc.token != "" && strings.Contains(err.Error(), tc.token) {
					t.Errorf("error %q contains the token", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := InstallClaims{Node: "e1n01", Build: "0123456789abcdef", Nonce: "n0nce", Expires: exp}
			if c != want {
				t.Errorf("claims = %+v, want %+v", c, want)
			}
		})
	}
}

func TestInstallTokenIsURLAndCmdlineSafe(t *testing.T) {
	tok := MintInstallToken(testKey, "e1n01", "0123456789abcdef", "a-nonce/with+odd=chars", t0)
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$`).MatchString(tok) {
		t.Errorf("token %q is not base64url.base64url", tok)
	}
}

func TestAgentToken(t *testing.T) {
	a, b := AgentToken(testKey, "e1n01", "g1"), AgentToken(testKey, "e1n02", "g1")
	legacy := AgentToken(testKey, "e1n01", "")
	tests := []struct {
		name           string
		node, gen, got string
		want           bool
	}{
		{"own token", "e1n01", "g1", a, true},
		{"own token, no generation", "e1n01", "", legacy, true},
		{"a record that lost its generation", "e1n01", "", a, true},
		{"forged generation", "e1n01", "", legacy + "-g9", false},
		{"generation swapped", "e1n01", "g2", a[:64] + "-g2", false},
		{"another node's token", "e1n01", "g1", b, false},
		{"an older generation", "e1n01", "g2", a, false},
		{"no generation, once there is one", "e1n01", "g1", legacy, false},
		{"upper case", "e1n01", "g1", strings.ToUpper(a), false},
		{"empty", "e1n01", "g1", "", false},
		{"other key", "e1n01", "g1", AgentToken([]byte("another-key-0123456789abcdef"), "e1n01", "g1"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := checkAgentToken(testKey, tc.node, tc.gen, tc.got); got != tc.want {
				t.Errorf("checkAgentToken = %v, want %v", got, tc.want)
			}
		})
	}
	if len(legacy) != 64 || a != legacy[:0]+a[:64]+"-g1" || a == b || a[:64] == legacy || a != AgentToken(testKey, "e1n01", "g1") {
		t.Errorf("agent tokens %q, %q: want distinct, stable, 64 hex digits then -GEN", a, b)
	}
	if _, adopt := checkAgentToken(testKey, "e1n01", "", a); adopt != "g1" {
		t.Errorf("a record without generation adopts %q from the token, want g1", adopt)
	}
	if _, adopt := checkAgentToken(testKey, "e1n01", "g1", a); adopt != "" {
		t.Errorf("a record with its generation adopts %q", adopt)
	}
	if strings.Contains(a, ".") {
		t.Error("an agent token must not look like an install token")
	}
}
