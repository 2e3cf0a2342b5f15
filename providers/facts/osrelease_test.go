package facts

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseOSRelease(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]string
	}{
		{name: "unquoted", in: "ID=fedora\nVERSION_ID=40\n", want: map[string]string{"ID": "fedora", "VERSION_ID": "40"}},
		{name: "double quotes", in: `PRETTY_NAME="Fedora Linux 40 (Server Edition)"`, want: map[string]string{"PRETTY_NAME": "Fedora Linux 40 (Server Edition)"}},
		{name: "single quotes are literal", in: `NAME='a \$b "c"'`, want: map[string]string{"NAME": `a \$b "c"`}},
		{name: "escapes in double quotes", in: `X="\"q\" \$HOME \` + "`" + `cmd\` + "`" + ` \\ \n"`, want: map[string]string{"X": "\"q\" $HOME `cmd` \\ \\n"}},
		{name: "escapes unquoted", in: `X=a\ b\$c`, want: map[string]string{"X": "a b$c"}},
		{name: "unquoted with spaces kept", in: "NAME=Foo Linux", want: map[string]string{"NAME": "Foo Linux"}},
		{name: "empty values", in: "A=\nB=\"\"\nC=''", want: map[string]string{"A": "", "B": "", "C": ""}},
		{name: "equals in value", in: `HOME_URL="https://example.org/?a=b"`, want: map[string]string{"HOME_URL": "https://example.org/?a=b"}},
		{name: "comments, blanks and indentation", in: "# c\n\n  ID=debian  \n\t# x=y\n", want: map[string]string{"ID": "debian"}},
		{name: "invalid lines skipped", in: "not an assignment\n1X=a\nBAD KEY=a\nU=\"unterminated\nT=\"a\"b\nOK=1", want: map[string]string{"OK": "1"}},
		{name: "last assignment wins", in: "ID=a\nID=b", want: map[string]string{"ID": "b"}},
		{name: "CRLF", in: "ID=debian\r\nVERSION_ID=\"12\"\r\n", want: map[string]string{"ID": "debian", "VERSION_ID": "12"}},
		{name: "empty file", in: "", want: map[string]string{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseOSRelease(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
