package nginxconf

import (
	"slices"
	"strings"
)

// The renderer's character checks: the last guard between a value and the
// output (see Config). Each is written as a loop over bytes rather than a
// regular expression because every pass checks every site again, and
// matching a handful of expressions per site was a tenth of a pass at
// 1,000 containers. Each function's comment gives the expression it is
// equal to; tokens_test.go keeps those expressions as the specification
// and checks the loops against them, exhaustively over short strings and
// by fuzzing. A byte of 0x80 or above fails every check, as a non-ASCII
// rune (or invalid UTF-8) fails the ASCII classes of the expressions.

// safeToken is the only shape of value that may reach the output:
// ^[A-Za-z0-9._~/:@%+=,\[\]-]+$. It has no whitespace, quotes, braces,
// semicolons, '$' or '#', so a value can never end a directive, open a
// block or expand a variable.
func safeToken(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; !isAlnum(c) && strings.IndexByte("._~/:@%+=,[]-", c) < 0 {
			return false
		}
	}
	return true
}

// hostToken is stricter: a lower-case DNS name (already punycode),
// ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$.
func hostToken(h string) bool {
	if h == "" || !isLowerAlnum(h[0]) || !isLowerAlnum(h[len(h)-1]) {
		return false
	}
	for i := 1; i < len(h)-1; i++ {
		if c := h[i]; !isLowerAlnum(c) && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

// wildHost is a wildcard server name, "*.example.com" or "example.*":
// ^(\*\.H|H\.\*)$ with H the expression of hostToken.
func wildHost(h string) bool {
	if rest, ok := strings.CutPrefix(h, "*."); ok && hostToken(rest) {
		return true
	}
	rest, ok := strings.CutSuffix(h, ".*")
	return ok && hostToken(rest)
}

// sizeValue is an nginx size: ^[0-9]{1,10}[kmg]?$.
func sizeValue(v string) bool { return numberWithUnit(v, 10, "", "k", "m", "g") }

// timeValue is an nginx duration: ^[0-9]{1,10}(ms|s|m|h)?$.
func timeValue(v string) bool { return numberWithUnit(v, 10, "", "ms", "s", "m", "h") }

// hstsValue is a canonical Strict-Transport-Security value:
// ^max-age=[0-9]{1,10}(; includeSubDomains)?(; preload)?$.
func hstsValue(v string) bool {
	rest, ok := strings.CutPrefix(v, "max-age=")
	if !ok {
		return false
	}
	rest = strings.TrimSuffix(rest, "; preload")
	rest = strings.TrimSuffix(rest, "; includeSubDomains")
	return digits(rest, 10)
}

// numberWithUnit is 1 to maxDigits digits followed by one of units ("" for
// none). The unit is whatever follows the last digit, since no unit
// contains one.
func numberWithUnit(v string, maxDigits int, units ...string) bool {
	i := len(v)
	for i > 0 && !isDigit(v[i-1]) {
		i--
	}
	return digits(v[:i], maxDigits) && slices.Contains(units, v[i:])
}

// digits is 1 to maxLen ASCII digits: ^[0-9]{1,maxLen}$.
func digits(v string, maxLen int) bool {
	if v == "" || len(v) > maxLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		if !isDigit(v[i]) {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool      { return '0' <= c && c <= '9' }
func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || isDigit(c) }
func isAlnum(c byte) bool      { return 'A' <= c && c <= 'Z' || isLowerAlnum(c) }
