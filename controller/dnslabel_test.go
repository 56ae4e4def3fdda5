package controller

import (
	"regexp"
	"strings"
	"testing"
)

// dnsLabelSpec is what dnsLabel must equal.
var dnsLabelSpec = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

var dnsLabelExamples = []string{"", "a", "0", "-", "a-", "-a", "a-b", "a--b", "A", "aB", "a.b", "a_b", "a b", "*", "é", "\xff", "a\n",
	strings.Repeat("a", 62), strings.Repeat("a", 63), strings.Repeat("a", 64), "a" + strings.Repeat("-", 61) + "a", "a" + strings.Repeat("-", 62) + "a"}

func checkDNSLabel(t *testing.T, l string) {
	t.Helper()
	if got, want := dnsLabel(l), dnsLabelSpec.MatchString(l); got != want {
		t.Errorf("dnsLabel(%q) = %v, its expression says %v", l, got, want)
	}
}

func TestDNSLabelEqualsItsExpression(t *testing.T) {
	for _, l := range dnsLabelExamples {
		checkDNSLabel(t, l)
	}
	// Every string of up to four bytes over an alphabet that reaches each
	// class, its neighbours and a non-ASCII byte.
	const alphabet = "az09-A.*_ \xff"
	var walk func(prefix string)
	walk = func(prefix string) {
		checkDNSLabel(t, prefix)
		if len(prefix) < 4 && !t.Failed() {
			for i := 0; i < len(alphabet); i++ {
				walk(prefix + alphabet[i:i+1])
			}
		}
	}
	walk("")
}

func FuzzDNSLabelEqualsItsExpression(f *testing.F) {
	for _, l := range dnsLabelExamples {
		f.Add(l)
	}
	f.Fuzz(checkDNSLabel)
}
