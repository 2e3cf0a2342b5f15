package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anneal-dev/anneal/schema"
)

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TSIG": "from-env"}
	r := Resolver{Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	tests := []struct {
		ref     string
		want    string
		wantErr string
	}{
		{"env:TSIG", "from-env", ""},
		{"env:MISSING", "", "MISSING is not set"},
		{"file:" + file, "from-file", ""},
		{"file:" + empty, "", "is empty"},
		{"file:" + filepath.Join(dir, "nope"), "", "no such file"},
		{"hunter2", "", "want env:NAME or file:PATH"},
	}
	for _, tc := range tests {
		got, err := r.Resolve(schema.SecretRef(tc.ref))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.ref, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("%s: error prints the value: %v", tc.ref, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.ref, got, err, tc.want)
		}
	}
}
