package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultHSTS is sent on HTTPS responses unless proxy.hsts or BERTH_HSTS
// says otherwise: a year, without includeSubDomains, which could break
// sibling hosts berth does not serve.
const DefaultHSTS = "max-age=31536000"

// Defaults are the settings that give a label its value when the label is
// not set (label wins). The zero value is the documented defaults: no body
// limit, no timeouts rendered, HSTS DefaultHSTS, snippets refused.
type Defaults struct {
	MaxBodySize                              string // BERTH_MAX_BODY_SIZE; "" is "0"
	ConnectTimeout, ReadTimeout, SendTimeout string // BERTH_PROXY_*_TIMEOUT; "" not rendered
	HSTS                                     string // BERTH_HSTS; "" is DefaultHSTS, "off" none
	Snippets                                 bool   // BERTH_SNIPPETS=on
	ACMEChallenge                            string // BERTH_ACME_CHALLENGE; "" is ChallengeHTTP01
}

// The ACME challenges proxy.acme-challenge and BERTH_ACME_CHALLENGE name.
const (
	ChallengeHTTP01 = "http-01"
	ChallengeDNS01  = "dns-01"
)

// Validate checks and normalises the settings with the labels' own parsers.
func (d Defaults) Validate() (Defaults, error) {
	var err error
	check := func(setting string, p *string, parse func(string) (string, error)) {
		if *p == "" || err != nil {
			return
		}
		if *p, err = parse(*p); err != nil {
			err = fmt.Errorf("%s: %w", setting, err)
		}
	}
	check("BERTH_MAX_BODY_SIZE", &d.MaxBodySize, ParseSize)
	check("BERTH_PROXY_CONNECT_TIMEOUT", &d.ConnectTimeout, ParseTimeout)
	check("BERTH_PROXY_READ_TIMEOUT", &d.ReadTimeout, ParseTimeout)
	check("BERTH_PROXY_SEND_TIMEOUT", &d.SendTimeout, ParseTimeout)
	check("BERTH_HSTS", &d.HSTS, ParseHSTS)
	check("BERTH_ACME_CHALLENGE", &d.ACMEChallenge, func(v string) (string, error) { return oneOf(v, ChallengeHTTP01, ChallengeDNS01) })
	return d, err
}

var profileName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$`)

// parseProfile reads an ACME profile name (RFC draft "profiles": a short
// token such as classic, tlsserver or shortlived).
func parseProfile(v string) (string, error) {
	p := strings.TrimSpace(v)
	if !profileName.MatchString(p) {
		return "", fmt.Errorf("must be an ACME profile name: 1-64 letters, digits, dots, dashes or underscores (e.g. shortlived)")
	}
	return p, nil
}

func parsePort(v string) (int, error) {
	p, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || p < 1 || p > 65535 || strings.ContainsAny(v, "+-") {
		return 0, fmt.Errorf("must be a port number from 1 to 65535")
	}
	return p, nil
}

var pathChars = regexp.MustCompile(`^[A-Za-z0-9._~/-]+$`)

// challengePrefix is served from the webroot on every host; no service may claim it.
const challengePrefix = "/.well-known/acme-challenge"

func parsePath(v string) (string, error) {
	p := strings.TrimSpace(v)
	switch {
	case !strings.HasPrefix(p, "/"):
		return "", fmt.Errorf("must start with /")
	case len(p) > 256:
		return "", fmt.Errorf("longer than 256 characters")
	case !pathChars.MatchString(p):
		return "", fmt.Errorf("may contain only letters, digits and . _ ~ / -")
	case strings.Contains(p, "//"):
		return "", fmt.Errorf("must not contain an empty segment (//)")
	}
	if p != "/" {
		p = strings.TrimSuffix(p, "/")
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("must not contain . or .. segments")
		}
	}
	if p == challengePrefix || strings.HasPrefix(p, challengePrefix+"/") {
		return "", fmt.Errorf("%s is reserved for ACME challenges", challengePrefix)
	}
	return p, nil
}

var networkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)

func parseNetwork(v string) (string, error) {
	n := strings.TrimSpace(v)
	if !networkName.MatchString(n) {
		return "", fmt.Errorf("not a Docker network name")
	}
	return n, nil
}

func oneOf(v string, allowed ...string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	if !slices.Contains(allowed, s) {
		return "", fmt.Errorf("must be one of %s", strings.Join(allowed, ", "))
	}
	return s, nil
}

func onOff(v string) (bool, error) {
	s, err := oneOf(v, "on", "off")
	return s == "on", err
}

var sizeValue = regexp.MustCompile(`^([0-9]{1,9})([kmg]?)$`)

// ParseSize reads an nginx size: digits with an optional k, m or g
// (any case); "0" is no limit. Returns the lower-case form.
func ParseSize(v string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	m := sizeValue.FindStringSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("must be an nginx size: digits with an optional k, m or g (10m, 1g; 0 = no limit)")
	}
	n, _ := strconv.Atoi(m[1])
	if m[2] == "g" && n > 1024 {
		return "", fmt.Errorf("larger than 1024g")
	}
	return strconv.Itoa(n) + m[2], nil
}

var durationValue = regexp.MustCompile(`^([0-9]{1,7})(ms|s|m|h)?$`)

// maxTimeout bounds proxy timeouts: beyond a day a hung backend is held
// for no one's benefit.
const maxTimeout = 24 * time.Hour

// ParseTimeout reads an nginx duration with one unit (ms, s, m, h; bare
// digits are seconds), from 1ms to 24h, and returns its nginx form.
func ParseTimeout(v string) (string, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	m := durationValue.FindStringSubmatch(s)
	if m == nil {
		return "", fmt.Errorf("must be a duration with one unit: ms, s, m or h (5s, 10m, 1h)")
	}
	unit := or(m[2], "s")
	n, _ := strconv.Atoi(m[1])
	d, err := time.ParseDuration(strconv.Itoa(n) + unit)
	if err != nil || d < time.Millisecond || d > maxTimeout {
		return "", fmt.Errorf("must be from 1ms to 24h")
	}
	return strconv.Itoa(n) + unit, nil
}

var maxAge = regexp.MustCompile(`^max-age=([0-9]{1,10})$`)

// ParseHSTS reads "off" or "max-age=N" with optional includeSubDomains and
// preload (any case, ";"-separated), and returns "off" or the canonical value.
func ParseHSTS(v string) (string, error) {
	s := strings.TrimSpace(v)
	if strings.EqualFold(s, "off") {
		return "off", nil
	}
	parts := strings.Split(s, ";")
	m := maxAge.FindStringSubmatch(strings.ToLower(strings.TrimSpace(parts[0])))
	if m == nil {
		return "", fmt.Errorf("must be off or max-age=N with optional ; includeSubDomains and ; preload")
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	if n > 2*31536000 {
		return "", fmt.Errorf("max-age above two years (63072000)")
	}
	out := []string{"max-age=" + strconv.FormatInt(n, 10)}
	for _, p := range parts[1:] {
		var d string
		switch strings.ToLower(strings.TrimSpace(p)) {
		case "includesubdomains":
			d = "includeSubDomains"
		case "preload":
			d = "preload"
		default:
			return "", fmt.Errorf("%q: only includeSubDomains and preload may follow max-age", strings.TrimSpace(p))
		}
		if slices.Contains(out, d) {
			return "", fmt.Errorf("%s given twice", d)
		}
		out = append(out, d)
	}
	return strings.Join(out, "; "), nil
}

// hstsValue is the Site.HSTS of a parsed setting: "off" sends none.
func hstsValue(h string) string {
	if h == "off" {
		return ""
	}
	return h
}

var (
	htUser = regexp.MustCompile(`^[A-Za-z0-9._@-]{1,64}$`)
	htHash = []*regexp.Regexp{
		regexp.MustCompile(`^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$`),         // bcrypt
		regexp.MustCompile(`^\$apr1\$[./A-Za-z0-9]{1,8}\$[./A-Za-z0-9]{22}$`), // Apache MD5
		regexp.MustCompile(`^\{SHA\}[A-Za-z0-9+/]{27}=$`),                     // SHA-1, base64
	}
)

// ParseBasicAuth reads htpasswd lines user:hash separated by commas or
// newlines. Only hashes nginx verifies are accepted; a plaintext password
// is refused, since nginx would compare it as crypt(3) output and never
// match. Errors name the user, never the hash.
func ParseBasicAuth(v string) ([]string, error) {
	var out []string
	users := map[string]bool{}
	for _, line := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok || !htUser.MatchString(user):
			return nil, errors.New("each entry must be user:hash with a user of letters, digits and . _ @ -")
		case users[user]:
			return nil, fmt.Errorf("user %s given twice", user)
		case !slices.ContainsFunc(htHash, func(re *regexp.Regexp) bool { return re.MatchString(hash) }):
			return nil, fmt.Errorf("user %s: not a bcrypt ($2y$, $2a$, $2b$), $apr1$ or {SHA} hash; plaintext passwords are refused (make one with htpasswd -nbB)", user)
		}
		users[user] = true
		out = append(out, user+":"+hash)
	}
	if len(out) == 0 {
		return nil, errors.New("no user:hash given")
	}
	return out, nil
}

// ParseAddrs reads a comma-separated list of IPv4/IPv6 addresses and CIDRs
// (no zones), naming the first that is neither. CIDRs are masked.
func ParseAddrs(v string) ([]string, error) {
	var out []string
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if p, err := netip.ParsePrefix(part); err == nil {
			out = append(out, p.Masked().String())
			continue
		}
		a, err := netip.ParseAddr(part)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an IP address or CIDR", part)
		}
		out = append(out, a.String())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
