package nginxconf

import (
	"regexp"
	"strings"
	"testing"
)

// tokenSpecs are the regular expressions the checks of tokens.go are equal
// to: the specification, kept here so the loops can be checked against it.
var tokenSpecs = []struct {
	name  string
	check func(string) bool
	spec  *regexp.Regexp
}{
	{"safeToken", safeToken, regexp.MustCompile(`^[A-Za-z0-9._~/:@%+=,\[\]-]+$`)},
	{"hostToken", hostToken, regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)},
	{"wildHost", wildHost, regexp.MustCompile(`^(\*\.[a-z0-9]([a-z0-9.-]*[a-z0-9])?|[a-z0-9]([a-z0-9.-]*[a-z0-9])?\.\*)$`)},
	{"sizeValue", sizeValue, regexp.MustCompile(`^[0-9]{1,10}[kmg]?$`)},
	{"timeValue", timeValue, regexp.MustCompile(`^[0-9]{1,10}(ms|s|m|h)?$`)},
	{"hstsValue", hstsValue, regexp.MustCompile(`^max-age=[0-9]{1,10}(; includeSubDomains)?(; preload)?$`)},
}

// tokenExamples are edge cases of every check: lengths at and past the
// bounds, each class boundary, units and suffixes out of order, bytes an
// nginx config must never see, and non-ASCII.
var tokenExamples = []string{
	"", "a", "A", "0", "-", ".", "*", "a.b", "a-b", "-a", "a-", ".a", "a.", "a..b", "A.b", "a_b",
	"*.a", "*.", "*.*", "a.*", "*a.b", "a.b*", "*.a.*", "**.a", "*.-a", "a-.*", "*.A",
	"/var/www/acme", "/c/[x]:@%+=,~.pem", "10.0.0.1:80", "[fd00::1]:80", "a b", "a;b", "a{", "a}", "$host", "#x", "a\"", "a'", "a\\", "a\nb", "a\x00",
	"0", "1234567890", "12345678901", "10m", "10M", "1g", "1kk", "k", "ms", "5ms", "5sm", "5mss", "5h", "5d", "5 s", "05s", "1234567890ms", "12345678901s",
	"max-age=0", "max-age=", "max-age=1; includeSubDomains", "max-age=1; preload", "max-age=1; includeSubDomains; preload",
	"max-age=1; preload; includeSubDomains", "max-age=1; preload; preload", "max-age=1;preload", "max-age=12345678901", "Max-age=1", " max-age=1",
	"max-age=1; includeSubDomains; includeSubDomains", "max-age=1234567890; includeSubDomains; preload",
	"bücher.example", "é", "\xff", "a\xffb", "ſ", "K", strings.Repeat("a", 300),
}

func checkTokens(t *testing.T, v string) {
	t.Helper()
	for _, tc := range tokenSpecs {
		if got, want := tc.check(v), tc.spec.MatchString(v); got != want {
			t.Errorf("%s(%q) = %v, its expression says %v", tc.name, v, got, want)
		}
	}
}

func TestTokenChecksEqualTheirExpressions(t *testing.T) {
	for _, v := range tokenExamples {
		checkTokens(t, v)
	}
	// Every string of up to four bytes over an alphabet that reaches every
	// branch of every check (each class, its neighbours, the unit letters,
	// the wildcard and a non-ASCII byte).
	const alphabet = "a0zA9.-*_/:;{ $mskgh\xff"
	var walk func(prefix string)
	walk = func(prefix string) {
		checkTokens(t, prefix)
		if len(prefix) == 4 || t.Failed() {
			return
		}
		for i := 0; i < len(alphabet); i++ {
			walk(prefix + alphabet[i:i+1])
		}
	}
	walk("")
	// Every example with a prefix or suffix that brings it near a bound.
	for _, v := range tokenExamples {
		for _, affix := range []string{"max-age=", "*.", ".*", "1", "; preload", "; includeSubDomains", "ms", "-"} {
			checkTokens(t, affix+v)
			checkTokens(t, v+affix)
		}
	}
}

func FuzzTokenChecksEqualTheirExpressions(f *testing.F) {
	for _, v := range tokenExamples {
		f.Add(v)
	}
	f.Fuzz(checkTokens)
}
